//! Token counting with OpenAI's `o200k_base` BPE (the tokenizer of the GPT-4o family),
//! loaded once, on first use, since its tables take tens of megabytes.

use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

fn bpe() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| tiktoken_rs::o200k_base().ok()).as_ref()
}

/// Loads the tables now (call from a blocking thread at start to keep the first request
/// fast).
pub fn warm() {
    let _ = bpe();
}

/// Longest run of one character class (whitespace, or not) handed to the BPE in one
/// piece. BPE merging is quadratic in the length of a pre-tokenized piece, and one piece
/// is a whole run of letters, digits, punctuation or spaces: 64 KB of one character took
/// 1.5 s and 256 KB 24 s. Cutting runs at this length keeps tokenizing linear in bytes
/// (release build: 1 MiB of one character in 74 ms, about what 1 MiB of prose takes,
/// 107 ms; `tokenize_timing`). Ordinary text has no run this long, so it is
/// counted exactly; a cut inside a longer run (a URL, a base64 blob) changes the count
/// by about a token per cut.
const MAX_RUN: usize = 64;

/// Texts up to this size are tokenized where they are; larger ones on a blocking thread
/// ([`count_off_runtime`]), so that one big prompt never stalls an async worker.
pub const INLINE_LIMIT: usize = 16 * 1024;

/// `text` cut into segments that together are `text`, none holding a run of one
/// character class longer than [`MAX_RUN`] bytes. Written by hand: it is a scan over
/// the bytes that must agree with the BPE's pre-tokenizer on what a run is, which no
/// crate offers.
fn segments(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut run_start = 0;
        let mut run_space: Option<bool> = None;
        let mut cut = rest.len();
        for (i, c) in rest.char_indices() {
            let space = c.is_whitespace();
            if run_space != Some(space) {
                run_space = Some(space);
                run_start = i;
            } else if i - run_start >= MAX_RUN {
                cut = i;
                break;
            }
        }
        let (seg, tail) = rest.split_at(cut);
        rest = tail;
        Some(seg)
    })
}

/// Number of tokens in `text`, in time linear in its length. Falls back to a bytes/4
/// estimate if the tables failed to load (they are compiled into the binary, so this
/// should never happen).
pub fn count(text: &str) -> u64 {
    match bpe() {
        Some(b) => segments(text)
            .map(|s| b.encode_ordinary(s).len() as u64)
            .sum(),
        None => (text.len() as u64).div_ceil(4),
    }
}

/// [`count`] from async code: inline for small texts, on a blocking thread for large
/// ones.
pub async fn count_off_runtime(text: String) -> u64 {
    if text.len() <= INLINE_LIMIT {
        return count(&text);
    }
    let len = text.len() as u64;
    tokio::task::spawn_blocking(move || count(&text))
        .await
        .unwrap_or_else(|_| len.div_ceil(4))
}

/// `text` cut into token-sized pieces, each valid UTF-8 (a character split across
/// tokens stays whole in the piece where it completes). Joined, the pieces are `text`.
pub fn pieces(text: &str) -> Vec<String> {
    let Some(b) = bpe() else {
        return text.split_inclusive(' ').map(str::to_string).collect();
    };
    let mut out = Vec::new();
    for seg in segments(text) {
        let tokens = b.encode_ordinary(seg);
        let mut pending: Vec<u8> = Vec::new();
        for bytes in b._decode_native_and_split(tokens) {
            pending.extend_from_slice(&bytes);
            if let Ok(s) = std::str::from_utf8(&pending) {
                out.push(s.to_string());
                pending.clear();
            }
        }
        if !pending.is_empty() {
            out.push(String::from_utf8_lossy(&pending).into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_openai() {
        // "hello world" is 2 tokens in o200k_base.
        assert_eq!(count("hello world"), 2);
        assert_eq!(count(""), 0);
    }

    #[test]
    fn pieces_rejoin_to_the_text() {
        for t in ["hello world", "naïve café 漢字 😀 emoji", ""] {
            let p = pieces(t);
            assert_eq!(p.concat(), t);
        }
        assert!(pieces("one two three four").len() >= 4);
    }

    #[test]
    fn ordinary_text_is_counted_exactly() {
        let t = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        let b = bpe().unwrap();
        assert_eq!(count(&t), b.encode_ordinary(&t).len() as u64);
    }

    /// The longest run of one character class in `s`, in bytes.
    fn longest_run(s: &str) -> usize {
        let (mut best, mut start, mut class) = (0, 0, None);
        for (i, c) in s.char_indices() {
            if class != Some(c.is_whitespace()) {
                class = Some(c.is_whitespace());
                start = i;
            }
            best = best.max(i + c.len_utf8() - start);
        }
        best
    }

    #[test]
    fn pathological_runs_reach_the_bpe_in_short_pieces() {
        // A run of one character, random letters, spaces, punctuation, multi-byte
        // characters: each used to reach the (quadratic) BPE as one piece. How fast it
        // is now is measured in bench/chaos, not asserted here.
        let mut acgt = String::with_capacity(1 << 16);
        let mut x: u32 = 7;
        for _ in 0..(1 << 16) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            acgt.push(b"ACGT"[(x >> 16) as usize % 4] as char);
        }
        for t in [
            "a".repeat(1 << 16),
            acgt,
            " ".repeat(1 << 16),
            "!".repeat(1 << 16),
            "漢".repeat(1 << 14),
        ] {
            for seg in segments(&t) {
                assert!(longest_run(seg) <= MAX_RUN + 4, "{}", longest_run(seg));
            }
            assert!(count(&t) > 0);
            assert_eq!(pieces(&t).concat(), t);
        }
    }

    /// Prints how long pathological inputs take (a measurement, not an assertion):
    /// `cargo test --release -p llmop-providers -- --ignored --nocapture tokenize_timing`.
    #[test]
    #[ignore]
    fn tokenize_timing() {
        warm();
        for (name, t) in [
            ("1 MiB of one character", "a".repeat(1 << 20)),
            ("1 MiB of ACGT", "ACGT".repeat(1 << 18)),
            ("1 MiB of spaces", " ".repeat(1 << 20)),
            (
                "1 MiB of prose",
                "The quick brown fox jumps over the lazy dog. ".repeat(23_302),
            ),
        ] {
            let start = std::time::Instant::now();
            let n = count(&t);
            println!("{name}: {n} tokens in {:?}", start.elapsed());
        }
    }

    proptest::proptest! {
        #[test]
        fn segments_rejoin(t in "\\PC{0,300}") {
            let joined: String = segments(&t).collect();
            proptest::prop_assert_eq!(joined, t);
        }
    }
}
