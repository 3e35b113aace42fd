//! The strings of a request outside its messages' scanned parts: tool definitions
//! (names, descriptions, every string of their schemas), a response format's schema,
//! stop sequences, `user`, `metadata`, the fields llmop passes through unread (object
//! keys included, in all of these JSON values), message names, tool calls' ids and names, a named `tool_choice`, image URLs (not inline
//! `data:` images) and the prompt-cache key. (The model asked for is not one: a call
//! reaches its guard stage only when the model named a route, a feature or a provider,
//! all of the operator's naming. A call refused before, for a model that names
//! nothing, has that string masked in its record: `Policy::collect_input`.) A client can
//! put a credential or a person's data in any of them, and each is sent to the provider
//! and recorded, so the input rules check them too, as `text`.
//!
//! They are checked as one text: the non-empty strings in a fixed order, each followed
//! by [`SEP`]. One scan of every field costs one scan's fixed cost, not one per string
//! (an agent's tool schemas hold hundreds of short strings), and the same tools sent on
//! every turn make the same text, which the scan cache then remembers. A finding that
//! spans a separator is two strings' ends, not a value, and is dropped (an injection
//! signal, which is about a text as a whole, is kept). A field that itself holds the
//! separator makes the caller check the strings one by one instead.

use llmop_core::chat::ImageSource;
use llmop_core::{ChatRequest, Part, ResponseFormat, ToolChoice};
use serde_json::{Map, Value};

/// Ends each field in the joined text: a NUL, which no detector's value contains.
pub(crate) const SEP: char = '\0';

/// Visits every field string of `req`, in the order [`each_mut`] visits them.
pub(crate) fn each(req: &ChatRequest, f: &mut dyn FnMut(&str)) {
    for m in &req.messages {
        if let Some(n) = &m.name {
            f(n);
        }
        for p in &m.parts {
            match p {
                Part::Image(ImageSource::Url(u)) if !u.starts_with("data:") => f(u),
                Part::ToolCall(c) => {
                    f(&c.id);
                    f(&c.name);
                }
                Part::ToolResult { call_id, .. } => f(call_id),
                _ => {}
            }
        }
    }
    if let Some(ToolChoice::Named(n)) = &req.tool_choice {
        f(n);
    }
    for t in &req.tools {
        f(&t.name);
        if let Some(d) = &t.description {
            f(d);
        }
        value(&t.parameters, f);
    }
    if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &req.response_format {
        f(name);
        value(schema, f);
    }
    for s in &req.params.stop {
        f(s);
    }
    if let Some(u) = &req.user {
        f(u);
    }
    object(&req.metadata, f);
    object(&req.extra, f);
    if let Some(k) = &req.prompt_cache.key {
        f(k);
    }
}

/// [`each`], with each string changeable in place.
pub(crate) fn each_mut(req: &mut ChatRequest, f: &mut dyn FnMut(&mut String)) {
    for m in &mut req.messages {
        if let Some(n) = &mut m.name {
            f(n);
        }
        for p in &mut m.parts {
            match p {
                Part::Image(ImageSource::Url(u)) if !u.starts_with("data:") => f(u),
                Part::ToolCall(c) => {
                    f(&mut c.id);
                    f(&mut c.name);
                }
                Part::ToolResult { call_id, .. } => f(call_id),
                _ => {}
            }
        }
    }
    if let Some(ToolChoice::Named(n)) = &mut req.tool_choice {
        f(n);
    }
    for t in &mut req.tools {
        f(&mut t.name);
        if let Some(d) = &mut t.description {
            f(d);
        }
        value_mut(&mut t.parameters, f);
    }
    if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &mut req.response_format {
        f(name);
        value_mut(schema, f);
    }
    for s in &mut req.params.stop {
        f(s);
    }
    if let Some(u) = &mut req.user {
        f(u);
    }
    object_mut(&mut req.metadata, f);
    object_mut(&mut req.extra, f);
    if let Some(k) = &mut req.prompt_cache.key {
        f(k);
    }
}

/// Every string in a JSON value, object keys included (a client's `metadata` keys,
/// a schema's property names): each is sent to the provider and recorded. Its depth is
/// bounded by the parser's recursion limit.
fn value(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| value(x, f)),
        Value::Object(o) => object(o, f),
        _ => {}
    }
}

/// An object's entries in order, each key before its value.
pub(crate) fn object(o: &Map<String, Value>, f: &mut dyn FnMut(&str)) {
    for (k, v) in o {
        f(k);
        value(v, f);
    }
}

fn value_mut(v: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter_mut().for_each(|x| value_mut(x, f)),
        Value::Object(o) => object_mut(o, f),
        _ => {}
    }
}

/// [`object`], with each string changeable: a key cannot change in place, so an
/// object whose key changed is rebuilt in its order with the new key (two keys masked
/// alike become one entry, the later value kept, as the record's scrubber does).
fn object_mut(o: &mut Map<String, Value>, f: &mut dyn FnMut(&mut String)) {
    let mut renamed = false;
    let mut keys: Vec<String> = Vec::with_capacity(o.len());
    for (k, v) in o.iter_mut() {
        let mut key = k.clone();
        f(&mut key);
        renamed |= key != *k;
        keys.push(key);
        value_mut(v, f);
    }
    if renamed {
        let old = std::mem::take(o);
        for (key, (_, v)) in keys.into_iter().zip(old) {
            o.insert(key, v);
        }
    }
}

