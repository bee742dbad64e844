//! The manifests under `deploy/kubernetes/` against the official schemas of one Kubernetes
//! version, offline: PyPI's `kubernetes-validate` ships them, and `cargo xtask setup`
//! installs it into `target/tools/` (a venv), which a fresh checkout's plain `cargo test`
//! cannot rely on; so this runs in the root tier, after setup. Every built-in resource
//! passes `--strict` (no field the schema lacks); a copy with a required field removed, or
//! a field misspelt, fails. The ServiceMonitor is a custom resource whose schema only its
//! CRD carries: the tool can say no more than that it does not know it, so its fields are
//! checked by `tests/kubernetes/`, as is what the schema leaves optional and the API server
//! requires (a container's image).

#[path = "kubernetes/manifests.rs"]
mod manifests;

use std::{path::PathBuf, process::Command};

use serde_yaml_ng::Value;

/// The Kubernetes version whose schemas the manifests are checked against.
const KUBERNETES: &str = "1.37";

fn validator() -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools/kubernetes-validate/bin/kubernetes-validate");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` (it installs PyPI's kubernetes-validate there)",
        path.display()
    );
    path
}

/// Runs the validator on `files`: whether it passed, and what it said.
fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(validator())
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn is_custom(file: &std::path::Path) -> bool {
    file.ends_with("prometheus-operator/servicemonitor.yaml")
}

#[test]
fn every_built_in_resource_passes_the_strict_schema_check() {
    let files: Vec<PathBuf> = manifests::files()
        .into_iter()
        .filter(|f| !is_custom(f))
        .collect();
    let (ok, said) = validate(&files);
    assert!(ok, "{said}");
    // One line per resource, each a pass.
    let resources = manifests::all()
        .iter()
        .filter(|m| !is_custom(&m.file))
        .count();
    assert_eq!(said.matches("passed").count(), resources, "{said}");
}

#[test]
fn the_servicemonitor_is_not_known_to_the_built_in_schemas() {
    let file = manifests::files()
        .into_iter()
        .find(|f| is_custom(f))
        .unwrap();
    let (ok, said) = validate(&[file]);
    // All the tool can say of a custom resource: it has no schema for it (a warning, not a
    // failure). Its fields are checked by tests/kubernetes/ instead.
    assert!(ok, "{said}");
    assert!(
        said.contains("Couldn't find schema for kind ServiceMonitor"),
        "{said}"
    );
    assert!(!said.contains("passed"), "{said}");
}

/// Writes `doc` changed by `change` to a temporary file and validates it.
fn validate_changed(doc: &Value, change: impl FnOnce(&mut Value)) -> (bool, String) {
    let mut doc = doc.clone();
    change(&mut doc);
    let file = std::env::temp_dir().join(format!(
        "fmx-k8s-{}-{}.yaml",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let result = validate(std::slice::from_ref(&file));
    std::fs::remove_file(&file).unwrap();
    result
}

fn rand_suffix() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

fn remove(v: &mut Value, path: &[&str]) {
    let (last, parents) = path.split_last().unwrap();
    let mut at = v;
    for p in parents {
        at = match p.parse::<usize>() {
            Ok(i) => &mut at[i],
            Err(_) => &mut at[*p],
        };
    }
    let removed = at.as_mapping_mut().unwrap().remove(*last);
    assert!(removed.is_some(), "{path:?} was not there");
}

#[test]
fn a_required_field_removed_or_a_field_misspelt_fails_the_check() {
    let all = manifests::all();
    let ds = manifests::one(&all, "DaemonSet");
    let (ok, said) = validate_changed(&ds, |_| {});
    assert!(ok, "the unchanged copy must pass: {said}");
    let container = ["spec", "template", "spec", "containers", "0"];
    for path in [
        vec!["spec", "selector"],
        vec!["spec", "template", "spec", "containers"],
        [&container[..], &["name"]].concat(),
        [&container[..], &["env", "0", "name"]].concat(),
        [&container[..], &["ports", "0", "containerPort"]].concat(),
        vec![
            "spec", "template", "spec", "volumes", "1", "hostPath", "path",
        ],
    ] {
        let (ok, said) = validate_changed(&ds, |d| remove(d, &path));
        assert!(!ok, "without {path:?} it still passed: {said}");
    }
    // The schema does not require a container's image (the API server's own checks do):
    // its removal passes here, and fails the structural test (tests/kubernetes/).
    let (ok, said) = validate_changed(&ds, |d| remove(d, &[&container[..], &["image"]].concat()));
    assert!(ok, "{said}");
    // --strict: a field the schema lacks.
    let (ok, said) = validate_changed(&ds, |d| {
        let c = &mut d["spec"]["template"]["spec"]["containers"][0];
        let caps = c["securityContext"]["capabilities"].clone();
        c["securityContext"]
            .as_mapping_mut()
            .unwrap()
            .insert("capabilites".into(), caps);
    });
    assert!(!ok, "a misspelt field passed: {said}");
    // A wrong type.
    let (ok, said) = validate_changed(&ds, |d| {
        d["spec"]["template"]["spec"]["hostNetwork"] = Value::from("host");
    });
    assert!(!ok, "hostNetwork: \"host\" passed: {said}");
    let svc = manifests::one(&all, "Service");
    let (ok, said) = validate_changed(&svc, |d| remove(d, &["spec", "ports", "0", "port"]));
    assert!(!ok, "a Service port without a number passed: {said}");
    let binding = all
        .iter()
        .find(|m| m.kind() == "ClusterRoleBinding")
        .unwrap()
        .doc
        .clone();
    let (ok, said) = validate_changed(&binding, |d| remove(d, &["roleRef"]));
    assert!(!ok, "a binding without roleRef passed: {said}");
}
