//! The Kubernetes manifests keep their rules (no root, no tools: plain `cargo test`): the
//! DaemonSet is not privileged and adds exactly BPF, NET_ADMIN and PERFMON; it uses the
//! host's network, mounts the BPF filesystem and the BTF read-only, names the node through
//! the downward API, reads the GreptimeDB settings from the Secret's keys, has resources and
//! probes on /metrics; the config it mounts is accepted by the binary; the RBAC gives list
//! and watch of pods and nothing more; the Service and the ServiceMonitor (a CRD: the schema
//! test cannot check it) point at the metrics port. The schemas themselves are checked in
//! `tests/root_kubernetes.rs`.

mod manifests;

use std::process::Command;

use manifests::{Manifest, all, one};
use serde_yaml_ng::Value;

const NAMESPACE: &str = "flowmetrix";

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every `privileged` key anywhere in `v`.
fn privileged(v: &Value, found: &mut Vec<Value>) {
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("privileged") {
                    found.push(v.clone());
                }
                privileged(v, found);
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| privileged(v, found)),
        _ => {}
    }
}

fn container(ds: &Value) -> &Value {
    let containers = ds["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

#[test]
fn the_daemonset_is_not_privileged_and_adds_exactly_three_capabilities() {
    let all = all();
    for m in &all {
        let mut found = Vec::new();
        privileged(&m.doc, &mut found);
        assert!(
            found.iter().all(|v| v.as_bool() == Some(false)),
            "{}: privileged: {found:?}",
            m.file.display()
        );
    }
    let ds = one(&all, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["dnsPolicy"].as_str(), Some("ClusterFirstWithHostNet"));
    assert_eq!(pod["hostPID"].as_bool(), None);
    let sc = &container(&ds)["securityContext"];
    assert_eq!(sc["privileged"].as_bool(), Some(false));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        ["BPF", "NET_ADMIN", "PERFMON"]
    );
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    // The pod's own security context adds nothing.
    assert!(pod["securityContext"].is_null());
}

#[test]
fn the_bpf_filesystem_and_btf_are_mounted_read_only_from_the_host() {
    let ds = one(&all(), "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let volume = |name: &str| {
        pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
            .clone()
    };
    let mounts = container(&ds)["volumeMounts"]
        .as_sequence()
        .unwrap()
        .clone();
    let mount = |path: &str| {
        mounts
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"))
            .clone()
    };
    for path in ["/sys/fs/bpf", "/sys/kernel/btf"] {
        let m = mount(path);
        assert_eq!(m["readOnly"].as_bool(), Some(true), "{path}");
        let v = volume(m["name"].as_str().unwrap());
        assert_eq!(v["hostPath"]["path"].as_str(), Some(path));
        assert_eq!(v["hostPath"]["type"].as_str(), Some("Directory"));
    }
    // The host's cgroup tree, read-only, where --cgroup-root points.
    let cgroup = mount("/host/sys/fs/cgroup");
    assert_eq!(cgroup["readOnly"].as_bool(), Some(true));
    let v = volume(cgroup["name"].as_str().unwrap());
    assert_eq!(v["hostPath"]["path"].as_str(), Some("/sys/fs/cgroup"));
    let args = container(&ds)["args"].as_sequence().unwrap().clone();
    assert!(
        args.iter()
            .any(|a| a.as_str() == Some("--cgroup-root=/host/sys/fs/cgroup")),
        "{args:?}"
    );
    // The config, read-only; the spool, the one writable place (the root filesystem is
    // read-only), on the host so that it outlives the pod.
    let config = mount("/etc/flowmetrix");
    assert_eq!(config["readOnly"].as_bool(), Some(true));
    assert_eq!(
        volume(config["name"].as_str().unwrap())["configMap"]["name"].as_str(),
        Some("flowmetrix")
    );
    let spool = mount("/var/lib/flowmetrix");
    assert!(spool["readOnly"].is_null());
    let v = volume(spool["name"].as_str().unwrap());
    assert_eq!(v["hostPath"]["path"].as_str(), Some("/var/lib/flowmetrix"));
}

fn env<'a>(c: &'a Value, name: &str) -> &'a Value {
    c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no env {name}"))
}

