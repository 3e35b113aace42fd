//! The gateway's modules form layers: no module reaches, through its `crate::` paths,
//! back to itself. `AppState` sits above everything the request path's stages use, so
//! stages take narrow inputs and a new capability cannot tie the crate into a knot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The top-level module a file belongs to (`pipeline/targets.rs` is `pipeline`).
fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module a source text names through `crate::`, including
/// `use crate::{a, b::c}` groups.
fn references(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    out.insert(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let module = module_of(rel);
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let refs = graph.entry(module.clone()).or_default();
            refs.extend(references(&text).into_iter().filter(|r| *r != module));
        }
    }
    graph
}

/// A cycle through `start`, if there is one.
fn cycle_from(
    graph: &BTreeMap<String, BTreeSet<String>>,
    start: &str,
    at: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    for next in graph.get(at).into_iter().flatten() {
        if next == start {
            let mut c = path.clone();
            c.push(next.clone());
            return Some(c);
        }
        if seen.insert(next.clone()) {
            path.push(next.clone());
            if let Some(c) = cycle_from(graph, start, next, path, seen) {
                return Some(c);
            }
            path.pop();
        }
    }
    None
}

#[test]
fn no_module_imports_itself_back() {
    let graph = graph();
    assert!(graph.contains_key("pipeline") && graph.contains_key("state"));
    for m in graph.keys() {
        let mut path = vec![m.clone()];
        if let Some(c) = cycle_from(&graph, m, m, &mut path, &mut BTreeSet::new()) {
            panic!("import loop: {}", c.join(" -> "));
        }
    }
}

#[test]
fn the_reader_sees_groups_and_paths() {
    let refs = references("use crate::{a, b::c};\nlet x = crate::d::e();");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["a", "b", "d"].map(String::from)
    );
}

#[test]
fn stages_do_not_take_the_whole_state() {
    // The modules whose functions are the request path's stages.
    let graph = graph();
    for m in [
        "limits",
        "features",
        "routing",
        "record",
        "reasoning",
        "auth",
        "stage",
        "agent",
    ] {
        assert!(
            !graph[m].contains("state"),
            "`{m}` uses `state`: stages take narrow inputs"
        );
    }
}
