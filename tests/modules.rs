//! The library's modules form a layered graph: no module reaches, through `crate::` paths, a
//! module that reaches it back (issue 10). Read from the source, not from a tool, so it runs in
//! command 2 with nothing installed: every `crate::a` or `use crate::{a, b}` in a non-test line
//! of `src/` (a `#[cfg(test)]` module or a `tests.rs` / `*_tests.rs` file is test code, which
//! may use anything) is an edge from the file's top-level module to `a`; within a folder module,
//! `super::b` and `crate::folder::b` are edges between its files. Any cycle fails, with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The file's module path below `src/`: `config/model.rs` → ["config", "model"],
/// `config/mod.rs` → ["config"], `lib.rs` → [].
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|l| l == "mod" || l == "lib" || l == "main")
    {
        parts.pop();
    }
    parts
}

fn is_test_file(file: &Path) -> bool {
    let name = file.file_stem().unwrap().to_string_lossy();
    name == "tests" || name.ends_with("_tests")
}

/// The code of a file up to its `#[cfg(test)]` module, comments removed.
fn non_test_code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" //").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// Every path that follows `prefix` (`crate::` or `super::`), as its first one or two
/// segments; `prefix{a, b::c}` groups are opened.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        rest = &rest[i + prefix.len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top_level(&group[..end]) {
                out.push(segments(item.trim()));
            }
        } else {
            out.push(segments(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn segments(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(id) = ident_at(rest) {
        out.push(id.to_owned());
        match rest[id.len()..].strip_prefix("::") {
            Some(r) if out.len() < 2 => rest = r,
            _ => break,
        }
    }
    out
}

/// (top-level graph, per-folder graphs keyed by folder).
fn graphs() -> (Graph, BTreeMap<String, Graph>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let top_level: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(&src, f).first().cloned())
        .collect();
    let (mut top, mut inner): (Graph, BTreeMap<String, Graph>) = Default::default();
    for file in &files {
        let path = module_path(&src, file);
        if path.is_empty() || is_test_file(file) {
            continue;
        }
        let code = non_test_code(&std::fs::read_to_string(file).unwrap());
        let me = path[0].clone();
        top.entry(me.clone()).or_default();
        for p in paths_after(&code, "crate::") {
            if p[0] != me && top_level.contains(&p[0]) {
                top.get_mut(&me).unwrap().insert(p[0].clone());
            }
            // Inside a folder module: `crate::folder::b` from `folder/a.rs`.
            if path.len() == 2 && p[0] == me && p.len() == 2 && p[1] != path[1] {
                inner
                    .entry(me.clone())
                    .or_default()
                    .entry(path[1].clone())
                    .or_default()
                    .insert(p[1].clone());
            }
        }
        if path.len() == 2 {
            let node = inner
                .entry(me.clone())
                .or_default()
                .entry(path[1].clone())
                .or_default();
            for p in paths_after(&code, "super::") {
                if p[0] != path[1] && p[0] != "super" {
                    node.insert(p[0].clone());
                }
            }
        }
    }
    (top, inner)
}

/// A cycle in `g`, as the list of modules along it, if there is one.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        stack.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if !g.contains_key(m) {
                continue;
            }
            match state.get(m.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == m).unwrap();
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(m, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in g.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0
            && let Some(c) = visit(n, g, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let (top, _) = graphs();
    assert!(top.len() > 15, "the source walk found the modules: {top:?}");
    assert!(
        top["check"].contains("policy") && top["authz"].contains("check"),
        "the walk sees edges: {top:?}"
    );
    if let Some(cycle) = find_cycle(&top) {
        panic!("modules import each other: {}", cycle.join(" -> "));
    }
}

#[test]
fn files_inside_a_folder_module_form_no_cycle() {
    let (_, inner) = graphs();
    for (folder, g) in &inner {
        if let Some(cycle) = find_cycle(g) {
            panic!("{folder}: files import each other: {}", cycle.join(" -> "));
        }
    }
}

/// The checker itself: a cycle is found, an acyclic graph passes, and grouped `use`s are read.
#[test]
fn the_checker_finds_cycles_and_reads_grouped_uses() {
    let g = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(
        find_cycle(&g(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(find_cycle(&g(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    let code = "use crate::config::{Alg, model::Resource};\nuse crate::{jwks::{self, X}, token};\nlet x = crate::policy::f();\nfoo_crate::bar";
    let mut firsts: Vec<String> = paths_after(code, "crate::")
        .into_iter()
        .map(|p| p[0].clone())
        .collect();
    firsts.sort();
    assert_eq!(firsts, ["config", "jwks", "policy", "token"]);
    let code =
        "// use crate::explain;\nuse crate::scope;\n#[cfg(test)]\nmod tests { use crate::check; }";
    assert_eq!(
        paths_after(&non_test_code(code), "crate::"),
        [vec!["scope".to_string()]]
    );
}
