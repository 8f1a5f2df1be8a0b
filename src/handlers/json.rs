//! `--format json` written straight into the output buffer: no
//! `serde_json::Value`, no `String` per field, no allocation per message.
//!
//! The bytes are exactly what `serde_json::json!` produced before (the tests
//! keep that implementation as the oracle): serde_json is built without
//! `preserve_order`, so an object is a `BTreeMap` and its keys come out
//! sorted by their bytes, header names included, and of two headers with one
//! name the last wins. Strings are escaped as serde_json escapes them: `\"`,
//! `\\`, `\b \f \n \r \t`, other control characters as `\u00xx` (lower-case
//! hex), everything else (DEL, `/`, non-ASCII) as is.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;

use crate::message::Message;

/// Appends `msg` as one JSON object (no newline) to `out`: keys `headers`,
/// `key`, `offset`, `partition`, `timestamp`, `topic`, `value`, in that
/// (sorted) order. Byte strings that are valid UTF-8 become JSON strings,
/// other bytes `{"base64":"..."}`, absent ones `null`.
pub(crate) fn write_json(msg: &Message, out: &mut Vec<u8>) {
    out.reserve(json_len_hint(msg));
    out.extend_from_slice(b"{\"headers\":");
    write_headers(&msg.headers, out);
    out.extend_from_slice(b",\"key\":");
    write_bytes(msg.key.as_deref(), out);
    out.extend_from_slice(b",\"offset\":");
    write_i64(msg.offset, out);
    out.extend_from_slice(b",\"partition\":");
    write_i64(i64::from(msg.partition), out);
    out.extend_from_slice(b",\"timestamp\":");
    write_i64(msg.timestamp_ms, out);
    out.extend_from_slice(b",\"topic\":");
    write_str(&msg.topic, out);
    out.extend_from_slice(b",\"value\":");
    write_bytes(msg.value.as_deref(), out);
    out.push(b'}');
}

/// Appends `msg` as one line of the `--handler pipe` protocol (newline
/// included): `id`, `topic`, `partition`, `offset`, `key`, `value`,
/// `headers` (an object; the last of equal names wins), `timestamp_ms`,
/// `attempt`. Key, value and header values are JSON strings when all of them
/// are UTF-8 (absent ones `null`); otherwise every one of them is base64 and
/// the object ends with `"encoding":"base64"`.
pub(crate) fn write_pipe_request(msg: &Message, id: u64, attempt: u32, out: &mut Vec<u8>) {
    out.reserve(json_len_hint(msg) + 32);
    let text = [msg.key.as_deref(), msg.value.as_deref()]
        .into_iter()
        .flatten()
        .chain(msg.headers.iter().map(|(_, v)| &v[..]))
        .all(is_utf8);
    let bytes = |b: Option<&[u8]>, out: &mut Vec<u8>| match b {
        None => out.extend_from_slice(b"null"),
        Some(b) if text => write_escaped(b, clean_ascii_prefix(b), out),
        Some(b) => write_base64_str(b, out),
    };
    out.extend_from_slice(b"{\"id\":");
    out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
    out.extend_from_slice(b",\"topic\":");
    write_str(&msg.topic, out);
    out.extend_from_slice(b",\"partition\":");
    write_i64(i64::from(msg.partition), out);
    out.extend_from_slice(b",\"offset\":");
    write_i64(msg.offset, out);
    out.extend_from_slice(b",\"key\":");
    bytes(msg.key.as_deref(), out);
    out.extend_from_slice(b",\"value\":");
    bytes(msg.value.as_deref(), out);
    out.extend_from_slice(b",\"headers\":{");
    for (i, (name, value)) in msg.headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(name, out);
        out.push(b':');
        bytes(Some(value), out);
    }
    out.extend_from_slice(b"},\"timestamp_ms\":");
    write_i64(msg.timestamp_ms, out);
    out.extend_from_slice(b",\"attempt\":");
    write_i64(i64::from(attempt), out);
    if !text {
        out.extend_from_slice(b",\"encoding\":\"base64\"");
    }
    out.extend_from_slice(b"}\n");
}

/// Whether `b` is UTF-8 (the clean ASCII prefix first: usually all of it).
fn is_utf8(b: &[u8]) -> bool {
    let clean = clean_ascii_prefix(b);
    clean == b.len() || std::str::from_utf8(&b[clean..]).is_ok()
}