/// A request's fields joined: the non-empty strings in order, each followed by
/// [`SEP`]. Made once per call: its length decides where the call is scanned, and the
/// check reads it.
pub struct Fields {
    pub(crate) text: String,
    /// Whether no field holds the separator itself (else the joined text cannot be
    /// split back into them).
    pub(crate) clean: bool,
    /// How many fields the text joins.
    pub(crate) count: usize,
}

impl Fields {
    pub fn of(req: &ChatRequest) -> Fields {
        let mut text = String::new();
        let mut n = 0;
        each(req, &mut |s| {
            if !s.is_empty() {
                text.push_str(s);
                text.push(SEP);
                n += 1;
            }
        });
        // One pass over the whole text, not a search per string: a separator more
        // than the fields' count is one a field holds.
        let clean = separators(&text) == n;
        Fields {
            text,
            clean,
            count: n,
        }
    }

    /// The bytes checking them scans.
    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// How many separators a text holds (one vector pass).
pub(crate) fn separators(text: &str) -> usize {
    memchr::memchr_iter(0, text.as_bytes()).count()
}

/// Puts a joined text (masked) back into the request's fields, in order. The caller
/// made it from this request with [`joined`] and changed no separator.
pub(crate) fn split_into(req: &mut ChatRequest, joined: &str) {
    let mut pieces = joined.split(SEP);
    each_mut(req, &mut |s| {
        if s.is_empty() {
            return;
        }
        if let Some(p) = pieces.next() {
            if p != s.as_str() {
                *s = p.to_string();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_core::chat::{Message, Role, Tool};
    use llmop_core::WireFormat;
    use serde_json::json;

    fn request() -> ChatRequest {
        let mut m = Message::text(Role::User, "hi");
        m.name = Some("alice".into());
        m.parts.push(Part::Image(ImageSource::Url(
            "https://x.example/a.png".into(),
        )));
        m.parts.push(Part::Image(ImageSource::Url(
            "data:image/png;base64,AAAA".into(),
        )));
        let call = Message {
            role: Role::Assistant,
            parts: vec![Part::ToolCall(llmop_core::ToolCall {
                id: "call_1".into(),
                name: "lookup".into(),
                arguments: "{}".into(),
            })],
            name: None,
        };
        let result = Message {
            role: Role::Tool,
            parts: vec![Part::ToolResult {
                call_id: "call_1".into(),
                content: "found".into(),
                is_error: false,
            }],
            name: None,
        };
        let mut r = ChatRequest::new("m", vec![m, call, result], WireFormat::OpenAi);
        r.tool_choice = Some(ToolChoice::Named("lookup".into()));
        r.tools.push(Tool {
            name: "lookup".into(),
            description: Some("finds things".into()),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string", "default": ""}}}),
            strict: None,
        });
        r.params.stop = vec!["END".into()];
        r.user = Some("u-1".into());
        r.extra.insert("x".into(), json!({"k": ["v1", 2, "v2"]}));
        r
    }

    /// Every field string in order, empty ones and inline images left out; the two
    /// walks agree.
    #[test]
    fn the_fields_are_joined_and_split_back_in_order() {
        let mut r = request();
        let Fields { text: j, clean, .. } = Fields::of(&r);
        assert!(clean);
        let want = [
            "alice",
            "https://x.example/a.png",
            "call_1",
            "lookup",
            "call_1",
            "lookup",
            "lookup",
            "finds things",
            "type",
            "object",
            "properties",
            "q",
            "type",
            "string",
            "default",
            "END",
            "u-1",
            "x",
            "k",
            "v1",
            "v2",
        ];
        let mut expect = String::new();
        for w in want {
            expect.push_str(w);
            expect.push(SEP);
        }
        assert_eq!(j, expect);
        assert_eq!(Fields::of(&r).len(), j.len());
        let masked = j
            .replace("u-1", "[REDACTED:X]")
            .replace("finds", "<E_1>")
            .replace("\0q\0", "\0<Q_1>\0");
        split_into(&mut r, &masked);
        assert_eq!(r.user.as_deref(), Some("[REDACTED:X]"));
        assert_eq!(r.tools[0].description.as_deref(), Some("<E_1> things"));
        assert_eq!(r.tools[0].name, "lookup");
        // A key masked: its entry keeps its place and its value.
        assert_eq!(
            r.tools[0].parameters,
            json!({"type": "object", "properties": {"<Q_1>": {"type": "string", "default": ""}}})
        );
        let keys: Vec<&String> = r.tools[0].parameters.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["type", "properties"]);
        assert_eq!(r.extra["x"], json!({"k": ["v1", 2, "v2"]}));
        assert_eq!(Fields::of(&r).text, masked);
    }

    /// A field that holds the separator is reported, so the caller does not split.
    #[test]
    fn a_field_holding_the_separator_is_reported() {
        let mut r = request();
        r.user = Some("a\0b".into());
        assert!(!Fields::of(&r).clean);
    }
}