#[test]
fn the_node_name_comes_from_the_downward_api_and_greptimedb_from_the_secret() {
    let all = all();
    let ds = one(&all, "DaemonSet");
    let c = container(&ds);
    assert_eq!(
        env(c, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );
    let args = strings(&c["args"]);
    assert!(args.contains(&"--host-name=$(NODE_NAME)"), "{args:?}");
    assert!(
        args.contains(&"--config=/etc/flowmetrix/flowmetrix.toml"),
        "{args:?}"
    );
    let secret = one(&all, "Secret");
    let keys = secret["stringData"].as_mapping().unwrap();
    for (var, key, optional) in [
        ("FLOWMETRIX_GREPTIME_ENDPOINT", "endpoint", None),
        ("FLOWMETRIX_GREPTIME_USERNAME", "username", Some(true)),
        ("FLOWMETRIX_GREPTIME_PASSWORD", "password", Some(true)),
    ] {
        let r = &env(c, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], secret["metadata"]["name"], "{var}");
        assert_eq!(r["key"].as_str(), Some(key), "{var}");
        assert_eq!(r["optional"].as_bool(), optional, "{var}");
        assert!(keys.contains_key(key), "the Secret has no {key}");
    }
    assert_eq!(
        c["image"].as_str(),
        Some(format!("flowmetrix:{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    assert_eq!(c["imagePullPolicy"].as_str(), Some("IfNotPresent"));
}

/// `100m`, `1`, `250Mi`, `1Gi` in the smallest unit (millicores, bytes).
fn quantity(v: &Value) -> u64 {
    let s = v.as_str().map(str::to_owned).unwrap_or_else(|| {
        v.as_u64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| panic!("{v:?}"))
    });
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().unwrap();
    match unit {
        "m" => n,
        "" => n * 1000,
        "Ki" => n << 10,
        "Mi" => n << 20,
        "Gi" => n << 30,
        _ => panic!("unit of {s}"),
    }
}

#[test]
fn resources_are_requested_and_limited_and_probes_read_metrics() {
    let ds = one(&all(), "DaemonSet");
    let c = container(&ds);
    let r = &c["resources"];
    for what in ["cpu", "memory"] {
        let request = quantity(&r["requests"][what]);
        let limit = quantity(&r["limits"][what]);
        assert!(
            request > 0 && request <= limit,
            "{what}: {request} > {limit}"
        );
    }
    let ports = c["ports"].as_sequence().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"].as_str(), Some("metrics"));
    let port = ports[0]["containerPort"].as_u64().unwrap();
    for probe in ["readinessProbe", "livenessProbe"] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some("/metrics"), "{probe}");
        assert_eq!(get["port"].as_str(), Some("metrics"), "{probe}");
    }
    // The config serves /metrics on that port.
    let config = config();
    let addr = config["metrics-addr"].as_str().unwrap();
    assert_eq!(addr, format!("0.0.0.0:{port}"));
}

/// The config file the ConfigMap holds.
fn config() -> toml::Table {
    let cm = one(&all(), "ConfigMap");
    cm["data"]["flowmetrix.toml"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_configmap_is_a_config_the_binary_accepts() {
    let cm = one(&all(), "ConfigMap");
    let text = cm["data"]["flowmetrix.toml"].as_str().unwrap();
    let file = std::env::temp_dir().join(format!("fmx-k8s-{}.toml", std::process::id()));
    std::fs::write(&file, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowmetrix"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLOWMETRIX_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("--config")
        .arg(&file)
        .args(["--host-name=node-1", "--print-config"])
        .env("FLOWMETRIX_GREPTIME_ENDPOINT", "db.example:4001")
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "kube-metadata = \"api\"",
        "direction = \"both\"",
        "metrics-addr = \"0.0.0.0:9464\"",
        "greptime-endpoint = [\"db.example:4001\"]",
    ] {
        assert!(stdout.contains(line), "{line} not in:\n{stdout}");
    }
    // The password is never in the file.
    assert!(!text.contains("password"));
}

#[test]
fn rbac_gives_list_and_watch_of_pods_to_the_collector_only() {
    let all = all();
    let sa = one(&all, "ServiceAccount");
    let ds = one(&all, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], sa["metadata"]["name"]);
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(true));
    let roles: Vec<&Manifest> = all.iter().filter(|m| m.kind() == "ClusterRole").collect();
    let bindings: Vec<&Manifest> = all
        .iter()
        .filter(|m| m.kind() == "ClusterRoleBinding")
        .collect();
    assert_eq!(roles.len(), 2, "pods (api) and nodes/proxy (kubelet)");
    for role in &roles {
        let rules = role.doc["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 1, "{}", role.name());
        let rule = &rules[0];
        assert_eq!(strings(&rule["apiGroups"]), [""]);
        let (resources, verbs) = (strings(&rule["resources"]), strings(&rule["verbs"]));
        match role.name() {
            "flowmetrix-pods" => {
                assert_eq!((resources, verbs), (vec!["pods"], vec!["list", "watch"]));
                // Applied with the directory.
                assert_eq!(role.file.parent().unwrap(), manifests::dir());
            }
            "flowmetrix-kubelet" => {
                assert_eq!((resources, verbs), (vec!["nodes/proxy"], vec!["get"]));
                // Broad: only where --kube-metadata kubelet is chosen, applied by hand.
                assert!(role.file.ends_with("kubelet/rbac.yaml"));
            }
            other => panic!("unexpected ClusterRole {other}"),
        }
        let binding = bindings
            .iter()
            .find(|b| b.doc["roleRef"]["name"].as_str() == Some(role.name()))
            .unwrap_or_else(|| panic!("{} is bound to nobody", role.name()));
        let subjects = binding.doc["subjects"].as_sequence().unwrap();
        assert_eq!(subjects.len(), 1);
        assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
        assert_eq!(subjects[0]["name"], sa["metadata"]["name"]);
        assert_eq!(subjects[0]["namespace"].as_str(), Some(NAMESPACE));
    }
}

#[test]
fn every_namespaced_resource_is_in_the_collectors_namespace() {
    let all = all();
    let ns = one(&all, "Namespace");
    assert_eq!(ns["metadata"]["name"].as_str(), Some(NAMESPACE));
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str(),
        Some("privileged")
    );
    for m in &all {
        let cluster_wide = matches!(m.kind(), "Namespace" | "ClusterRole" | "ClusterRoleBinding");
        let namespace = m.doc["metadata"]["namespace"].as_str();
        if cluster_wide {
            assert_eq!(namespace, None, "{} {}", m.kind(), m.name());
        } else {
            assert_eq!(namespace, Some(NAMESPACE), "{} {}", m.kind(), m.name());
        }
    }
}

