//! The module tree and the import graph: each path a file writes, resolved to the file that
//! defines the module it names; and the circles in that graph.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    fs,
    path::Path,
};

use crate::scan::{Ref, Scan, scan};

// ---------------------------------------------------------------------------------------
// The module tree and the import graph

/// One crate's modules: module path → file (relative to the crate's `src`); inline
/// modules map to the file they are written in.
#[derive(Debug, Default)]
pub struct Tree {
    pub modules: BTreeMap<Vec<String>, String>,
    /// For each file: its module path and what it declares and refers to.
    pub files: BTreeMap<String, (Vec<String>, Scan)>,
}

/// Reads the module tree from `root` (e.g. `lib.rs`), following `mod x;` declarations that
/// are not under `#[cfg(test)]`.
pub fn load_tree(src_dir: &Path, root: &str) -> Tree {
    let mut tree = Tree::default();
    let mut todo = vec![(root.to_string(), Vec::<String>::new())];
    while let Some((file, module)) = todo.pop() {
        let text = fs::read_to_string(src_dir.join(&file))
            .unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let found = scan(&text);
        tree.modules.insert(module.clone(), file.clone());
        let path = Path::new(&file);
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let child_dir = if matches!(stem, "mod" | "lib" | "main") {
            dir
        } else {
            dir.join(stem)
        };
        for inline in &found.inline {
            let mut m = module.clone();
            m.extend(inline.iter().cloned());
            tree.modules.insert(m, file.clone());
        }
        for decl in &found.mods {
            let mut m = module.clone();
            m.extend(decl.iter().cloned());
            let mut d = child_dir.clone();
            for part in &decl[..decl.len() - 1] {
                d.push(part);
            }
            let name = &decl[decl.len() - 1];
            let flat = d.join(format!("{name}.rs"));
            let nested = d.join(name).join("mod.rs");
            let child = if src_dir.join(&flat).exists() {
                flat
            } else {
                nested
            };
            let child = child.to_string_lossy().replace('\\', "/");
            assert!(
                src_dir.join(&child).exists(),
                "{file} declares `mod {name};` but {child} is missing"
            );
            todo.push((child, m));
        }
        tree.files.insert(file, (module, found));
    }
    tree
}

/// An edge: the file a path leads to and the name it takes there.
pub fn resolve(
    tree: &Tree,
    here: &[String],
    r: &Ref,
    aliases: &HashMap<(Vec<String>, String), Vec<String>>,
    extern_self: Option<(&str, &Tree)>,
) -> Option<(String, String)> {
    let first = r.segs.first()?;
    let (target, base, rest): (&Tree, Vec<String>, &[String]) = match first.as_str() {
        "crate" => (tree, vec![], &r.segs[1..]),
        "self" => (tree, here.to_vec(), &r.segs[1..]),
        "super" => {
            let mut base = here.to_vec();
            let mut k = 0;
            while r.segs.get(k).map(String::as_str) == Some("super") {
                base.pop()?;
                k += 1;
            }
            (tree, base, &r.segs[k..])
        }
        name if extern_self.is_some_and(|(n, _)| n == name) => {
            (extern_self.map(|(_, t)| t)?, vec![], &r.segs[1..])
        }
        name => {
            let mut child = here.to_vec();
            child.push(name.to_string());
            if tree.modules.contains_key(&child) {
                (tree, here.to_vec(), &r.segs[..])
            } else if let Some(to) = aliases.get(&(here.to_vec(), name.to_string())) {
                (tree, to.clone(), &r.segs[1..])
            } else {
                return None; // another crate, or a local item
            }
        }
    };
    let mut abs = base;
    abs.extend(rest.iter().cloned());
    let mut n = abs.len();
    while !target.modules.contains_key(&abs[..n]) {
        n -= 1;
    }
    let file = target.modules[&abs[..n]].clone();
    let name = match abs.get(n) {
        Some(item) => item.clone(),
        None if r.glob => "*".into(),
        None => abs.last().cloned().unwrap_or_else(|| "crate".into()),
    };
    Some((file, name))
}

/// file → file → the names taken.
pub type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

