//! The manifests under `deploy/kubernetes/`, read as YAML documents, for the structural
//! test (`tests/kubernetes/`) and the schema test (`tests/root_kubernetes.rs`).
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every `.yaml` file under `deploy/kubernetes/`, subdirectories included, sorted.
pub fn files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dir(), &mut out);
    out.sort();
    assert!(out.len() >= 8, "only {out:?} under deploy/kubernetes");
    out
}

/// One resource: the file it is in, and its document.
pub struct Manifest {
    pub file: PathBuf,
    pub doc: Value,
}

impl Manifest {
    pub fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every document of every file.
pub fn all() -> Vec<Manifest> {
    let mut out = Vec::new();
    for file in files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !doc.is_null() {
                out.push(Manifest {
                    file: file.clone(),
                    doc,
                });
            }
        }
    }
    out
}

/// The one resource of `kind`.
pub fn one(all: &[Manifest], kind: &str) -> Value {
    let found: Vec<_> = all.iter().filter(|m| m.kind() == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0].doc.clone()
}
