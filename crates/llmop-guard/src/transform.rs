//! Acting on findings in text: `redact` masks each value (`[REDACTED:EMAIL]`) for good;
//! `pseudonymize` replaces it by a placeholder (`<EMAIL_1>`) kept in a call's
//! [`Vault`], the same value always the same placeholder within the call, so the
//! provider can still refer to "<EMAIL_1>" and the client gets its own value back
//! ([`Vault::restore`], or [`Restorer`] for a stream whose chunks may split a
//! placeholder).

use crate::Finding;
use smallvec::SmallVec;
use std::collections::HashMap;
use std::ops::Range;

/// A span of a text to rewrite: where, which finding it is, and how (1 pseudonymize,
/// 2 redact). The span is the finding's, or (in a stream) the part of it not yet sent.
pub type Masked<'f> = (Range<usize>, &'f Finding, u8);

/// The spans that can be rewritten: value-bearing (not whole-text signals), inside
/// `text`, in order, without overlaps.
fn spans<'f>(text: &str, findings: &[Masked<'f>]) -> SmallVec<[Masked<'f>; 4]> {
    let mut v: SmallVec<[Masked<'f>; 4]> = findings
        .iter()
        .filter(|(span, f, _)| {
            f.category != crate::Category::Injection
                && text.get(span.clone()).is_some()
                && !span.is_empty()
        })
        .cloned()
        .collect();
    v.sort_by_key(|(span, _, _)| (span.start, span.end));
    let mut kept: SmallVec<[Masked<'f>; 4]> = SmallVec::with_capacity(v.len());
    for m in v {
        if kept.last().is_none_or(|k| k.0.end <= m.0.start) {
            kept.push(m);
        }
    }
    kept
}

/// `text` with each span replaced by what `with` writes for it.
fn rewrite(
    text: &str,
    findings: &[Masked<'_>],
    mut with: impl FnMut(&Finding, u8, &str, &mut String),
) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut at = 0;
    for (span, f, mode) in spans(text, findings) {
        out.push_str(&text[at..span.start]);
        with(f, mode, &text[span.clone()], &mut out);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `[REDACTED:EMAIL]` for a finding of `pii.email`.
fn push_redacted(f: &Finding, out: &mut String) {
    out.push_str("[REDACTED:");
    push_upper(f.name(), out);
    out.push(']');
}

fn push_upper(s: &str, out: &mut String) {
    out.extend(s.chars().map(|c| c.to_ascii_uppercase()));
}

/// Each span masked as its mode says: 2 redact, 1 pseudonymize into `vault` (redacted
/// when there is none).
pub fn mask(text: &str, findings: &[Masked<'_>], mut vault: Option<&mut Vault>) -> String {
    rewrite(text, findings, |f, mode, value, out| {
        match (mode, vault.as_deref_mut()) {
            (1, Some(v)) => v.put(f.name_label(), value, out),
            _ => push_redacted(f, out),
        }
    })
}

fn whole(findings: &[Finding], mode: u8) -> SmallVec<[Masked<'_>; 4]> {
    findings.iter().map(|f| (f.span.clone(), f, mode)).collect()
}

/// Every finding's value masked with its label.
pub fn redact(text: &str, findings: &[Finding]) -> String {
    mask(text, &whole(findings, 2), None)
}

/// Every finding's value replaced by its placeholder in `vault`.
pub fn pseudonymize(text: &str, findings: &[Finding], vault: &mut Vault) -> String {
    mask(text, &whole(findings, 1), Some(vault))
}

/// One call's placeholders and the values they stand for. Lives as long as the call;
/// never recorded (it holds the values).
///
/// A call has a few placeholders, so they are kept in a list and looked up by a scan;
/// past [`Vault::INDEXED`] of them (a request full of addresses) maps index both ways,
/// so a lookup stays constant however many there are. Three maps made for every call
/// cost more than the masking itself (callgrind, `docs/benchmarks.md`).
#[derive(Default, Clone)]
pub struct Vault {
    /// (value, placeholder), in the order they were made.
    entries: Vec<(String, String)>,
    /// value → entry and placeholder → entry, once there are more than `INDEXED`.
    index: Option<Box<Index>>,
    /// Placeholders made per label: the next number.
    /// Per label (compared ignoring case), how many placeholders it has; the code's
    /// own labels borrowed, not copied.
    counts: SmallVec<[(crate::Label, usize); 2]>,
    longest: usize,
}

/// A vault's index: value → entry, placeholder → entry.
type Index = (HashMap<String, usize>, HashMap<String, usize>);

impl std::fmt::Debug for Vault {
    /// Never the values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({} placeholders)", self.entries.len())
    }
}

impl Vault {
    /// Placeholders looked up by a scan of the list, up to this many.
    const INDEXED: usize = 8;

    /// The (value, placeholder) pairs, the vault given up: what a record is masked
    /// with.
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.entries
    }

    fn by_value(&self, value: &str) -> Option<usize> {
        match &self.index {
            Some(ix) => ix.0.get(value).copied(),
            None => self.entries.iter().position(|(v, _)| v == value),
        }
    }

    /// The value behind a placeholder of this vault.
    fn value_of(&self, placeholder: &str) -> Option<&str> {
        let at = match &self.index {
            Some(ix) => ix.1.get(placeholder).copied(),
            None => self.entries.iter().position(|(_, p)| p == placeholder),
        };
        at.map(|i| self.entries[i].0.as_str())
    }

    /// `<LABEL_N>` for `value`: the one it already has, or the next number.
    pub fn placeholder(&mut self, label: &str, value: &str) -> String {
        let mut p = String::new();
        self.put(crate::Label::Owned(label.to_string()), value, &mut p);
        p
    }

    /// `value`'s placeholder (its label written in capitals) pushed onto `out`: the one
    /// it already has, or the next number for its label.
    fn put(&mut self, label: crate::Label, value: &str, out: &mut String) {
        if let Some(i) = self.by_value(value) {
            out.push_str(&self.entries[i].1);
            return;
        }
        let n = match self
            .counts
            .iter_mut()
            .find(|(l, _)| l.eq_ignore_ascii_case(&label))
        {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counts.push((label.clone(), 1));
                1
            }
        };
        let mut p = String::with_capacity(label.len() + 8);
        p.push('<');
        push_upper(&label, &mut p);
        p.push('_');
        p.push_str(itoa::Buffer::new().format(n));
        p.push('>');
        out.push_str(&p);
        self.longest = self.longest.max(p.len());
        let at = self.entries.len();
        if let Some(ix) = &mut self.index {
            ix.0.insert(value.to_string(), at);
            ix.1.insert(p.clone(), at);
        }
        self.entries.push((value.to_string(), p));
        if self.index.is_none() && self.entries.len() > Self::INDEXED {
            let mut ix = (HashMap::new(), HashMap::new());
            for (i, (v, p)) in self.entries.iter().enumerate() {
                ix.0.insert(v.clone(), i);
                ix.1.insert(p.clone(), i);
            }
            self.index = Some(Box::new(ix));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `text` with every known placeholder replaced by its value (unknown ones, which
    /// a model may invent, stay as they are).
    pub fn restore(&self, text: &str) -> String {
        self.restore_with(text, |v, out| out.push_str(v))
    }

    /// `restore` for JSON text (tool-call arguments): each value goes in escaped as
    /// inside a JSON string, so a value with a quote or a backslash keeps the
    /// arguments valid JSON.
    pub fn restore_json(&self, text: &str) -> String {
        self.restore_with(text, |v, out| {
            let quoted = serde_json::Value::String(v.to_string()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        })
    }

    fn restore_with(&self, text: &str, put: impl Fn(&str, &mut String)) -> String {
        if self.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(open) = rest.find('<') {
            out.push_str(&rest[..open]);
            let tail = &rest[open..];
            // A placeholder is at most `longest` bytes: looking no further keeps a text
            // of many `<` and no `>` linear.
            let reach = &tail.as_bytes()[..tail.len().min(self.longest)];
            let known = reach
                .iter()
                .position(|&b| b == b'>')
                .map(|close| &tail[..=close])
                .and_then(|p| Some((p, self.value_of(p)?)));
            match known {
                Some((p, value)) => {
                    put(value, &mut out);
                    rest = &tail[p.len()..];
                }
                _ => {
                    out.push('<');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Masks known values wherever they occur in a record's texts: the values guardrails
/// found (and left in place, or restored into an answer), replaced by their masks or
/// placeholders. A call has a handful of such values, so they are replaced one after
/// the other, longest first (a value inside a longer one does not split it): building
/// an automaton per record would cost more than the search it saves. Each value's
/// searcher is built once per record, not once per string searched (a record's JSON
/// has a dozen strings; `str::contains` set a searcher up for each).
///
/// A call that carries many values (a request of thousands of addresses) gets one
/// automaton for all of them instead: value by value, each a pass over every string,
/// 16,000 values in 210 KB took 2.4 s, and the 4 MB a scan reads could hold 450,000.
pub struct Scrubber {
    /// (the value's searcher, the value, its mask), longest value first.
    pairs: Vec<(memchr::memmem::Finder<'static>, String, String)>,
    /// For more than [`AUTOMATON_FROM`] values: all of them in one automaton
    /// (leftmost-longest, so a value inside a longer one does not split it), and their
    /// masks in its patterns' order.
    many: Option<(aho_corasick::AhoCorasick, Vec<String>)>,
}

/// Values from which one automaton masks them all.
const AUTOMATON_FROM: usize = 32;

impl Scrubber {
    /// `None` when there is nothing to mask.
    pub fn new(mut pairs: Vec<(String, String)>) -> Option<Scrubber> {
        pairs.retain(|(v, _)| !v.is_empty());
        if pairs.is_empty() {
            return None;
        }
        pairs.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        if pairs.len() > AUTOMATON_FROM {
            let ac = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostLongest)
                .build(pairs.iter().map(|(v, _)| v));
            // A set of values too large for the automaton (not reachable with what a
            // scan reads) falls back to value by value.
            if let Ok(ac) = ac {
                let masks = pairs.into_iter().map(|(_, with)| with).collect();
                return Some(Scrubber {
                    pairs: Vec::new(),
                    many: Some((ac, masks)),
                });
            }
        }
        let pairs = pairs
            .into_iter()
            .map(|(v, with)| {
                let finder = memchr::memmem::Finder::new(v.as_bytes()).into_owned();
                (finder, v, with)
            })
            .collect();
        Some(Scrubber { pairs, many: None })
    }

    fn is_match(&self, s: &str) -> bool {
        if let Some((ac, _)) = &self.many {
            return ac.is_match(s);
        }
        self.pairs
            .iter()
            .any(|(f, _, _)| f.find(s.as_bytes()).is_some())
    }

    pub fn text(&self, s: &mut String) {
        if let Some((ac, masks)) = &self.many {
            if ac.is_match(s.as_str()) {
                *s = ac.replace_all(s, masks);
            }
            return;
        }
        for (f, v, with) in &self.pairs {
            if f.find(s.as_bytes()).is_some() {
                *s = s.replace(v.as_str(), with);
            }
        }
    }

    /// Every string (and key) in a JSON value.
    pub fn value(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => self.text(s),
            serde_json::Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            serde_json::Value::Object(o) => {
                if o.keys().any(|k| self.is_match(k)) {
                    let old = std::mem::take(o);
                    for (mut k, mut x) in old {
                        self.text(&mut k);
                        self.value(&mut x);
                        o.insert(k, x);
                    }
                } else {
                    o.values_mut().for_each(|x| self.value(x));
                }
            }
            _ => {}
        }
    }
}

/// Restores placeholders in a stream: a chunk ending inside a possible placeholder
/// (`… <EMA`) keeps that tail until the next chunk shows what it is.
#[derive(Debug, Default)]
pub struct Restorer {
    pending: String,
}

impl Restorer {
    /// What may be sent now of everything pushed so far.
    pub fn push(&mut self, vault: &Vault, chunk: &str) -> String {
        self.pending.push_str(chunk);
        if vault.is_empty() {
            return std::mem::take(&mut self.pending);
        }
        // Hold back from the last '<' that has no '>' after it, if it could still
        // become a placeholder.
        let hold = match self.pending.rfind('<') {
            Some(i)
                if !self.pending[i..].contains('>')
                    && self.pending.len() - i < vault.longest
                    && self.pending[i + 1..]
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                i
            }
            _ => self.pending.len(),
        };
        let ready: String = self.pending[..hold].to_string();
        self.pending.drain(..hold);
        vault.restore(&ready)
    }

    /// The rest, at the end of the stream.
    pub fn finish(&mut self, vault: &Vault) -> String {
        vault.restore(&std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Guard, GuardSpec};
    use proptest::prelude::*;

    /// Many values are masked by one automaton as value by value masks them: every
    /// occurrence, a value inside a longer one not split, keys of a JSON object too.
    #[test]
    fn many_values_are_masked_as_a_few_are() {
        let values: Vec<String> = (0..200).map(|i| format!("u{i}@cd.ef")).collect();
        let pairs: Vec<(String, String)> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (v.clone(), format!("<EMAIL_{i}>")))
            .chain([("x-u1@cd.ef-y".to_string(), "[LONG]".to_string())])
            .collect();
        let text: String =
            values.iter().map(|v| format!("{v}, ")).collect::<String>() + "x-u1@cd.ef-y";
        let many = Scrubber::new(pairs.clone()).unwrap();
        assert!(many.many.is_some());
        // Value by value: the same pairs through the few-values path.
        let mut want = text.clone();
        let mut sorted = pairs.clone();
        sorted.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        for (v, with) in &sorted {
            want = want.replace(v.as_str(), with);
        }
        let mut got = text.clone();
        many.text(&mut got);
        assert_eq!(got, want);
        assert!(!got.contains("@cd.ef"));
        let mut v = serde_json::json!({"u7@cd.ef": ["u8@cd.ef"]});
        many.value(&mut v);
        assert_eq!(v, serde_json::json!({"<EMAIL_7>": ["<EMAIL_8>"]}));
    }

    #[test]
    fn redact_and_pseudonymize_round_trip() {
        let g = Guard::new(&GuardSpec::default()).unwrap();
        let text = "Write to ann@example.com, cc bob@example.org, and again ann@example.com";
        let found = g.scan(text);
        assert_eq!(
            redact(text, &found),
            "Write to [REDACTED:EMAIL], cc [REDACTED:EMAIL], and again [REDACTED:EMAIL]"
        );
        let mut vault = Vault::default();
        let masked = pseudonymize(text, &found, &mut vault);
        assert_eq!(
            masked,
            "Write to <EMAIL_1>, cc <EMAIL_2>, and again <EMAIL_1>"
        );
        assert_eq!(
            vault.restore("Sent to <EMAIL_2> and <EMAIL_9>."),
            "Sent to bob@example.org and <EMAIL_9>."
        );
        assert_eq!(vault.restore(&masked), text);
    }

    #[test]
    fn a_vault_past_its_list_size_keeps_every_placeholder() {
        let mut vault = Vault::default();
        let values: Vec<String> = (0..40).map(|i| format!("user{i}@example.com")).collect();
        let made: Vec<String> = values
            .iter()
            .map(|v| vault.placeholder("EMAIL", v))
            .collect();
        // Asked again (before and after the index was built), a value keeps its own.
        for (v, p) in values.iter().zip(&made) {
            assert_eq!(&vault.placeholder("EMAIL", v), p);
            assert_eq!(vault.restore(p), *v);
        }
        assert_eq!(made[0], "<EMAIL_1>");
        assert_eq!(made[39], "<EMAIL_40>");
        assert_eq!(vault.placeholder("PHONE", "555"), "<PHONE_1>");
        assert_eq!(vault.into_pairs().len(), 41);
    }

    #[test]
    fn restoring_text_of_many_brackets_is_linear() {
        let mut vault = Vault::default();
        vault.placeholder("EMAIL", "a@b.co");
        // Each `<` looks at most a placeholder's length ahead for its `>`.
        let text = format!("{}<EMAIL_1>{}", "<".repeat(200_000), "<x".repeat(100_000));
        let want = format!("{}a@b.co{}", "<".repeat(200_000), "<x".repeat(100_000));
        assert_eq!(vault.restore(&text), want);
    }

    #[test]
    fn restored_json_stays_json() {
        let mut vault = Vault::default();
        vault.placeholder("SECRET", "pa\"ss\\word");
        let args = "{\"password\":\"<SECRET_1>\"}";
        let back: serde_json::Value = serde_json::from_str(&vault.restore_json(args)).unwrap();
        assert_eq!(back["password"], "pa\"ss\\word");
    }

    proptest! {
        // However a stream is cut, the restored stream is the restored whole.
        #[test]
        fn stream_restore_equals_whole_restore(cuts in proptest::collection::vec(0usize..60, 0..8)) {
            let mut vault = Vault::default();
            vault.placeholder("EMAIL", "ann@example.com");
            vault.placeholder("PHONE", "+1 415 555 2671");
            let answer = "Hi <EMAIL_1>, I'll call <PHONE_1> (not <PHONE_7>) at 5 < 6.";
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| answer.is_char_boundary(*c)).collect();
            cuts.sort();
            let mut r = Restorer::default();
            let mut out = String::new();
            let mut at = 0;
            for c in cuts {
                if c >= at {
                    out.push_str(&r.push(&vault, &answer[at..c]));
                    at = c;
                }
            }
            out.push_str(&r.push(&vault, &answer[at..]));
            out.push_str(&r.finish(&vault));
            prop_assert_eq!(out, vault.restore(answer));
        }
    }
}
