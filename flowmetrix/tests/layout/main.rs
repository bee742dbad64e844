//! The layout's rules, checked on the source (README "Layout"): no module imports one that
//! imports it back, no stage imports the stage before it, no source file over 900 lines, and
//! each column name declared once.
//!
//! The imports are read by a small scanner rather than `syn`: it drops comments, doc
//! comments, strings and `#[cfg(test)]` items, then reads `use` trees (nested braces,
//! `self`, `as`, globs) and paths written inline in code, macros included (`syn` leaves macro
//! bodies as unparsed tokens, so it would miss `crate::x` inside `format!` or `select!`).
//! Each path is resolved to the file that defines the module it names; a path to an item
//! resolves to the file of the module the item is reached through, so `use super::X` where
//! `mod.rs` re-exports `X` is an edge to `mod.rs`. Declaring `mod x;` is not an import.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

mod graph;
mod scan;

use graph::{Graph, add_edges, circles, describe_circles, load_tree};
use scan::{Tok, lex, strip_cfg_test};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The collector's import graph: the library from `lib.rs`, the binary from `main.rs`
/// (which reaches the library as `flowmetrix::`).
fn collector_graph() -> Graph {
    let src = manifest_dir().join("src");
    let lib = load_tree(&src, "lib.rs");
    let bin = load_tree(&src, "main.rs");
    let mut graph = Graph::new();
    add_edges(&mut graph, &lib, None);
    add_edges(&mut graph, &bin, Some(("flowmetrix", &lib)));
    graph
}

fn kernel_graph() -> Graph {
    let src = manifest_dir().join("../flowmetrix-ebpf/src");
    let tree = load_tree(&src, "main.rs");
    let mut graph = Graph::new();
    add_edges(&mut graph, &tree, None);
    graph
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut msg = String::new();
    for (prefix, graph) in [
        ("flowmetrix/src", collector_graph()),
        ("flowmetrix-ebpf/src", kernel_graph()),
    ] {
        // A scanner that reads nothing finds no circle: make sure it read the imports.
        let edges: usize = graph.values().map(|e| e.len()).sum();
        assert!(
            graph.len() > 3 && edges >= graph.len(),
            "{prefix}: found only {} files and {edges} imports; is the scanner broken?",
            graph.len()
        );
        msg.push_str(&describe_circles(prefix, &graph, &circles(&graph)));
    }
    assert!(
        msg.is_empty(),
        "import circles (README \"Layout\": each module imports only those below it):\n{msg}\
         Break each circle: move what both sides need into a module below both (or into the \
         lower file), and import it from there rather than through the parent's `pub use`."
    );
}

// ---------------------------------------------------------------------------------------
// Stages

/// The stages in the order data goes through them; a file belongs to the first stage whose
/// entry equals its path or, for entries ending in `/`, starts it.
const STAGES: [(&str, &[&str]); 4] = [
    (
        "source",
        &["source.rs", "capture/", "ring.rs", "watch.rs", "pcap/"],
    ),
    ("decode", &["decoder.rs", "offset.rs", "dns.rs"]),
    ("flows", &["flows/"]),
    ("sink", &["sink/"]),
];

/// Below the stages: the types passed between them, the tables, the counters, and what
/// several stages use — the stateless frame parsing (`decode/`, used by the source for link
/// types, by the decode stage for rows and by the flows stage for replayed frames) and the
/// port → application table. They import no stage.
const SHARED: &[&str] = &[
    "sample.rs",
    "decode/",
    "applications.rs",
    "attribution/",
    "record.rs",
    "clock.rs",
    "schema/",
    "metrics/",
    "queue.rs",
    "throttle.rs",
    "status.rs",
    "kernel_object.rs",
    "kernel_btf.rs",
];

/// Wiring: may import anything.
const WIRING: &[&str] = &["pipeline.rs", "settings.rs", "cli/", "main.rs", "lib.rs"];

/// Imports against the stage order that the tree still has (importer, imported). Each is a
/// defect to fix, not a permission; the test fails when one of these is gone, so the list
/// only shrinks.
const NOT_YET_FIXED: &[(&str, &str)] = &[];

fn matches(entry: &str, file: &str) -> bool {
    if entry.ends_with('/') {
        file.starts_with(entry)
    } else {
        file == entry
    }
}

fn stage_of(file: &str) -> Option<usize> {
    STAGES
        .iter()
        .position(|(_, entries)| entries.iter().any(|e| matches(e, file)))
}