pub fn add_edges(graph: &mut Graph, tree: &Tree, extern_self: Option<(&str, &Tree)>) {
    for (file, (module, found)) in &tree.files {
        let node = graph.entry(file.clone()).or_default();
        let here = |r: &Ref| {
            let mut m = module.clone();
            m.extend(r.scope.iter().cloned());
            m
        };
        // Names a `use` binds to a module, so `greptime::writer::X` after
        // `use crate::sink::greptime;` is read through them.
        let mut aliases = HashMap::new();
        for r in found.refs.iter().filter(|r| r.binds.is_some()) {
            let h = here(r);
            if resolve(tree, &h, r, &HashMap::new(), None).is_none() {
                continue;
            }
            let abs = absolute(&h, &r.segs);
            if let (Some(abs), Some(name)) = (abs, &r.binds)
                && tree.modules.contains_key(&abs)
            {
                aliases.insert((h, name.clone()), abs);
            }
        }
        for r in &found.refs {
            let Some((to, name)) = resolve(tree, &here(r), r, &aliases, extern_self) else {
                continue;
            };
            if &to != file {
                node.entry(to).or_default().insert(name);
            }
        }
    }
}

/// The absolute module path a `crate::`/`super::`/`self::`/child path names, if it is one.
pub fn absolute(here: &[String], segs: &[String]) -> Option<Vec<String>> {
    let mut base = here.to_vec();
    let mut k = 0;
    match segs.first()?.as_str() {
        "crate" => {
            base.clear();
            k = 1;
        }
        "self" => k = 1,
        "super" => {
            while segs.get(k).map(String::as_str) == Some("super") {
                base.pop()?;
                k += 1;
            }
        }
        _ => {}
    }
    base.extend(segs[k..].iter().cloned());
    Some(base)
}

/// Strongly connected components with more than one file (Tarjan).
pub fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// Says each circle with one edge per file that stays inside it.
pub fn describe_circles(prefix: &str, graph: &Graph, found: &[Vec<String>]) -> String {
    let mut msg = String::new();
    for comp in found {
        let _ = writeln!(msg, "a circle of {} files under {prefix}:", comp.len());
        for file in comp {
            if let Some((to, names)) = graph[file].iter().find(|(to, _)| comp.contains(to)) {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                let _ = writeln!(msg, "  {file} -> {to}: {}", names.join(", "));
            }
        }
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_to_files_and_finds_circles() {
        let v = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut tree = Tree::default();
        for (m, f) in [
            (v(&[]), "lib.rs"),
            (v(&["s"]), "s/mod.rs"),
            (v(&["s", "a"]), "s/a.rs"),
            (v(&["s", "b"]), "s/b.rs"),
            (v(&["s", "b", "inner"]), "s/b.rs"),
        ] {
            tree.modules.insert(m.clone(), f.into());
            tree.files.entry(f.into()).or_insert((m, Scan::default()));
        }
        // s/mod.rs re-exports from a; a takes X through the hub; b reaches a inline.
        tree.files.get_mut("s/mod.rs").unwrap().1 = scan("mod a; mod b; pub use a::Y;");
        tree.files.get_mut("s/a.rs").unwrap().1 = scan("use super::X;");
        tree.files.get_mut("s/b.rs").unwrap().1 = scan(
            "use crate::s; mod inner { fn f() { super::super::a::g(); } } fn h() { s::a::k() }",
        );
        let mut graph = Graph::new();
        add_edges(&mut graph, &tree, None);
        assert_eq!(graph["s/mod.rs"].keys().collect::<Vec<_>>(), ["s/a.rs"]);
        assert_eq!(
            graph["s/a.rs"]["s/mod.rs"],
            BTreeSet::from(["X".to_string()])
        );
        assert_eq!(
            graph["s/b.rs"]["s/a.rs"],
            BTreeSet::from(["g".to_string(), "k".to_string()])
        );
        let found = circles(&graph);
        assert_eq!(found, [v(&["s/a.rs", "s/mod.rs"])]);
        let msg = describe_circles("src", &graph, &found);
        assert!(msg.contains("s/a.rs -> s/mod.rs: X"), "{msg}");
        assert!(msg.contains("s/mod.rs -> s/a.rs: Y"), "{msg}");
    }
}
