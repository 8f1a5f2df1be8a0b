//! The record type that flows from the fetcher through the pool to a handler.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;

/// One Kafka record as the consumer pipeline sees it.
///
/// Cheap to clone: the topic name is shared and the key, value and header
/// payloads are reference-counted [`Bytes`]. Small to move, too (112 bytes
/// on 64-bit targets): every record moves several times between the fetcher
/// and a worker, and a move of at most 128 bytes is a few inline stores
/// where a larger one is a `memcpy` call (slow on musl).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Topic the record was fetched from.
    pub topic: Arc<str>,
    /// Partition the record was fetched from.
    pub partition: i32,
    /// Offset of the record within its partition.
    pub offset: i64,
    /// Record key; `None` for a record produced without a key.
    pub key: Option<Bytes>,
    /// Record value; `None` for a tombstone.
    pub value: Option<Bytes>,
    /// Record timestamp in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Record headers in wire order.
    pub headers: Headers,
}

/// A record's headers: `(name, value)` pairs in wire order (a name may
/// repeat). Reads like a slice (`headers.iter()`, `headers[0]`,
/// `headers.is_empty()`).
///
/// One pointer wide, and no allocation when empty (most records carry no
/// headers): that keeps [`Message`] small enough to move without a
/// `memcpy` call.
#[derive(Clone, Default, PartialEq, Eq)]
// A `Vec` is three words and a boxed slice two; one word is the point.
#[allow(clippy::box_collection)]
pub struct Headers(Option<Box<Vec<(String, Bytes)>>>);

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Headers(None)
    }

    /// Appends a header after the existing ones.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0
            .get_or_insert_with(Default::default)
            .push((name.into(), value.into()));
    }
}

impl Deref for Headers {
    type Target = [(String, Bytes)];

    fn deref(&self) -> &Self::Target {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl From<Vec<(String, Bytes)>> for Headers {
    fn from(v: Vec<(String, Bytes)>) -> Self {
        Headers((!v.is_empty()).then(|| Box::new(v)))
    }
}

impl FromIterator<(String, Bytes)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, Bytes)>>(iter: I) -> Self {
        Headers::from(iter.into_iter().collect::<Vec<_>>())
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a (String, Bytes);
    type IntoIter = std::slice::Iter<'a, (String, Bytes)>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl PartialEq<Vec<(String, Bytes)>> for Headers {
    fn eq(&self, other: &Vec<(String, Bytes)>) -> bool {
        **self == other[..]
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_message_moves_without_a_memcpy_call() {
        // The pool's job is a message plus a 16-byte completion, and must
        // stay within 128 bytes (see pool::worker's a_job_moves_inline).
        assert!(
            std::mem::size_of::<Message>() <= 112,
            "{}",
            std::mem::size_of::<Message>()
        );
        assert_eq!(std::mem::size_of::<Headers>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn headers_keep_wire_order_and_duplicates() {
        let mut h = Headers::new();
        assert!(h.is_empty());
        h.push("b", Bytes::from_static(b"1"));
        h.push("a", Bytes::from_static(b"2"));
        h.push("b", Bytes::from_static(b"3"));
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "a", "b"]);
        assert_eq!(h[2].1, Bytes::from_static(b"3"));
        assert_eq!(Headers::from(Vec::new()), Headers::new());
        let v = vec![("x".to_string(), Bytes::from_static(b"y"))];
        assert_eq!(Headers::from(v.clone()), v);
    }
}
