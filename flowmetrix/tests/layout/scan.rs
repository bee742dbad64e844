//! The scanner: Rust source → tokens without comments, strings' insides or
//! `#[cfg(test)]` items → the `mod` declarations and the paths a file writes (in `use`
//! trees and inline in code, macro bodies included).

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Ident(String),
    /// A string literal's contents (escapes left as written).
    Str(String),
    /// Any other literal: numbers, chars, bytes; lifetimes.
    Lit,
    PathSep,
    Punct(char),
}

pub fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

pub fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Splits Rust source into tokens, dropping whitespace and comments (doc comments too).
pub fn lex(src: &str) -> Vec<Tok> {
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |j: usize| s.get(j).copied().unwrap_or('\0');
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0usize;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            let (text, next) = quoted(&s, i + 1);
            out.push(Tok::Str(text));
            i = next;
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                // An escaped char literal: '\n', '\'', '\u{..}'.
                i += 2;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(Tok::Lit);
            } else if at(i + 2) == '\'' {
                i += 3;
                out.push(Tok::Lit);
            } else {
                // A lifetime or label.
                i += 1;
                while i < s.len() && is_ident_char(s[i]) {
                    i += 1;
                }
                out.push(Tok::Lit);
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < s.len() && is_ident_char(s[i]) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let raw_prefix = matches!(word.as_str(), "r" | "br" | "cr");
            let str_prefix = matches!(word.as_str(), "b" | "c");
            if raw_prefix && (at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#'))) {
                let mut hashes = 0;
                while at(i) == '#' {
                    hashes += 1;
                    i += 1;
                }
                i += 1; // the opening quote
                let body = i;
                loop {
                    if i >= s.len() {
                        break;
                    }
                    if s[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                        break;
                    }
                    i += 1;
                }
                out.push(Tok::Str(s[body..i.min(s.len())].iter().collect()));
                i += 1 + hashes;
            } else if str_prefix && at(i) == '"' {
                let (text, next) = quoted(&s, i + 1);
                out.push(Tok::Str(text));
                i = next;
            } else if word == "b" && at(i) == '\'' {
                i += 1;
                if at(i) == '\\' {
                    i += 1;
                }
                i += 1;
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push(Tok::Lit);
            } else if word == "r" && at(i) == '#' && is_ident_start(at(i + 1)) {
                // A raw identifier: r#type.
                let start = i + 1;
                i += 1;
                while i < s.len() && is_ident_char(s[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(s[start..i].iter().collect()));
            } else {
                out.push(Tok::Ident(word));
            }
        } else if c.is_ascii_digit() {
            while i < s.len()
                && (is_ident_char(s[i]) || (s[i] == '.' && at(i + 1).is_ascii_digit()))
            {
                i += 1;
            }
            out.push(Tok::Lit);
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

/// Reads a `"`-quoted body starting after the quote; returns it and the index after the
/// closing quote.
pub fn quoted(s: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && s[i] != '"' {
        if s[i] == '\\' {
            i += 1;
        }
        i += 1;
    }
    let end = i.min(s.len());
    (s[start..end].iter().collect(), i + 1)
}

pub fn ident(t: Option<&Tok>) -> Option<&str> {
    match t {
        Some(Tok::Ident(w)) => Some(w),
        _ => None,
    }
}

pub fn is_punct(t: Option<&Tok>, c: char) -> bool {
    t == Some(&Tok::Punct(c))
}

/// Index after the group opened at `open` (a `(`, `[` or `{`), or the end.
pub fn close_of(toks: &[Tok], open: usize) -> usize {
    let mut depth = 0i32;
    for (j, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth <= 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Whether an attribute's tokens (between `#[` and `]`) make the item test-only:
/// `cfg(test)` or `cfg(all(.., test, ..))`.
pub fn is_cfg_test(attr: &[Tok]) -> bool {
    let words: Vec<&Tok> = attr.iter().collect();
    let id = |k: usize| ident(words.get(k).copied());
    if id(0) != Some("cfg") || !is_punct(words.get(1).copied(), '(') {
        return false;
    }
    if id(2) == Some("test") && is_punct(words.get(3).copied(), ')') {
        return true;
    }
    if id(2) == Some("all") && is_punct(words.get(3).copied(), '(') {
        // `test` at the top level of all(..).
        let mut depth = 0;
        for t in &words[3..] {
            match t {
                Tok::Punct('(') => depth += 1,
                Tok::Punct(')') => depth -= 1,
                Tok::Ident(w) if w == "test" && depth == 1 => return true,
                _ => {}
            }
        }
    }
    false
}

/// Drops every item marked `#[cfg(test)]` (inline test modules, `mod tests;` declarations,
/// test-only functions and imports).
pub fn strip_cfg_test(toks: &[Tok]) -> Vec<Tok> {
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if toks[i] == Tok::Punct('#') && is_punct(toks.get(i + 1), '[') {
            let end = close_of(toks, i + 1);
            if is_cfg_test(&toks[i + 2..end.saturating_sub(1)]) {
                i = skip_item(toks, end);
                continue;
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// Index after the item starting at `i` (its other attributes included): after a `;` at
/// depth 0, or after the `{ .. }` that ends it.
pub fn skip_item(toks: &[Tok], mut i: usize) -> usize {
    while i < toks.len() {
        match &toks[i] {
            Tok::Punct('#') if is_punct(toks.get(i + 1), '[') => i = close_of(toks, i + 1),
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => {
                let end = close_of(toks, i);
                return if is_punct(toks.get(end), ';') {
                    end + 1
                } else {
                    end
                };
            }
            Tok::Punct('(' | '[') => i = close_of(toks, i),
            _ => i += 1,
        }
    }
    i
}

// ---------------------------------------------------------------------------------------
// What a file declares and refers to

/// A path written in a file: in a `use` tree or inline in code.
#[derive(Clone, Debug, PartialEq)]
pub struct Ref {
    /// The inline modules (`mod x { .. }`) the path is written in, outermost first.
    pub scope: Vec<String>,
    pub segs: Vec<String>,
    /// `use a::*`.
    pub glob: bool,
    /// The name a `use` binds (`as` name or last segment); None for inline paths and globs.
    pub binds: Option<String>,
}

#[derive(Debug, Default)]
pub struct Scan {
    /// `mod x;` declarations (with the inline modules around them), not under cfg(test).
    pub mods: Vec<Vec<String>>,
    /// `mod x { .. }` inline modules, not under cfg(test).
    pub inline: Vec<Vec<String>>,
    pub refs: Vec<Ref>,
}

pub fn scan(src: &str) -> Scan {
    let toks = strip_cfg_test(&lex(src));
    let mut out = Scan::default();
    let mut depth = 0usize;
    let mut scopes: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let scope: Vec<String> = scopes.iter().map(|(n, _)| n.clone()).collect();
        match &toks[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                while scopes.last().is_some_and(|(_, d)| *d > depth) {
                    scopes.pop();
                }
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => {
                let Some(name) = ident(toks.get(i + 1)) else {
                    i += 1;
                    continue;
                };
                let mut path = scope.clone();
                path.push(name.to_string());
                if is_punct(toks.get(i + 2), ';') {
                    out.mods.push(path);
                    i += 3;
                } else if is_punct(toks.get(i + 2), '{') {
                    depth += 1;
                    scopes.push((name.to_string(), depth));
                    out.inline.push(path);
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(w) if w == "use" => {
                let mut j = i + 1;
                let mut trees = Vec::new();
                if toks.get(j) == Some(&Tok::PathSep) {
                    // `use ::ext::..`: another crate.
                    j += 1;
                    use_tree(&toks, &mut j, &mut Vec::new(), &mut Vec::new());
                } else {
                    use_tree(&toks, &mut j, &mut Vec::new(), &mut trees);
                }
                for (segs, glob, binds) in trees {
                    out.refs.push(Ref {
                        scope: scope.clone(),
                        segs,
                        glob,
                        binds,
                    });
                }
                i = j.max(i + 1);
            }
            Tok::Ident(w) => {
                let starts_path = toks.get(i + 1) == Some(&Tok::PathSep)
                    && i.checked_sub(1).map(|p| &toks[p]) != Some(&Tok::PathSep)
                    && w != "Self";
                if !starts_path {
                    i += 1;
                    continue;
                }
                let mut segs = vec![w.clone()];
                if i > 0 && toks[i - 1] == Tok::Punct('$') && w == "crate" {
                    segs[0] = "crate".into();
                }
                let mut j = i + 1;
                while toks.get(j) == Some(&Tok::PathSep) {
                    match ident(toks.get(j + 1)) {
                        Some(next) => {
                            segs.push(next.to_string());
                            j += 2;
                        }
                        None => break, // `x::<T>` or `x::{..}` in a macro
                    }
                }
                out.refs.push(Ref {
                    scope: scope.clone(),
                    segs,
                    glob: false,
                    binds: None,
                });
                i = j;
            }
            _ => i += 1,
        }
    }
    out
}

/// Reads one use tree at `*j` with `prefix` before it; pushes (path, glob, bound name) for
/// each leaf. Leaves `*j` after the tree (after the `;` at the top level).
pub fn use_tree(
    toks: &[Tok],
    j: &mut usize,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, bool, Option<String>)>,
) {
    let base = prefix.len();
    loop {
        match toks.get(*j) {
            Some(Tok::Ident(w)) => {
                let w = w.clone();
                *j += 1;
                if toks.get(*j) == Some(&Tok::PathSep) {
                    prefix.push(w);
                    *j += 1;
                    continue;
                }
                // A leaf: `name`, `self`, with an optional `as alias`.
                let mut path = prefix.clone();
                let mut bound = if w == "self" {
                    prefix.last().cloned()
                } else {
                    Some(w.clone())
                };
                if w != "self" {
                    path.push(w);
                }
                if ident(toks.get(*j)) == Some("as") {
                    bound = ident(toks.get(*j + 1)).map(str::to_string);
                    *j += 2;
                }
                if bound.as_deref() == Some("_") {
                    bound = None;
                }
                out.push((path, false, bound));
                break;
            }
            Some(Tok::Punct('*')) => {
                *j += 1;
                out.push((prefix.clone(), true, None));
                break;
            }
            Some(Tok::Punct('{')) => {
                *j += 1;
                loop {
                    match toks.get(*j) {
                        None => break,
                        Some(Tok::Punct('}')) => {
                            *j += 1;
                            break;
                        }
                        Some(Tok::Punct(',')) => *j += 1,
                        Some(_) => {
                            let before = *j;
                            use_tree(toks, j, prefix, out);
                            if *j == before {
                                *j += 1;
                            }
                        }
                    }
                }
                break;
            }
            _ => break,
        }
    }
    prefix.truncate(base);
    if is_punct(toks.get(*j), ';') && base == 0 {
        *j += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(found: &Scan) -> Vec<String> {
        found.refs.iter().map(|r| r.segs.join("::")).collect()
    }

    #[test]
    fn reads_nested_use_trees() {
        let found = scan("pub use crate::{a::{b, c as d}, e::*, f::{self as g}};\nuse std::fs;");
        assert_eq!(
            segs(&found),
            [
                "crate::a::b",
                "crate::a::c",
                "crate::e",
                "crate::f",
                "std::fs"
            ]
        );
        assert_eq!(found.refs[1].binds.as_deref(), Some("d"));
        assert!(found.refs[2].glob);
        assert_eq!(found.refs[3].binds.as_deref(), Some("g"));
    }

    #[test]
    fn reads_inline_paths_and_super_super() {
        let found = scan(
            "fn f() { let x = super::super::a::B::new(); crate::c::d(Self::X, self::e::F); \
             format!(\"{}\", crate::g::h); let y: Vec<u8> = Vec::new(); ::ext::z(); }",
        );
        assert_eq!(
            segs(&found),
            [
                "super::super::a::B::new",
                "crate::c::d",
                "self::e::F",
                "crate::g::h",
                "Vec::new"
            ]
        );
    }

    #[test]
    fn drops_comments_strings_and_cfg_test() {
        let found = scan(
            "// use crate::a;\n/// [`crate::b`]\n/* use crate::c; /* nested */ crate::d */\n\
             const S: &str = \"crate::e::f\"; const R: &str = r#\"crate::g\"#; const C: char = '\"';\n\
             #[cfg(test)]\nmod tests { use crate::h; fn t() { crate::i::j(); } }\n\
             #[cfg(test)]\nmod more;\n#[cfg(all(test, unix))]\nuse crate::k;\n\
             #[cfg(not(test))]\nuse crate::l;\nfn life<'a>(x: &'a u8) -> u8 { crate::m::n(*x) }",
        );
        assert_eq!(segs(&found), ["crate::l", "crate::m::n"]);
        assert!(found.mods.is_empty(), "{:?}", found.mods);
    }

    #[test]
    fn tracks_declarations_and_inline_modules() {
        let found =
            scan("pub mod a;\nmod b { use super::c; pub(crate) mod d; }\nfn f() { e::g() }");
        assert_eq!(
            found.mods,
            [vec!["a".to_string()], vec!["b".into(), "d".into()]]
        );
        assert_eq!(found.inline, [vec!["b".to_string()]]);
        assert_eq!(found.refs[0].scope, ["b"]);
        assert!(found.refs[1].scope.is_empty());
    }
}
