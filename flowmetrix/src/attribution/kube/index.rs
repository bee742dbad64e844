//! The index the stages read: pods by UID, replaced whole by the task that keeps it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A pod's name and namespace, as Kubernetes names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodMeta {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

/// Pods by UID (the UID as the kubelet writes it in cgroup paths, with dashes), shared
/// between the task that refreshes it and the stages that read it.
#[derive(Clone, Debug, Default)]
pub struct PodIndex(Arc<RwLock<HashMap<Box<str>, PodMeta>>>);

impl PodIndex {
    /// The pod with this UID, if the index knows it. Never waits for a refresh.
    pub fn lookup(&self, pod_uid: &str) -> Option<PodMeta> {
        let pods = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        pods.get(pod_uid).cloned()
    }

    /// Replaces the whole index with a fresh pod list.
    pub fn replace(&self, pods: HashMap<Box<str>, PodMeta>) {
        let mut current = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *current = pods;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_index_answers_lookups_and_misses_are_none() {
        let index = PodIndex::default();
        assert_eq!(index.lookup("u1"), None);
        let meta = PodMeta {
            name: "checkout-7d9f".into(),
            namespace: "shop".into(),
        };
        index.replace(HashMap::from([("u1".into(), meta.clone())]));
        assert_eq!(index.lookup("u1"), Some(meta));
        assert_eq!(index.lookup("u2"), None);
    }
}