/// What `write_json` writes for `msg` when nothing needs escaping or base64
/// (and a little more): the capacity that spares a line buffer a regrowth.
pub(crate) fn json_len_hint(msg: &Message) -> usize {
    // Field names, punctuation and three numbers fit in 128 bytes.
    let headers: usize = msg.headers.iter().map(|(n, v)| n.len() + v.len() + 6).sum();
    128 + msg.topic.len()
        + msg.key.as_ref().map_or(0, Bytes::len)
        + msg.value.as_ref().map_or(0, Bytes::len)
        + headers
}

/// Appends `v` in decimal, with `itoa` (what serde_json uses): two digits
/// per step from a table instead of a division per digit.
pub(crate) fn write_i64(v: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// Headers as an object sorted by name, the last of equal names winning,
/// like a `BTreeMap` collected from them. Without allocating for up to
/// `INLINE_HEADERS` headers, and without sorting when they already are.
fn write_headers(headers: &[(String, Bytes)], out: &mut Vec<u8>) {
    /// Headers sorted on the stack; more than this (rare) sort a `Vec`.
    const INLINE_HEADERS: usize = 32;
    out.push(b'{');
    if headers.windows(2).all(|w| w[0].0 < w[1].0) {
        for (i, (name, value)) in headers.iter().enumerate() {
            write_header(i == 0, name, value, out);
        }
    } else if headers.len() <= INLINE_HEADERS {
        let mut order = [0u32; INLINE_HEADERS];
        write_sorted_headers(headers, &mut order[..headers.len()], out);
    } else {
        let mut order = vec![0u32; headers.len()];
        write_sorted_headers(headers, &mut order, out);
    }
    out.push(b'}');
}

/// Writes `headers` in name order through the index buffer `order`
/// (`order.len() == headers.len()`), keeping the last of equal names.
fn write_sorted_headers(headers: &[(String, Bytes)], order: &mut [u32], out: &mut Vec<u8>) {
    for (i, slot) in order.iter_mut().enumerate() {
        // A message holds far fewer than 2^32 headers (they are in memory).
        *slot = i as u32;
    }
    // (name, position) is unique, so an unstable sort is deterministic.
    order.sort_unstable_by(|&a, &b| {
        headers[a as usize]
            .0
            .cmp(&headers[b as usize].0)
            .then(a.cmp(&b))
    });
    let mut first = true;
    for (i, &at) in order.iter().enumerate() {
        let (name, value) = &headers[at as usize];
        let shadowed = order
            .get(i + 1)
            .is_some_and(|&next| headers[next as usize].0 == *name);
        if !shadowed {
            write_header(first, name, value, out);
            first = false;
        }
    }
}

fn write_header(first: bool, name: &str, value: &[u8], out: &mut Vec<u8>) {
    if !first {
        out.push(b',');
    }
    write_str(name, out);
    out.push(b':');
    write_bytes(Some(value), out);
}

/// Bytes as JSON: a string when UTF-8, `{"base64":"..."}` otherwise,
/// `null` when absent. One pass finds the clean ASCII prefix (usually
/// everything); only the rest is checked for UTF-8 and escaped.
fn write_bytes(b: Option<&[u8]>, out: &mut Vec<u8>) {
    let Some(b) = b else {
        out.extend_from_slice(b"null");
        return;
    };
    let clean = clean_ascii_prefix(b);
    // The prefix is ASCII, so the rest starts on a character boundary and
    // `b` is UTF-8 exactly when the rest is.
    if clean == b.len() || std::str::from_utf8(&b[clean..]).is_ok() {
        write_escaped(b, clean, out);
    } else {
        write_base64(b, out);
    }
}

/// `{"base64":"..."}`.
fn write_base64(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"base64\":");
    write_base64_str(b, out);
    out.push(b'}');
}

/// `"..."`: `b` in base64, encoded in place (the alphabet needs no escaping).
fn write_base64_str(b: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let at = out.len();
    let len = base64::encoded_len(b.len(), true).expect("a payload in memory has a base64 length");
    out.resize(at + len, 0);
    let written = BASE64
        .encode_slice(b, &mut out[at..])
        .expect("the buffer was sized by encoded_len");
    out.truncate(at + written);
    out.push(b'"');
}

