//! `--handler print`: one line per message on stdout, flushed before the
//! message counts as finished, so `consumer ... > file` loses no line that was
//! committed, even on SIGKILL.

use std::io::Write;
use std::str::FromStr;

use parking_lot::Mutex;

use super::json::{json_len_hint, write_i64, write_json};
use crate::message::Message;
use crate::pool::{Handler, HandlerError};

/// How a message is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// The value alone, as the bytes arrived (like `kafka-console-consumer`).
    #[default]
    Value,
    /// `partition<TAB>offset<TAB>key<TAB>value`; a missing key or value is empty.
    Text,
    /// One JSON object per line: `topic`, `partition`, `offset`, `timestamp`,
    /// `key`, `value`, `headers`. Byte strings that are valid UTF-8 are JSON
    /// strings; any other bytes become `{"base64": "..."}`; absent is `null`.
    Json,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "value" => Ok(Self::Value),
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown format '{other}' (value, text, json)")),
        }
    }
}

/// Writes messages to a sink (stdout by default), one line each.
///
/// Guarantee: `handle` returns `Ok` only after the line was written and the
/// sink flushed; a write error fails the message (it is not marked finished).
pub struct PrintHandler<W: Write + Send + 'static = std::io::Stdout> {
    format: Format,
    out: Mutex<W>,
}

impl PrintHandler<std::io::Stdout> {
    /// A handler printing to the process's stdout.
    pub fn stdout(format: Format) -> Self {
        Self::new(format, std::io::stdout())
    }
}

impl<W: Write + Send + 'static> PrintHandler<W> {
    /// A handler printing to `out`.
    pub fn new(format: Format, out: W) -> Self {
        Self {
            format,
            out: Mutex::new(out),
        }
    }

    /// Consumes the handler, returning the sink (for tests).
    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }
}

impl<W: Write + Send + 'static> Handler for PrintHandler<W> {
    fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
        // Format outside the lock: lanes only serialise on the write itself.
        let line = render(self.format, msg);
        let mut out = self.out.lock();
        out.write_all(&line)
            .and_then(|()| out.flush())
            .map_err(|e| HandlerError::new(format!("writing to stdout: {e}")))
    }
}

/// The line for `msg` in `format`, newline included, in a buffer of its own.
///
/// A thin wrapper around [`render_into`]; prefer that one with a reused
/// buffer on a hot path.
pub fn render(format: Format, msg: &Message) -> Vec<u8> {
    // Sized for the whole line: a regrowth costs as much as the rendering.
    let capacity = match format {
        Format::Json => json_len_hint(msg) + 1,
        Format::Value | Format::Text => {
            64 + msg.key.as_ref().map_or(0, |k| k.len()) + msg.value.as_ref().map_or(0, |v| v.len())
        }
    };
    let mut line = Vec::with_capacity(capacity);
    render_into(format, msg, &mut line);
    line
}

/// Appends the line for `msg` in `format`, newline included, to `out`
/// (whatever `out` already holds stays in front of it). Allocates nothing
/// unless `out` has to grow.
pub fn render_into(format: Format, msg: &Message, out: &mut Vec<u8>) {
    match format {
        Format::Value => {
            out.extend_from_slice(msg.value.as_deref().unwrap_or_default());
        }
        Format::Text => {
            write_i64(i64::from(msg.partition), out);
            out.push(b'\t');
            write_i64(msg.offset, out);
            out.push(b'\t');
            out.extend_from_slice(msg.key.as_deref().unwrap_or_default());
            out.push(b'\t');
            out.extend_from_slice(msg.value.as_deref().unwrap_or_default());
        }
        Format::Json => write_json(msg, out),
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn msg(key: Option<&[u8]>, value: Option<&[u8]>) -> Message {
        Message {
            topic: Arc::from("t"),
            partition: 2,
            offset: 17,
            key: key.map(Bytes::copy_from_slice),
            value: value.map(Bytes::copy_from_slice),
            timestamp_ms: 1_700_000_000_000,
            headers: vec![("h".into(), Bytes::from_static(b"v"))],
        }
    }

    #[test]
    fn value_and_text_formats() {
        let m = msg(Some(b"k1"), Some(b"hello"));
        assert_eq!(render(Format::Value, &m), b"hello\n");
        assert_eq!(render(Format::Text, &m), b"2\t17\tk1\thello\n");
        assert_eq!(render(Format::Text, &msg(None, None)), b"2\t17\t\t\n");
    }

    #[test]
    fn render_into_appends_the_line_render_returns() {
        let m = msg(Some(b"k1"), Some(&[b'"', 0xff]));
        for format in [Format::Value, Format::Text, Format::Json] {
            let mut out = b"earlier line\n".to_vec();
            render_into(format, &m, &mut out);
            assert_eq!(&out[..13], b"earlier line\n");
            assert_eq!(out[13..], render(format, &m)[..], "{format:?}");
        }
        let mut m = msg(None, Some(b"v"));
        m.partition = -1;
        m.offset = i64::MIN;
        assert_eq!(
            render(Format::Text, &m),
            format!("-1\t{}\t\tv\n", i64::MIN).into_bytes()
        );
    }

    #[test]
    fn json_escapes_text_and_base64s_binary() {
        let m = msg(Some(&[0xff, 0x00]), Some(b"say \"hi\"\n"));
        let line = render(Format::Json, &m);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["topic"], "t");
        assert_eq!(v["partition"], 2);
        assert_eq!(v["offset"], 17);
        assert_eq!(v["timestamp"], 1_700_000_000_000i64);
        assert_eq!(v["key"]["base64"], "/wA=");
        assert_eq!(v["value"], "say \"hi\"\n");
        assert_eq!(v["headers"]["h"], "v");
        let v: serde_json::Value =
            serde_json::from_slice(&render(Format::Json, &msg(None, None))).unwrap();
        assert!(v["key"].is_null() && v["value"].is_null());
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "closed",
            ))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_fails_the_message() {
        let h = PrintHandler::new(Format::Value, Broken);
        assert!(h.handle(&msg(None, Some(b"x"))).is_err());
        let h = PrintHandler::new(Format::Value, Vec::new());
        h.handle(&msg(None, Some(b"x"))).unwrap();
        assert_eq!(h.into_inner(), b"x\n");
    }
}
