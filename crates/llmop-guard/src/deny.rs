//! Deny lists: exact terms (whole words, case-insensitive, matched on the normalised
//! text so that `Ｃｏｍｐｅｔｉｔｏｒ` and `compet\u{200B}itor` count) and patterns
//! (regular expressions, linear time).

use crate::{Category, Finding, SpecError};
use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::RegexSet;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DenySpec {
    /// The list's name: findings are `deny.<name>`.
    pub name: String,
    pub terms: Vec<String>,
    pub patterns: Vec<String>,
}

pub struct Deny {
    rule: String,
    terms: Option<AhoCorasick>,
    patterns: Option<(RegexSet, Vec<regex::Regex>)>,
}

impl Deny {
    pub fn new(spec: &DenySpec) -> Result<Deny, SpecError> {
        let terms: Vec<String> = spec
            .terms
            .iter()
            .map(|t| crate::normalize::normalize(t).text)
            .filter(|t| !t.is_empty())
            .collect();
        let terms = if terms.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&terms)
                    .map_err(|e| SpecError(format!("deny list `{}`: {e}", spec.name)))?,
            )
        };
        let patterns = if spec.patterns.is_empty() {
            None
        } else {
            let bad = |e: regex::Error| SpecError(format!("deny list `{}`: {e}", spec.name));
            Some((
                RegexSet::new(&spec.patterns).map_err(bad)?,
                spec.patterns
                    .iter()
                    .map(|p| regex::Regex::new(p).map_err(bad))
                    .collect::<Result<_, _>>()?,
            ))
        };
        Ok(Deny {
            rule: format!("deny.{}", spec.name),
            terms,
            patterns,
        })
    }

    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        if let Some((set, each)) = &self.patterns {
            for i in set.matches(text).iter() {
                for m in each[i].find_iter(text) {
                    out.push(Finding::new(
                        self.rule.clone(),
                        Category::Deny,
                        m.start()..m.end(),
                    ));
                }
            }
        }
        if let Some(ac) = &self.terms {
            // Exact spans when the text needs no normalising; otherwise the term is
            // known to be there but not where: the whole text.
            let n = crate::normalize::normalize(text);
            let plain = n.invisible == 0 && n.confusables == 0 && n.tags == 0 && text.is_ascii();
            for m in ac.find_iter(&n.text) {
                let word = |c: Option<char>| !c.is_some_and(|c| c.is_alphanumeric());
                let (before, after) = crate::around(&n.text, m.start(), m.end());
                if !(word(before) && word(after)) {
                    continue;
                }
                let span = if plain {
                    find_ci(text, &n.text[m.start()..m.end()]).unwrap_or(0..text.len())
                } else {
                    0..text.len()
                };
                out.push(Finding::new(self.rule.clone(), Category::Deny, span));
                if !plain {
                    break;
                }
            }
        }
        out
    }
}

/// The first case-insensitive occurrence of `needle` (lowercase ASCII) in `hay`.
fn find_ci(hay: &str, needle: &str) -> Option<std::ops::Range<usize>> {
    let lower = hay.to_ascii_lowercase();
    lower.find(needle).map(|i| i..i + needle.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_and_patterns() {
        let d = Deny::new(&DenySpec {
            name: "brand".into(),
            terms: vec!["Acme Corp".into()],
            patterns: vec![r"(?i)\bproject\s+falcon\b".into()],
        })
        .unwrap();
        let text = "We beat ACME corp on Project  Falcon.";
        let spans: Vec<&str> = d.scan(text).iter().map(|f| &text[f.span.clone()]).collect();
        assert_eq!(spans, vec!["Project  Falcon", "ACME corp"]);
        assert!(d.scan("acmecorporation").is_empty());
        assert_eq!(d.scan("Ａｃｍｅ Corp rocks").len(), 1);
        assert!(Deny::new(&DenySpec {
            name: "bad".into(),
            patterns: vec!["(".into()],
            ..DenySpec::default()
        })
        .is_err());
    }
}