/// `s` as a quoted, escaped JSON string.
fn write_str(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    write_escaped(bytes, clean_ascii_prefix(bytes), out);
}

/// Whether JSON needs `b` escaped: below 0x20, `"` or `\\`.
#[inline]
fn needs_escape(b: u8) -> bool {
    // `|`, not `||`: no branches, so a block's test vectorizes.
    (b < 0x20) | (b == b'"') | (b == b'\\')
}

/// Whether `b` is non-ASCII or needs escaping.
#[inline]
fn dirty(b: u8) -> bool {
    needs_escape(b) | (b >= 0x80)
}

/// How many leading bytes of `bytes` are ASCII that JSON takes as is.
fn clean_ascii_prefix(bytes: &[u8]) -> usize {
    run_without(bytes, dirty)
}

/// How many leading bytes of `bytes` fail `stop`. Blocks of 32 are tested
/// without an early exit, which the compiler turns into a few vector
/// compares per block; the block that holds a hit is then walked.
#[inline]
fn run_without(bytes: &[u8], stop: impl Fn(u8) -> bool) -> usize {
    const BLOCK: usize = 32;
    let mut at = 0;
    for block in bytes.chunks_exact(BLOCK) {
        if block.iter().fold(false, |any, &b| any | stop(b)) {
            break;
        }
        at += BLOCK;
    }
    at + bytes[at..]
        .iter()
        .position(|&b| stop(b))
        .unwrap_or(bytes.len() - at)
}

