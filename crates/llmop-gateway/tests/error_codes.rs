//! Every error code llmop answers with is a constant of `llmop_core::codes`, and the
//! error table in `docs/api.md` lists exactly those.

use llmop_core::codes;
use std::collections::BTreeSet;
use std::path::Path;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("workspace root")
}

/// The backticked codes in the `code` column of docs/api.md's error table.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(workspace().join("docs/api.md")).unwrap();
    let start = text
        .find("| status | code | when |")
        .expect("the error table in docs/api.md");
    let mut out = BTreeSet::new();
    for line in text[start..].lines().skip(2) {
        if !line.starts_with('|') {
            break;
        }
        // What is in parentheses qualifies a code (`param` names), it is not one.
        let column: String = line
            .split('|')
            .nth(2)
            .unwrap_or("")
            .split('(')
            .map(|p| p.split_once(')').map_or(p, |(_, after)| after))
            .collect();
        for (i, part) in column.split('`').enumerate() {
            // Odd parts are inside backticks.
            if i % 2 == 1 && part.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.insert(part.to_string());
            }
        }
    }
    out
}

#[test]
fn the_documented_table_lists_every_code_and_only_those() {
    let doc = documented();
    let code: BTreeSet<String> = codes::ALL.iter().map(|c| c.to_string()).collect();
    let undocumented: Vec<_> = code.difference(&doc).collect();
    let unknown: Vec<_> = doc.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "codes missing from docs/api.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "docs/api.md lists codes llmop never answers with: {unknown:?}"
    );
}

#[test]
fn no_code_is_spelled_outside_the_constants() {
    let mut found = Vec::new();
    for krate in [
        "llmop-core",
        "llmop-gateway",
        "llmop-providers",
        "llmop-store",
    ] {
        let mut stack = vec![workspace().join("crates").join(krate).join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                if path.ends_with("codes.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let body = text.split("#[cfg(test)]").next().unwrap_or("");
                for (n, line) in body.lines().enumerate() {
                    let literal = !line.trim_start().starts_with("//")
                        && codes::ALL
                            .iter()
                            .any(|c| line.contains(&format!("\"{c}\"")));
                    if literal {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "error codes spelled as literals (use llmop_core::codes):\n{}",
        found.join("\n")
    );
}
