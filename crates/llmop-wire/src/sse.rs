//! Server-sent events: an incremental parser for upstream streams, and frame writers
//! for client streams.
//!
//! Why a hand-written parser: the `eventsource-stream` crate copies its remaining buffer
//! after every event it parses, so one network read that holds twenty events is copied
//! twenty times; in the streaming benchmark that copying and its `nom` line matching
//! were the largest user-space costs of the whole gateway. This parser scans each byte
//! once (line ends and a field's colon found with `memchr`, many bytes a step: a
//! per-byte loop was about a tenth of a streamed call's instructions) and copies only
//! an event's `data` out. It follows the WHATWG event-stream rules
//! for what llmop needs: LF, CRLF and CR line ends; `data` lines joined with LF;
//! `event`; comments; a single leading space stripped from values; `id`/`retry` read
//! and ignored.

use crate::WireError;
use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// A line longer than this is refused: an upstream cannot make the gateway buffer
/// without bound.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// One dispatched event. `event` is empty for the default `message` type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Feed bytes with [`SseParser::push`]; take events with [`SseParser::next_event`].
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    start: usize,
    /// `buf[start..scanned]` holds no line end: an earlier call looked, and a line
    /// that arrives in many reads is not searched again from its start each time.
    scanned: usize,
    event: String,
    data: String,
    has_data: bool,
    /// The previous line ended with CR: a LF right after it belongs to that line end.
    after_cr: bool,
    /// Most bytes one event (its lines, its data) may hold; 0: [`MAX_LINE`].
    max_event: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that refuses any event (or line) larger than `max` bytes: `data:` lines
    /// that never end in a blank line cannot accumulate without bound.
    pub fn with_max_event(max: usize) -> Self {
        SseParser {
            max_event: max.max(1),
            ..Self::default()
        }
    }

    fn max_event(&self) -> usize {
        if self.max_event == 0 {
            MAX_LINE
        } else {
            self.max_event.min(MAX_LINE)
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            self.scanned = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.scanned = self.scanned.saturating_sub(self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, `Ok(None)` when more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, WireError> {
        loop {
            if self.after_cr && self.start < self.buf.len() {
                if self.buf[self.start] == b'\n' {
                    self.start += 1;
                }
                self.after_cr = false;
            }
            let rest = &self.buf[self.start..];
            let from = self.scanned.saturating_sub(self.start);
            let Some(end) = rest
                .get(from..)
                .and_then(|r| memchr::memchr2(b'\n', b'\r', r))
                .map(|i| from + i)
            else {
                self.scanned = self.buf.len();
                if rest.len() > self.max_event() {
                    return Err(WireError::new(
                        format!("event-stream line longer than {} bytes", self.max_event()),
                        None,
                    ));
                }
                return Ok(None);
            };
            let terminator = rest[end];
            let line_start = self.start;
            self.start += end + 1;
            self.after_cr = terminator == b'\r';
            if end == 0 {
                if let Some(ev) = self.dispatch() {
                    return Ok(Some(ev));
                }
                continue;
            }
            self.field(line_start, line_start + end)?;
        }
    }

    /// Dispatches what is pending when the stream ends without a final blank line.
    pub fn finish(&mut self) -> Result<Option<SseEvent>, WireError> {
        let rest_start = self.start;
        let rest_end = self.buf.len();
        self.start = rest_end;
        if rest_end > rest_start {
            self.field(rest_start, rest_end)?;
        }
        Ok(self.dispatch())
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
        })
    }

    fn field(&mut self, from: usize, to: usize) -> Result<(), WireError> {
        let line = &self.buf[from..to];
        if line[0] == b':' {
            return Ok(()); // comment
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = std::str::from_utf8(value)
            .map_err(|_| WireError::new("event stream is not UTF-8", None))?;
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > self.max_event() {
                    return Err(WireError::new(
                        format!("event larger than {} bytes", self.max_event()),
                        None,
                    ));
                }
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(value);
            }
            _ => {} // id, retry, unknown fields
        }
        Ok(())
    }
}

/// Appends `s` as a JSON string (quoted, escaped): the one varying part of the frames
/// written by hand (OpenAI's text chunk, Anthropic's `content_block_delta`).
pub(crate) fn put_json_str(out: &mut BytesMut, s: &str) {
    // Into memory: cannot fail.
    let _ = serde_json::to_writer(BufMut::writer(out), s);
}

/// Appends `data: <json>\n\n`.
///
/// The JSON goes through [`llmop_core::json`]'s fast writer, as whole bodies do. Frames
/// written once per token through here (Responses' text deltas, tool-call argument
/// deltas) had serde_json escape each one's ids and names byte by byte: about 50k
/// instructions of a 60-frame answer. The two most frequent frames, OpenAI's text chunk
/// and Anthropic's text delta, are written by hand instead (see [`put_json_str`]).
/// It is written into its own buffer first, which is shrunk if a large string left it
/// with much spare room, so the stream's frame buffer never keeps that room. The buffer
/// starts at 1 KiB: sonic-rs wants six times a string's length free before writing it,
/// and from 256 bytes a frame's id alone made it grow (a reallocation per frame).
pub fn write_data<T: Serialize>(out: &mut BytesMut, value: &T) {
    out.put_slice(b"data: ");
    // Serializing our own types into memory cannot fail.
    if let Ok(json) = llmop_core::json::to_vec_with_capacity(1024, value) {
        out.put_slice(&json);
    }
    out.put_slice(b"\n\n");
}

