//! Writing server-sent-event frames. (Reading them is done by the `eventsource-stream`
//! crate in the provider adapters; decoders here take one event's `data` at a time.)

use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// Appends `data: <json>\n\n`.
pub fn write_data<T: Serialize>(out: &mut BytesMut, value: &T) {
    out.put_slice(b"data: ");
    // Serializing our own types into memory cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.put_slice(b"\n\n");
}

/// Appends `event: <name>\ndata: <json>\n\n`.
pub fn write_event<T: Serialize>(out: &mut BytesMut, name: &str, value: &T) {
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\n");
    write_data(out, value);
}
