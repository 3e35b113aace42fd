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

/// Number of tokens in `text`. Falls back to a bytes/4 estimate if the tables failed
/// to load (they are compiled into the binary, so this should never happen).
pub fn count(text: &str) -> u64 {
    match bpe() {
        Some(b) => b.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// `text` cut into token-sized pieces, each valid UTF-8 (a character split across
/// tokens stays whole in the piece where it completes). Joined, the pieces are `text`.
pub fn pieces(text: &str) -> Vec<String> {
    let Some(b) = bpe() else {
        return text.split_inclusive(' ').map(str::to_string).collect();
    };
    let tokens = b.encode_ordinary(text);
    let mut out = Vec::with_capacity(tokens.len());
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
}