/// `bytes` (UTF-8, its first `clean` bytes known to need no escape) as a
/// quoted, escaped JSON string. Non-ASCII characters are copied as is.
fn write_escaped(bytes: &[u8], clean: usize, out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0; // first byte not yet copied
    let mut i = clean;
    loop {
        i += run_without(&bytes[i..], needs_escape);
        if i == bytes.len() {
            break;
        }
        out.extend_from_slice(&bytes[start..i]);
        write_escape(bytes[i], out);
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_escape(byte: u8, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPE[usize::from(byte)] {
        b'u' => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
        short => out.extend_from_slice(&[b'\\', short]),
    }
}

/// How serde_json escapes each byte: 0 = as is, `u` = `\u00xx`, else `\` and that letter.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// The implementation `write_json` replaced, kept as its oracle.
    fn oracle(msg: &Message) -> Vec<u8> {
        fn bytes_json(b: Option<&[u8]>) -> serde_json::Value {
            match b {
                None => serde_json::Value::Null,
                Some(b) => match std::str::from_utf8(b) {
                    Ok(s) => serde_json::Value::String(s.to_string()),
                    Err(_) => serde_json::json!({ "base64": BASE64.encode(b) }),
                },
            }
        }
        let headers: serde_json::Map<String, serde_json::Value> = msg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), bytes_json(Some(v))))
            .collect();
        let obj = serde_json::json!({
            "topic": &*msg.topic,
            "partition": msg.partition,
            "offset": msg.offset,
            "timestamp": msg.timestamp_ms,
            "key": bytes_json(msg.key.as_deref()),
            "value": bytes_json(msg.value.as_deref()),
            "headers": headers,
        });
        obj.to_string().into_bytes()
    }

    fn json(msg: &Message) -> Vec<u8> {
        let mut out = Vec::new();
        write_json(msg, &mut out);
        out
    }

    fn message(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[(&str, &[u8])]) -> Message {
        Message {
            topic: Arc::from("t"),
            partition: 2,
            offset: 17,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            timestamp_ms: 1_700_000_000_000,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
                .collect(),
        }
    }

    #[test]
    fn the_shape_of_a_line() {
        let m = message(Some(b"k"), Some(b"v"), &[("h", b"1")]);
        assert_eq!(
            String::from_utf8(json(&m)).unwrap(),
            r#"{"headers":{"h":"1"},"key":"k","offset":17,"partition":2,"timestamp":1700000000000,"topic":"t","value":"v"}"#
        );
        let m = message(None, Some(&[0xff, 0]), &[]);
        assert_eq!(
            String::from_utf8(json(&m)).unwrap(),
            r#"{"headers":{},"key":null,"offset":17,"partition":2,"timestamp":1700000000000,"topic":"t","value":{"base64":"/wA="}}"#
        );
    }

    /// Every byte at every position of a string longer than two scan
    /// blocks, so each block boundary and the tail are exercised; bytes
    /// from 0x80 make the string invalid UTF-8, hence base64.
    #[test]
    fn every_byte_at_every_position_is_written_like_serde_json() {
        for byte in 0u8..=0xff {
            for at in 0..70 {
                let mut s = vec![b'a'; 70];
                s[at] = byte;
                let mut out = Vec::new();
                write_bytes(Some(&s), &mut out);
                let expected = match std::str::from_utf8(&s) {
                    Ok(text) => serde_json::to_vec(text).unwrap(),
                    Err(_) => {
                        serde_json::to_vec(&serde_json::json!({ "base64": BASE64.encode(&s) }))
                            .unwrap()
                    }
                };
                assert_eq!(out, expected, "byte {byte:#x} at {at}");
            }
        }
    }

    #[test]
    fn headers_sort_by_name_and_the_last_duplicate_wins() {
        let m = message(
            None,
            None,
            &[("b", b"1"), ("a", b"2"), ("b", b"3"), ("a", b"4")],
        );
        assert!(json(&m).starts_with(br#"{"headers":{"a":"4","b":"3"},"#));
        assert_eq!(json(&m), oracle(&m));
        // More than fit on the stack.
        let names: Vec<String> = (0..70).map(|i| format!("h{}", (i * 7) % 40)).collect();
        let headers: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
        let m = message(None, None, &headers);
        assert_eq!(json(&m), oracle(&m));
    }

    #[test]
    fn numbers_at_their_limits() {
        for v in [0, 1, -1, 9, 10, -10, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_i64(v, &mut out);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }

    /// Bytes that exercise escaping: arbitrary bytes (mostly invalid UTF-8),
    /// strings rich in control characters, quotes, backslashes and
    /// non-ASCII, and long clean runs broken by one special byte.
    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..48),
            "[\\x00-\\x1f\"\\\\/a-z \u{7f}\u{e9}\u{20ac}\u{1f600}]{0,40}"
                .prop_map(String::into_bytes),
            ("[a-z]{0,30}", "[\\x00-\\x1f\"\\\\\u{e9}]", "[a-z]{0,30}")
                .prop_map(|(a, b, c)| format!("{a}{b}{c}").into_bytes()),
            prop::collection::vec(
                prop_oneof![
                    Just(b'"'),
                    Just(b'\\'),
                    0u8..0x20,
                    Just(0xc3),
                    Just(0xa9),
                    Just(0xff)
                ],
                0..24
            ),
        ]
    }

    fn header_name() -> impl Strategy<Value = String> {
        prop_oneof![
            // A small alphabet, so names repeat.
            "[ab]{1,2}",
            "[\\x00-\\x1f\"\\\\a-z\u{e9}]{0,8}",
        ]
    }

    fn any_message() -> impl Strategy<Value = Message> {
        (
            "[\\x00-\\x1f\"\\\\a-z._\u{e9}-]{0,12}",
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            prop::option::of(payload()),
            prop::option::of(payload()),
            prop::collection::vec((header_name(), payload()), 0..40),
        )
            .prop_map(
                |(topic, partition, offset, timestamp_ms, key, value, headers)| Message {
                    topic: Arc::from(topic),
                    partition,
                    offset,
                    key: key.map(Bytes::from),
                    value: value.map(Bytes::from),
                    timestamp_ms,
                    headers: headers
                        .into_iter()
                        .map(|(n, v)| (n, Bytes::from(v)))
                        .collect(),
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn write_json_is_byte_identical_to_the_serde_json_value_it_replaced(m in any_message()) {
            let ours = json(&m);
            prop_assert_eq!(&ours, &oracle(&m));
            let parsed: serde_json::Value = serde_json::from_slice(&ours).expect("valid JSON");
            prop_assert_eq!(&parsed["topic"], &serde_json::Value::from(&*m.topic));
            prop_assert_eq!(&parsed["offset"], &serde_json::Value::from(m.offset));
        }

        #[test]
        fn write_json_appends_to_what_the_buffer_holds(m in any_message()) {
            let mut out = b"before\n".to_vec();
            write_json(&m, &mut out);
            prop_assert_eq!(&out[..7], b"before\n");
            prop_assert_eq!(&out[7..], &oracle(&m)[..]);
        }
    }
}
