//! Which words of a fixed list occur in a text: every occurrence, overlapping ones
//! included, one table step per byte.
//!
//! The detectors' keyword prefilters only need to know *which* words occur, not where.
//! `aho_corasick`'s overlapping iterator answers more (each match's span, through a
//! general search loop that keeps its state between calls) and measured about four
//! times the instructions per byte of this walk on prose (`bench-guard`). The automaton
//! is the crate's own DFA, built through its public [`Automaton`] interface; only its
//! layout is redone here, once per word list: the reachable states renumbered so that
//! every state where a word ends comes after every other (one comparison per byte
//! tells whether a byte ends a word, where the crate's own layout takes two loads and
//! two comparisons), and the transitions in a table of 65,536 entries indexed by a
//! `u16`, which needs no bounds check. Per byte the walk is then a class lookup, a
//! table lookup and a comparison, about one instruction fewer than through the crate's
//! `next_state` (callgrind, `bench-guard`: 32.3k → 31.6k instructions per scan of a
//! 409-byte prompt that two walks cross). A walk is also fed bytes one at a time, so
//! a detector can run it over text it derives on the fly (the injection signals'
//! normalised text) without building that text first.

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};
use std::collections::{HashMap, HashSet};

/// Entries of [`Words::trans`]: every `u16` is an index.
const TABLE: usize = 1 << 16;

/// A compiled word list.
pub(crate) struct Words {
    /// Each byte's class: bytes no word tells apart share one.
    classes: [u8; 256],
    /// The next state of (state, class) at `state + class`; states are premultiplied
    /// by the number of classes.
    trans: Box<[u16; TABLE]>,
    start: u16,
    /// States from here on end a word.
    first_match: u16,
    /// The number of classes (the states' stride).
    stride: u16,
    /// For the n-th state that ends a word, the words ending there:
    /// `ends[ends_at[n]..ends_at[n + 1]]`.
    ends_at: Vec<usize>,
    ends: Vec<usize>,
}

impl Words {
    /// `ascii_case_insensitive`: `AKIA` also finds `akia`. Fails only on a list the DFA
    /// cannot hold or whose table outgrows 65,536 entries (the detectors' lists are
    /// constants: a test catches that).
    pub(crate) fn new(words: &[&str], ascii_case_insensitive: bool) -> Result<Words, String> {
        let dfa = DFA::builder()
            // Standard semantics: a match state carries every word ending at that byte,
            // which is what an overlapping walk needs.
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(ascii_case_insensitive)
            // No prefilter: start states then stay ordinary states.
            .prefilter(false)
            .build(words)
            .map_err(|e| e.to_string())?;
        let start = dfa.start_state(Anchored::No).map_err(|e| e.to_string())?;
        let next = |sid: StateID, byte: u8| dfa.next_state(Anchored::No, sid, byte);
        // The reachable states, breadth first.
        let mut states = vec![start];
        let mut seen: HashSet<StateID> = HashSet::from([start]);
        let mut i = 0;
        while let Some(&sid) = states.get(i) {
            i += 1;
            for byte in 0..=255u8 {
                let to = next(sid, byte);
                if dfa.is_dead(to) {
                    return Err("an unanchored word automaton has no dead state".into());
                }
                if seen.insert(to) {
                    states.push(to);
                }
            }
        }
        // Byte classes: bytes whose transitions agree from every state. Each class's
        // column of transitions, and a byte of it.
        let mut classes = [0u8; 256];
        let mut columns: Vec<(Vec<StateID>, u8)> = Vec::new();
        for byte in 0..=255u8 {
            let column: Vec<StateID> = states.iter().map(|&s| next(s, byte)).collect();
            classes[usize::from(byte)] = match columns.iter().position(|(c, _)| *c == column) {
                Some(class) => class as u8,
                None => {
                    columns.push((column, byte));
                    u8::try_from(columns.len() - 1).map_err(|e| e.to_string())?
                }
            };
        }
        // Words' ends last.
        states.sort_by_key(|&s| dfa.is_match(s));
        let first = states
            .iter()
            .position(|&s| dfa.is_match(s))
            .unwrap_or(states.len());
        let stride = columns.len();
        // Strictly less: `first_match` may be one past the last state and must still
        // be a `u16`.
        if states.len() * stride >= TABLE {
            return Err(format!("{} states of {stride} classes", states.len()));
        }
        let at: HashMap<StateID, u16> = states
            .iter()
            .enumerate()
            // In range: checked just above.
            .map(|(n, &s)| (s, (n * stride) as u16))
            .collect();
        let mut trans: Box<[u16; TABLE]> = vec![0u16; TABLE]
            .into_boxed_slice()
            .try_into()
            .map_err(|_| "a table of the wrong size")?;
        for (n, &s) in states.iter().enumerate() {
            for (class, &(_, byte)) in columns.iter().enumerate() {
                trans[n * stride + class] = at[&next(s, byte)];
            }
        }
        let mut ends_at = vec![0];
        let mut ends = Vec::new();
        for &s in &states[first..] {
            ends.extend((0..dfa.match_len(s)).map(|i| dfa.match_pattern(s, i).as_usize()));
            ends_at.push(ends.len());
        }
        Ok(Words {
            classes,
            trans,
            start: at[&start],
            first_match: (first * stride) as u16,
            stride: stride as u16,
            ends_at,
            ends,
        })
    }

    pub(crate) fn walk(&self) -> Walk<'_> {
        Walk {
            words: self,
            state: self.start,
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

    /// The words ending at `state`, a state at or after [`Words::first_match`].
    #[cold]
    fn ends(&self, state: u16, hit: &mut impl FnMut(usize) -> bool) -> bool {
        let n = usize::from((state - self.first_match) / self.stride);
        let (from, to) = (self.ends_at[n], self.ends_at[n + 1]);
        self.ends[from..to].iter().any(|&w| hit(w))
    }
}

/// A walk through a text fed a byte at a time.
pub(crate) struct Walk<'a> {
    words: &'a Words,
    state: u16,
}

impl Walk<'_> {
    /// Moves over `byte`, calling `hit` for each word that ends there; `true` when a
    /// `hit` asked to stop.
    #[inline(always)]
    pub(crate) fn step(&mut self, byte: u8, hit: &mut impl FnMut(usize) -> bool) -> bool {
        let w = self.words;
        let class = u16::from(w.classes[usize::from(byte)]);
        self.state = w.trans[usize::from(self.state.wrapping_add(class))];
        self.state >= w.first_match && w.ends(self.state, hit)
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

    /// A list whose table would not fit is refused, not truncated.
    #[test]
    fn a_list_too_large_for_the_table_is_refused() {
        let many: Vec<String> = (0..4000).map(|i| format!("{i:08x}z{i:05}")).collect();
        let list: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(Words::new(&list, false).is_err());
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
