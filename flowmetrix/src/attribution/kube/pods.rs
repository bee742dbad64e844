//! The few fields of a pod list, a pod and a watch event that the index needs: each pod's
//! UID, name and namespace (and a static pod's UID on its node), and the list's resource
//! version to watch from. Everything else in the JSON is skipped unread.

use std::collections::HashMap;

use serde::Deserialize;

use super::index::PodMeta;

/// A static pod's mirror in the API server carries the UID the kubelet gave the pod (the
/// one its cgroup is named for) in this annotation; its own `uid` is another.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// `PodList`, from the API server or the kubelet's `/pods`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct PodList {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub items: Vec<Pod>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct Pod {
    #[serde(default)]
    pub metadata: Meta,
    /// Set in the `Status` an `ERROR` event carries instead of a pod.
    pub message: Option<String>,
}

/// The parts of `ObjectMeta` and `ListMeta` read here.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Meta {
    pub uid: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub resource_version: Option<String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

/// One line of a watch: `{"type":"ADDED","object":{…}}`.
#[derive(Debug, Deserialize)]
pub(super) struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub object: Pod,
}

/// Pods by UID, as the index keeps them.
pub(super) type Pods = HashMap<Box<str>, PodMeta>;

impl Pod {
    /// The UIDs this pod's cgroups may be named for, with its name and namespace; none
    /// when the pod lacks one of them.
    fn entries(&self) -> impl Iterator<Item = (Box<str>, PodMeta)> + '_ {
        let m = &self.metadata;
        let meta = match (&m.name, &m.namespace) {
            (Some(name), Some(namespace)) => Some(PodMeta {
                name: name.as_str().into(),
                namespace: namespace.as_str().into(),
            }),
            _ => None,
        };
        [
            m.uid.as_deref(),
            m.annotations.get(MIRROR_ANNOTATION).map(String::as_str),
        ]
        .into_iter()
        .flatten()
        .filter(|uid| !uid.is_empty())
        .filter_map(move |uid| meta.clone().map(|meta| (Box::from(uid), meta)))
    }

    /// Adds this pod to `pods`.
    pub fn add_to(&self, pods: &mut Pods) {
        pods.extend(self.entries());
    }

    /// Takes this pod out of `pods`.
    pub fn remove_from(&self, pods: &mut Pods) {
        for (uid, _) in self.entries() {
            pods.remove(&uid);
        }
    }
}

impl PodList {
    /// The index of this list.
    pub fn pods(&self) -> Pods {
        let mut pods = Pods::with_capacity(self.items.len());
        for pod in &self.items {
            pod.add_to(&mut pods);
        }
        pods
    }
}

/// What a watch event does to the index.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// A pod added, changed or removed: the index changed.
    Pods,
    /// A bookmark, or an event of a kind not known here: only the resource version moved.
    Nothing,
    /// The watch cannot go on (`ERROR`, e.g. 410 Gone: the version is too old): list again.
    Relist(String),
}

impl WatchEvent {
    /// Applies the event to `pods`; `version` becomes the event's resource version.
    pub fn apply(&self, pods: &mut Pods, version: &mut Option<String>) -> Change {
        let m = &self.object.metadata;
        if self.kind == "ERROR" {
            return Change::Relist(format!(
                "the watch ended with an error: {}",
                self.object.message.as_deref().unwrap_or("no reason given")
            ));
        }
        if let Some(v) = &m.resource_version {
            *version = Some(v.clone());
        }
        match self.kind.as_str() {
            "ADDED" | "MODIFIED" => {
                self.object.add_to(pods);
                Change::Pods
            }
            "DELETED" => {
                self.object.remove_from(pods);
                Change::Pods
            }
            _ => Change::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, namespace: &str) -> PodMeta {
        PodMeta {
            name: name.into(),
            namespace: namespace.into(),
        }
    }

    #[test]
    fn a_list_gives_each_pod_by_uid_and_a_static_pod_by_its_node_uid_too() {
        let list: PodList = serde_json::from_str(
            r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"42"},
                "items":[
                  {"metadata":{"name":"checkout-7d9f","namespace":"shop","uid":"u-1",
                               "labels":{"app":"checkout"}},
                   "spec":{"nodeName":"n1","containers":[{"name":"c","image":"x"}]},
                   "status":{"phase":"Running"}},
                  {"metadata":{"name":"etcd-n1","namespace":"kube-system","uid":"u-2",
                               "annotations":{"kubernetes.io/config.mirror":"hash-2"}}},
                  {"metadata":{"name":"no-uid","namespace":"x"}},
                  {"metadata":{"uid":"u-4","namespace":"x"}}
                ]}"#,
        )
        .unwrap();
        assert_eq!(list.metadata.resource_version.as_deref(), Some("42"));
        let pods = list.pods();
        assert_eq!(pods.len(), 3);
        assert_eq!(pods["u-1"], meta("checkout-7d9f", "shop"));
        assert_eq!(pods["u-2"], meta("etcd-n1", "kube-system"));
        assert_eq!(pods["hash-2"], meta("etcd-n1", "kube-system"));
    }

    #[test]
    fn watch_events_add_change_remove_and_move_the_version() {
        let mut pods = Pods::new();
        let mut version = Some("1".to_owned());
        let event = |s: &str| serde_json::from_str::<WatchEvent>(s).unwrap();
        let added = event(
            r#"{"type":"ADDED","object":{"metadata":{"name":"a","namespace":"n","uid":"u","resourceVersion":"2"}}}"#,
        );
        assert_eq!(added.apply(&mut pods, &mut version), Change::Pods);
        assert_eq!(pods["u"], meta("a", "n"));
        assert_eq!(version.as_deref(), Some("2"));
        let bookmark =
            event(r#"{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}"#);
        assert_eq!(bookmark.apply(&mut pods, &mut version), Change::Nothing);
        assert_eq!(version.as_deref(), Some("7"));
        let deleted = event(
            r#"{"type":"DELETED","object":{"metadata":{"name":"a","namespace":"n","uid":"u","resourceVersion":"8"}}}"#,
        );
        assert_eq!(deleted.apply(&mut pods, &mut version), Change::Pods);
        assert!(pods.is_empty());
        let gone = event(
            r#"{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired","message":"too old resource version: 1 (8)"}}"#,
        );
        assert_eq!(
            gone.apply(&mut pods, &mut version),
            Change::Relist("the watch ended with an error: too old resource version: 1 (8)".into())
        );
        assert_eq!(version.as_deref(), Some("8"));
    }
}