/// The ServiceMonitor is a custom resource: no Kubernetes schema knows it, so its fields are
/// checked here, against the Prometheus Operator's `monitoring.coreos.com/v1` API.
#[test]
fn the_service_and_the_servicemonitor_reach_the_metrics_port() {
    let all = all();
    let ds = one(&all, "DaemonSet");
    let pod_labels = ds["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap()
        .clone();
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"].as_mapping(),
        Some(&pod_labels)
    );
    let svc = one(&all, "Service");
    let selector = svc["spec"]["selector"].as_mapping().unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let ports = svc["spec"]["ports"].as_sequence().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["name"].as_str(), Some("metrics"));
    assert_eq!(ports[0]["targetPort"].as_str(), Some("metrics"));
    assert_eq!(ports[0]["port"].as_u64(), Some(9464));

    let sm = one(&all, "ServiceMonitor");
    assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    let keys = |v: &Value| -> Vec<String> {
        v.as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        keys(&sm),
        ["apiVersion", "kind", "metadata", "spec"].map(String::from)
    );
    let spec = &sm["spec"];
    // Only fields of the ServiceMonitor's spec (v1), each of the type the CRD declares.
    for k in keys(spec) {
        assert!(
            ["selector", "namespaceSelector", "endpoints", "jobLabel"].contains(&k.as_str()),
            "spec.{k} is not a ServiceMonitor field used here"
        );
    }
    let svc_labels = svc["metadata"]["labels"].as_mapping().unwrap();
    let wanted = spec["selector"]["matchLabels"].as_mapping().unwrap();
    assert!(!wanted.is_empty());
    assert!(wanted.iter().all(|(k, v)| svc_labels.get(k) == Some(v)));
    assert_eq!(
        strings(&spec["namespaceSelector"]["matchNames"]),
        [svc["metadata"]["namespace"].as_str().unwrap()]
    );
    let endpoints = spec["endpoints"].as_sequence().unwrap();
    assert_eq!(endpoints.len(), 1);
    let e = &endpoints[0];
    for k in keys(e) {
        assert!(
            ["port", "path", "interval", "scrapeTimeout", "relabelings"].contains(&k.as_str()),
            "endpoints[0].{k} is not an Endpoint field used here"
        );
    }
    assert_eq!(e["port"], ports[0]["name"]);
    assert_eq!(e["path"].as_str(), Some("/metrics"));
    // Durations as the CRD's pattern has them: ^(0|(([0-9]+)y)?(([0-9]+)w)?…(([0-9]+)ms)?)$.
    let duration = |v: &Value| {
        let s = v.as_str().unwrap();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap();
        let n: u64 = s[..split].parse().unwrap();
        let ms = match &s[split..] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            unit => panic!("{s}: unit {unit}"),
        };
        n * ms
    };
    assert!(duration(&e["scrapeTimeout"]) <= duration(&e["interval"]));
    for r in e["relabelings"].as_sequence().unwrap() {
        for k in keys(r) {
            assert!(
                [
                    "sourceLabels",
                    "targetLabel",
                    "action",
                    "regex",
                    "replacement"
                ]
                .contains(&k.as_str()),
                "relabelings.{k}"
            );
        }
        assert!(r["sourceLabels"].as_sequence().is_some());
    }
}

