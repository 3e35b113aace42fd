//! Writing JSON text on the request path and the record writer's thread.
//!
//! Every call writes its texts as JSON three times or more: the upstream request, the
//! client's answer, and the record's columns (the input messages, the output). serde_json
//! escapes a string one byte at a time through a table, about eight instructions a byte
//! (the largest single item of a call in callgrind). sonic-rs is a serde serializer
//! whose string escaping tests 32 bytes at a time (SIMD), with the same output: compact
//! JSON, the same escapes (`\"`, `\\`, `\b \f \n \r \t`, `\u00XX` for the other control
//! characters, nothing else), NaN and infinities as `null`. Parsing stays with
//! serde_json (its error messages and paths are part of our error envelope, and its
//! parser is the one our fuzz targets cover).
//!
//! One cost comes with it: sonic-rs reserves six times a string's length (its worst-case
//! escape) before writing it. So a large string briefly takes up to six times its size
//! while it is written (one at a time per thread), and a buffer left with much more room
//! than it used is shrunk before it is kept, so no body or record column holds that room
//! for its lifetime. A body expected to be large (a hint of 1 MiB or more: images, long
//! documents) is written by serde_json instead, where escaping is a small part of the
//! cost and the six-fold reservation would be tens of megabytes.

use serde::Serialize;

/// Room a buffer may keep beyond twice its length before it is shrunk.
const SLACK: usize = 4096;

/// A size hint from which serde_json writes the text (see the module's header).
const LARGE: usize = 1 << 20;

/// Serializes `value` as compact JSON into a buffer of `capacity` bytes to start with.
pub fn to_vec_with_capacity<T: Serialize + ?Sized>(
    capacity: usize,
    value: &T,
) -> Result<Vec<u8>, sonic_rs::Error> {
    let mut out = Vec::with_capacity(capacity);
    if capacity >= LARGE {
        serde_json::to_writer(&mut out, value).map_err(serde::ser::Error::custom)?;
        return Ok(out);
    }
    sonic_rs::to_writer(&mut out, value)?;
    if out.capacity() > 2 * out.len() + SLACK {
        out.shrink_to_fit();
    }
    Ok(out)
}

/// Serializes `value` as compact JSON text.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> Result<String, sonic_rs::Error> {
    let out = to_vec_with_capacity(128, value)?;
    // sonic-rs writes only UTF-8 (the input's strings and its own ASCII), as its own
    // `to_string` assumes; checked here rather than assumed, at a SIMD pass's cost.
    String::from_utf8(out).map_err(|_| serde::ser::Error::custom("serialized JSON is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    /// serde_json's text for the same value: the reference the fast writer must match.
    fn reference<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("serializable")
    }

    #[test]
    fn escapes_exactly_as_serde_json_does() {
        let mut every_byte = String::new();
        for c in (0u32..0x80).chain([0x7f, 0xa0, 0x2028, 0x2029, 0xfeff, 0x1f600]) {
            every_byte.push(char::from_u32(c).expect("a char"));
        }
        for s in [
            String::new(),
            "plain".into(),
            "quote \" backslash \\ slash / tab \t newline \n".into(),
            every_byte.clone(),
            // Escapes on both sides of the 32-byte steps, and a tail shorter than one.
            format!("{}\"{}\\{}", "a".repeat(31), "b".repeat(32), "c".repeat(5)),
            "é".repeat(100),
        ] {
            assert_eq!(to_string(&s).expect("serializes"), reference(&s), "{s:?}");
        }
    }

    #[test]
    fn structures_numbers_and_options_match() {
        let v = json!({
            "model": "m", "n": 3, "neg": -7, "big": u64::MAX, "t": 0.7, "tiny": 1e-7,
            "huge": 1e300, "f": 2.0, "none": null, "yes": true,
            "list": [1, "two", [], {}], "nested": {"k": {"k2": ["\u{0}"]}},
        });
        assert_eq!(to_string(&v).expect("serializes"), reference(&v));
        assert_eq!(to_string(&f64::NAN).expect("serializes"), "null");
        assert_eq!(to_string(&Some(1u8)).expect("serializes"), "1");
        assert_eq!(to_string(&None::<u8>).expect("serializes"), "null");
    }

    #[test]
    fn a_large_string_leaves_no_room_behind() {
        let s = "x".repeat(1 << 20);
        let out = to_vec_with_capacity(16, &s).expect("serializes");
        assert_eq!(out.len(), s.len() + 2);
        assert!(
            out.capacity() <= 2 * out.len() + SLACK,
            "{}",
            out.capacity()
        );
    }

    /// A large body is written without the six-fold reservation: the buffer it was
    /// given is big enough, and it is neither grown nor shrunk.
    #[test]
    fn a_body_expected_large_is_written_in_the_room_it_was_given() {
        let v = json!({"content": "y\n".repeat(600_000)});
        let out = to_vec_with_capacity(2 * LARGE, &v).expect("serializes");
        assert_eq!(out.capacity(), 2 * LARGE);
        assert_eq!(out, reference(&v).into_bytes());
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\a-z\u{e9}\u{2028}]{0,80}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_value_is_written_as_serde_json_writes_it(v in value()) {
            prop_assert_eq!(to_string(&v).expect("serializes"), reference(&v));
        }

        /// Floats too are written as serde_json writes them (the shortest text that
        /// reads back as the same number), so a record or body does not change form.
        #[test]
        fn any_float_is_written_as_serde_json_writes_it(x in any::<f64>()) {
            prop_assert_eq!(to_string(&x).expect("serializes"), reference(&x));
        }
    }
}
