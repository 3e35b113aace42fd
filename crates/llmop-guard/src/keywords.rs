//! Which words of a fixed list occur in a text: every occurrence, overlapping ones
//! included, one DFA transition per byte.
//!
//! The detectors' keyword prefilters only need to know *which* words occur, not where.
//! `aho_corasick`'s overlapping iterator answers more (each match's span, through a
//! general search loop that keeps its state between calls) and measured about four
//! times the instructions per byte of this walk on prose (`bench-guard`). The automaton
//! is still the crate's own DFA; only the loop over the bytes is written here, through
//! the crate's public [`Automaton`] interface. A walk is also fed bytes one at a time,
//! so a detector can run it over text it derives on the fly (the injection signals'
//! normalised text) without building that text first.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};

/// A compiled word list.
pub(crate) struct Words {
    dfa: DFA,
    start: StateID,
}

impl Words {
    /// `ascii_case_insensitive`: `AKIA` also finds `akia`. Fails only on a list the DFA
    /// cannot hold (the detectors' lists are constants: a test catches that).
    pub(crate) fn new(words: &[&str], ascii_case_insensitive: bool) -> Result<Words, String> {
        let dfa = DFA::builder()
            // Standard semantics: a match state carries every word ending at that byte,
            // which is what an overlapping walk needs.
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(ascii_case_insensitive)
            // No prefilter: start states then stay ordinary states, and a walk needs
            // to look only at match states.
            .prefilter(false)
            .build(words)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(Anchored::No).map_err(|e| e.to_string())?;
        Ok(Words { dfa, start })
    }

    pub(crate) fn walk(&self) -> Walk<'_> {
        Walk {
            dfa: &self.dfa,
            sid: self.start,
        }
    }

    /// Calls `hit` with the index (in the list given to [`Words::new`]) of every word
    /// occurrence in `text`, in the order their last bytes come; stops when `hit`
    /// returns `true`.
    pub(crate) fn find(&self, text: &[u8], mut hit: impl FnMut(usize) -> bool) {
        let mut walk = self.walk();
        for &b in text {
            if walk.step(b, &mut hit) {
                return;
            }
        }
    }
}

/// A walk through a text fed a byte at a time.
pub(crate) struct Walk<'a> {
    dfa: &'a DFA,
    sid: StateID,
}

impl Walk<'_> {
    /// Moves over `byte`, calling `hit` for each word that ends there; `true` when a
    /// `hit` asked to stop.
    #[inline(always)]
    pub(crate) fn step(&mut self, byte: u8, hit: &mut impl FnMut(usize) -> bool) -> bool {
        self.sid = self.dfa.next_state(Anchored::No, self.sid, byte);
        // Match states sort first among the special ones: one comparison for most bytes.
        if self.dfa.is_special(self.sid) && self.dfa.is_match(self.sid) {
            for i in 0..self.dfa.match_len(self.sid) {
                if hit(self.dfa.match_pattern(self.sid, i).as_usize()) {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::AhoCorasick;
    use proptest::prelude::*;

    fn walked(words: &Words, text: &str) -> Vec<usize> {
        let mut out = Vec::new();
        words.find(text.as_bytes(), |i| {
            out.push(i);
            false
        });
        out.sort_unstable();
        out
    }

    #[test]
    fn overlapping_words_are_all_found() {
        let w = Words::new(&["system prompt", "prompt", "pt", "sys"], false).unwrap();
        assert_eq!(walked(&w, "the system prompt"), vec![0, 1, 2, 3]);
        assert_eq!(walked(&w, "nothing here"), Vec::<usize>::new());
        let w = Words::new(&["akia"], true).unwrap();
        assert_eq!(walked(&w, "xxAKIAyy"), vec![0]);
        let w = Words::new(&["akia"], false).unwrap();
        assert_eq!(walked(&w, "xxAKIAyy"), Vec::<usize>::new());
    }

    #[test]
    fn a_hit_can_stop_the_walk() {
        let w = Words::new(&["a"], false).unwrap();
        let mut n = 0;
        w.find(b"aaaa", |_| {
            n += 1;
            n == 2
        });
        assert_eq!(n, 2);
    }

    proptest! {
        // The walk finds exactly what aho-corasick's own overlapping search finds.
        #[test]
        fn the_walk_agrees_with_the_overlapping_iterator(
            words in proptest::collection::vec("[abAB ]{1,4}", 1..8),
            text in "[abcAB ]{0,60}",
            fold in any::<bool>(),
        ) {
            let list: Vec<&str> = words.iter().map(String::as_str).collect();
            let w = Words::new(&list, fold).unwrap();
            let ac = AhoCorasick::builder()
                .ascii_case_insensitive(fold)
                .build(&list)
                .unwrap();
            let mut want: Vec<usize> = ac
                .find_overlapping_iter(&text)
                .map(|m| m.pattern().as_usize())
                .collect();
            want.sort_unstable();
            prop_assert_eq!(walked(&w, &text), want);
        }
    }
}