/// What the DaemonSet must keep, as a list of what is wrong (empty: nothing): checked on the
/// manifest, and on copies with one thing broken, so that each rule is seen to bite.
fn broken_rules(ds: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            wrong.push(what.to_owned());
        }
    };
    let pod = &ds["spec"]["template"]["spec"];
    check(
        ds["spec"]["selector"]["matchLabels"].as_mapping().is_some()
            && ds["spec"]["selector"]["matchLabels"]
                == ds["spec"]["template"]["metadata"]["labels"],
        "selector",
    );
    let mut found = Vec::new();
    privileged(ds, &mut found);
    check(
        found.iter().all(|v| v.as_bool() == Some(false)),
        "privileged",
    );
    check(pod["hostNetwork"].as_bool() == Some(true), "hostNetwork");
    let Some([c]) = pod["containers"].as_sequence().map(Vec::as_slice) else {
        return vec!["one container".into()];
    };
    let version = format!("flowmetrix:{}", env!("CARGO_PKG_VERSION"));
    check(c["image"].as_str() == Some(&version), "image");
    check(
        c["imagePullPolicy"].as_str() == Some("IfNotPresent"),
        "imagePullPolicy",
    );
    let caps = &c["securityContext"]["capabilities"];
    check(strings(&caps["drop"]) == ["ALL"], "capabilities.drop");
    check(
        strings(&caps["add"]) == ["BPF", "NET_ADMIN", "PERFMON"],
        "capabilities.add",
    );
    let mounts = c["volumeMounts"].as_sequence().cloned().unwrap_or_default();
    for path in ["/sys/fs/bpf", "/sys/kernel/btf"] {
        check(
            mounts.iter().any(|m| {
                m["mountPath"].as_str() == Some(path) && m["readOnly"].as_bool() == Some(true)
            }),
            path,
        );
    }
    let node = c["env"].as_sequence().and_then(|e| {
        e.iter()
            .find(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("spec.nodeName"))
    });
    check(
        node.is_some_and(|e| {
            let arg = format!("--host-name=$({})", e["name"].as_str().unwrap_or_default());
            strings(&c["args"]).contains(&arg.as_str())
        }),
        "--host-name from spec.nodeName",
    );
    for what in ["cpu", "memory"] {
        for kind in ["requests", "limits"] {
            check(
                !c["resources"][kind][what].is_null(),
                &format!("{kind}.{what}"),
            );
        }
    }
    wrong
}

#[test]
fn each_rule_of_the_daemonset_fails_when_broken() {
    let ds = one(&all(), "DaemonSet");
    assert_eq!(broken_rules(&ds), Vec::<String>::new());
    type Change = fn(&mut Value);
    let cases: [(&str, Change); 10] = [
        ("selector", |d| {
            d["spec"].as_mapping_mut().unwrap().remove("selector");
        }),
        ("image", |d| {
            d["spec"]["template"]["spec"]["containers"][0]
                .as_mapping_mut()
                .unwrap()
                .remove("image");
        }),
        ("privileged", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
                Value::from(true);
        }),
        ("hostNetwork", |d| {
            d["spec"]["template"]["spec"]["hostNetwork"] = Value::from(false);
        }),
        ("capabilities.add", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
                ["add"]
                .as_sequence_mut()
                .unwrap()
                .push("SYS_ADMIN".into());
        }),
        ("capabilities.drop", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]
                .as_mapping_mut()
                .unwrap()
                .remove("drop");
        }),
        ("/sys/fs/bpf", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                .as_sequence_mut()
                .unwrap()
                .retain(|m| m["mountPath"].as_str() != Some("/sys/fs/bpf"));
        }),
        ("/sys/kernel/btf", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                .as_sequence_mut()
                .unwrap()
                .iter_mut()
                .for_each(|m| {
                    if m["mountPath"].as_str() == Some("/sys/kernel/btf") {
                        m["readOnly"] = Value::from(false);
                    }
                });
        }),
        ("--host-name from spec.nodeName", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] =
                Value::from("metadata.name");
        }),
        ("limits.memory", |d| {
            d["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                .as_mapping_mut()
                .unwrap()
                .remove("memory");
        }),
    ];
    for (rule, change) in cases {
        let mut copy = ds.clone();
        change(&mut copy);
        assert_eq!(broken_rules(&copy), [rule], "{rule}");
    }
    let mut copy = ds.clone();
    copy["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Always".into();
    assert_eq!(broken_rules(&copy), ["imagePullPolicy"]);
}