fn is_shared(file: &str) -> bool {
    SHARED.iter().any(|e| matches(e, file))
}

#[test]
fn no_stage_imports_the_stage_before_it() {
    let graph = collector_graph();
    let mut msg = String::new();
    let mut seen = Vec::new();
    for (file, edges) in &graph {
        let unplaced = stage_of(file).is_none()
            && !is_shared(file)
            && !WIRING.iter().any(|e| matches(e, file));
        if unplaced {
            let _ = writeln!(
                msg,
                "  {file} is in no stage, not shared and not wiring: add it to STAGES, SHARED \
                 or WIRING in tests/layout/main.rs (and to README \"Layout\")"
            );
        }
        for (to, names) in edges {
            let Some(to_stage) = stage_of(to) else {
                continue;
            };
            let against = stage_of(file).is_some_and(|from| to_stage < from) || is_shared(file);
            if against && NOT_YET_FIXED.contains(&(file.as_str(), to.as_str())) {
                seen.push((file.as_str(), to.as_str()));
                continue;
            }
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let names = names.join(", ");
            if let Some(from_stage) = stage_of(file)
                && to_stage < from_stage
            {
                let _ = writeln!(
                    msg,
                    "  {file} ({}) imports {to} ({}): {names} — the {} stage must not reach \
                     back; move what it needs into a shared module (sample.rs, record.rs, …) or \
                     pass it in from pipeline.rs",
                    STAGES[from_stage].0, STAGES[to_stage].0, STAGES[from_stage].0
                );
            }
            if is_shared(file) {
                let _ = writeln!(
                    msg,
                    "  {file} (shared) imports {to} ({} stage): {names} — shared modules sit \
                     below every stage; move the item into the shared module or invert the use",
                    STAGES[to_stage].0
                );
            }
        }
    }
    for (file, to) in NOT_YET_FIXED.iter().filter(|known| !seen.contains(known)) {
        let _ = writeln!(
            msg,
            "  {file} no longer imports {to}: good — delete its line from NOT_YET_FIXED in \
             tests/layout/main.rs"
        );
    }
    assert!(
        msg.is_empty(),
        "stage order broken (README \"Layout\"):\n{msg}"
    );
}

// ---------------------------------------------------------------------------------------
// File length

const MAX_LINES: usize = 900;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_over_900_lines() {
    let root = manifest_dir().join("..");
    let mut files = Vec::new();
    let dirs = [
        "flowmetrix/src",
        "flowmetrix-ebpf/src",
        "flowmetrix-common/src",
        "flowmetrix/tests",
        "xtask/src",
    ];
    for dir in dirs {
        let before = files.len();
        rust_files(&root.join(dir), &mut files);
        assert!(files.len() > before, "no .rs files under {dir}");
    }
    let mut long: Vec<(usize, String)> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f).ok()?.lines().count();
            let name = f.strip_prefix(&root).unwrap_or(f).display().to_string();
            (lines > MAX_LINES).then_some((lines, name))
        })
        .collect();
    long.sort();
    let list: Vec<String> = long
        .iter()
        .map(|(n, f)| format!("  {f}: {n} lines"))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (tests beside the code included):\n{}\n\
         Split each by concern (one concern a file; tests in a `tests.rs` beside it).",
        list.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Column names

/// How often `"text"` is written as a string literal in the library's non-test code.
fn string_literal_count(text: &str) -> Vec<(String, usize)> {
    let src = manifest_dir().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let lib = load_tree(&src, "lib.rs");
    let bin = load_tree(&src, "main.rs");
    let mut hits = Vec::new();
    for file in lib.files.keys().chain(bin.files.keys()) {
        let body = fs::read_to_string(src.join(file)).unwrap_or_default();
        let toks = strip_cfg_test(&lex(&body));
        let n = toks
            .iter()
            .filter(|t| matches!(t, Tok::Str(s) if s == text))
            .count();
        if n > 0 {
            hits.push((file.clone(), n));
        }
    }
    hits
}

#[test]
fn each_column_name_is_declared_once() {
    let hits = string_literal_count("src_port");
    let total: usize = hits.iter().map(|(_, n)| n).sum();
    assert_eq!(
        total, 1,
        "\"src_port\" is written {total} times in non-test code ({hits:?}); declare each \
         table's columns once (schema/) and derive the JSON keys, rows, Arrow arrays and DDL \
         from that list"
    );
}