/// Appends `event: <name>\ndata: <json>\n\n`.
pub fn write_event<T: Serialize>(out: &mut BytesMut, name: &str, value: &T) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\n");
    write_data(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(text: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &c in cuts.iter().chain(std::iter::once(&text.len())) {
            let c = c.min(text.len()).max(last);
            p.push(&text[last..c]);
            last = c;
            while let Some(e) = p.next_event().unwrap() {
                out.push(e);
            }
        }
        if let Some(e) = p.finish().unwrap() {
            out.push(e);
        }
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn follows_the_event_stream_rules() {
        let text = b": comment\nevent: ping\ndata: {\"a\":1}\n\ndata:no-space\ndata:  two spaces\n\r\nid: 7\nretry: 10\ndata: crlf\r\n\r\ndata: cr\r\rdata\n\nevent: lonely\n\ndata: tail";
        assert_eq!(
            all(text, &[]),
            vec![
                ev("ping", "{\"a\":1}"),
                ev("", "no-space\n two spaces"),
                ev("", "crlf"),
                ev("", "cr"),
                ev("", ""),
                ev("", "tail"),
            ]
        );
    }

    /// A line that arrives in pieces after more than 64 KiB was parsed (the buffer's
    /// parsed part is dropped then) is read whole: where an earlier call stopped
    /// looking for its end moves with the buffer.
    #[test]
    fn a_line_in_pieces_after_the_buffer_moves() {
        let mut p = SseParser::new();
        let event = format!("data: {}\n\n", "x".repeat(1000));
        let mut text = event.repeat(70);
        text.push_str("data: par");
        p.push(text.as_bytes());
        let mut n = 0;
        while let Some(e) = p.next_event().unwrap() {
            assert_eq!(e.data.len(), 1000);
            n += 1;
        }
        assert_eq!(n, 70);
        for piece in ["tial li", "ne", "\r", "\n", "\r\n"] {
            p.push(piece.as_bytes());
            if let Some(e) = p.next_event().unwrap() {
                assert_eq!(e, ev("", "partial line"));
                n += 1;
            }
        }
        assert_eq!(n, 71);
        assert_eq!(p.finish().unwrap(), None);
    }

    #[test]
    fn refuses_bad_utf8_and_endless_lines() {
        let mut p = SseParser::new();
        p.push(b"data: \xff\xfe\n\n");
        assert!(p.next_event().is_err());

        // A line dripped a byte a read: each read is searched once (from where the
        // last search stopped), and the line is refused once it passes the limit.
        let mut p = SseParser::with_max_event(64);
        let line = format!("data: {}", "x".repeat(100));
        let mut refused_at = None;
        for (i, b) in line.bytes().enumerate() {
            p.push(&[b]);
            match p.next_event() {
                Ok(None) => {}
                Ok(Some(e)) => panic!("an event from an unended line: {e:?}"),
                Err(_) => {
                    refused_at = Some(i + 1);
                    break;
                }
            }
        }
        assert_eq!(refused_at, Some(65));

        // Within the limit, the same drip ends in its event.
        let mut p = SseParser::with_max_event(64);
        for b in b"data: dripped\n\n" {
            p.push(&[*b]);
            if let Some(e) = p.next_event().unwrap() {
                assert_eq!(e, ev("", "dripped"));
                return;
            }
        }
        panic!("no event");
    }

    proptest! {
        /// However the bytes are split into reads, the events are the same.
        #[test]
        fn chunking_does_not_matter(
            events in prop::collection::vec(("[a-z_]{0,8}", "[ -~éü😀]{0,30}"), 0..8),
            crlf in any::<bool>(),
            cuts in prop::collection::vec(0usize..400, 0..12),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            for (name, data) in &events {
                if !name.is_empty() { text.push_str(&format!("event: {name}{nl}")); }
                text.push_str(&format!("data: {data}{nl}{nl}"));
            }
            let mut cuts = cuts;
            cuts.sort();
            let whole = all(text.as_bytes(), &[]);
            let split = all(text.as_bytes(), &cuts);
            prop_assert_eq!(&whole, &split);
            let expected: Vec<SseEvent> = events.iter().map(|(n, d)| ev(n, d)).collect();
            prop_assert_eq!(whole, expected);
        }

        #[test]
        fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300), cuts in prop::collection::vec(0usize..300, 0..6)) {
            let mut p = SseParser::new();
            let mut last = 0;
            let mut cuts = cuts; cuts.sort();
            for c in cuts.into_iter().chain(std::iter::once(bytes.len())) {
                let c = c.min(bytes.len()).max(last);
                p.push(&bytes[last..c]);
                last = c;
                while let Ok(Some(_)) = p.next_event() {}
            }
            let _ = p.finish();
        }
    }
}
