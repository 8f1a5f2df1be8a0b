//! `--handler print`: one line per message on stdout, written before the
//! message counts as finished, so `consumer ... > file` loses no line that was
//! committed, even on SIGKILL.
//!
//! Lines are written in blocks (DESIGN rule 10): `handle` appends the line to
//! a buffer of the calling worker thread, and the pool's
//! [`flush`](crate::pool::Handler::flush) writes that buffer with one `write`
//! before it marks the block's messages finished. The pool flushes at least
//! every 1,024 messages, every millisecond, and whenever a worker runs out of
//! work, so a quiet topic's lines appear at once.

use std::cell::RefCell;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::Mutex;

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
/// Guarantee: a message's line is in the sink (written and flushed) before
/// [`flush`](Handler::flush) on the thread that handled it returns `Ok`,
/// which is when the pool marks it finished; a write error fails the block's
/// messages (they are not marked finished). Lines of one thread keep their
/// order, and so do a key's lines, as the pool flushes a key's block before
/// another thread may run that key.
pub struct PrintHandler<W: Write + Send + 'static = std::io::Stdout> {
    format: Format,
    out: Mutex<W>,
    /// Tells this handler's per-thread buffers from another's.
    id: usize,
}

// Each handler's unwritten lines on this thread, by handler id (a worker
// thread serves one pool, so this holds one entry in practice).
thread_local! {
    static BLOCKS: RefCell<Vec<(usize, Vec<u8>)>> = const { RefCell::new(Vec::new()) };
}

/// A buffer grown beyond this by one block is shrunk back after writing.
const KEEP_BUFFER: usize = 4 << 20;

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

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
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Consumes the handler, returning the sink (for tests).
    pub fn into_inner(self) -> W {
        self.out.into_inner()
    }

    /// Runs `f` on this thread's buffer for this handler.
    fn with_block<T>(&self, f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
        BLOCKS.with(|blocks| {
            let mut blocks = blocks.borrow_mut();
            let at = match blocks.iter().position(|(id, _)| *id == self.id) {
                Some(at) => at,
                None => {
                    blocks.push((self.id, Vec::with_capacity(64 << 10)));
                    blocks.len() - 1
                }
            };
            f(&mut blocks[at].1)
        })
    }
}

impl<W: Write + Send + 'static> Handler for PrintHandler<W> {
    fn handle(&self, msg: &Message) -> Result<(), HandlerError> {
        self.with_block(|block| render_into(self.format, msg, block));
        Ok(())
    }

    fn flush(&self) -> Result<(), HandlerError> {
        self.with_block(|block| {
            if block.is_empty() {
                return Ok(());
            }
            let mut out = self.out.lock();
            // Track what was written, so a retry after an error writes only
            // the rest (no line twice, none lost).
            let mut written = 0;
            let result = loop {
                if written == block.len() {
                    break out.flush();
                }
                match out.write(&block[written..]) {
                    Ok(0) => break Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            drop(out);
            block.drain(..written);
            if block.is_empty() && block.capacity() > KEEP_BUFFER {
                block.shrink_to(64 << 10);
            }
            result.map_err(|e| HandlerError::new(format!("writing to stdout: {e}")))
        })
    }
}

/// Appends the line for `msg` in `format`, newline included, to `out`.
pub fn render_into(format: Format, msg: &Message, out: &mut Vec<u8>) {
    match format {
        Format::Value => {
            out.extend_from_slice(msg.value.as_deref().unwrap_or_default());
            out.push(b'\n');
        }
        Format::Text => {
            let _ = write!(out, "{}\t{}\t", msg.partition, msg.offset);
            out.extend_from_slice(msg.key.as_deref().unwrap_or_default());
            out.push(b'\t');
            out.extend_from_slice(msg.value.as_deref().unwrap_or_default());
            out.push(b'\n');
        }
        Format::Json => out.extend_from_slice(&render(format, msg)),
    }
}

/// The line for `msg` in `format`, newline included.
pub fn render(format: Format, msg: &Message) -> Vec<u8> {
    let mut line = Vec::with_capacity(64 + msg.value.as_ref().map_or(0, |v| v.len()));
    match format {
        Format::Value => {
            line.extend_from_slice(msg.value.as_deref().unwrap_or_default());
        }
        Format::Text => {
            // Straight into the line buffer: no String per message.
            let _ = write!(line, "{}\t{}\t", msg.partition, msg.offset);
            line.extend_from_slice(msg.key.as_deref().unwrap_or_default());
            line.push(b'\t');
            line.extend_from_slice(msg.value.as_deref().unwrap_or_default());
        }
        Format::Json => {
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
            line = obj.to_string().into_bytes();
        }
    }
    line.push(b'\n');
    line
}

/// Bytes as JSON: a string when UTF-8, `{"base64": ...}` otherwise, `null` when absent.
fn bytes_json(b: Option<&[u8]>) -> serde_json::Value {
    match b {
        None => serde_json::Value::Null,
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => serde_json::Value::String(s.to_string()),
            Err(_) => serde_json::json!({ "base64": BASE64.encode(b) }),
        },
    }
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
    fn a_failed_write_fails_the_block() {
        let h = PrintHandler::new(Format::Value, Broken);
        h.handle(&msg(None, Some(b"x"))).unwrap();
        assert!(h.flush().is_err());
        let h = PrintHandler::new(Format::Value, Vec::new());
        h.handle(&msg(None, Some(b"x"))).unwrap();
        h.handle(&msg(None, Some(b"y"))).unwrap();
        h.flush().unwrap();
        assert_eq!(h.into_inner(), b"x\ny\n");
    }

    /// Writes one byte per call, failing every other call: a retried flush
    /// writes exactly the rest, so no line is doubled or lost.
    struct Flaky {
        out: Vec<u8>,
        calls: usize,
    }
    impl Write for Flaky {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.calls += 1;
            if self.calls % 2 == 0 {
                return Err(std::io::Error::other("flaky"));
            }
            self.out.push(b[0]);
            Ok(1)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_retried_flush_writes_only_the_rest() {
        let h = PrintHandler::new(
            Format::Value,
            Flaky {
                out: Vec::new(),
                calls: 0,
            },
        );
        h.handle(&msg(None, Some(b"abc"))).unwrap();
        let mut errors = 0;
        while h.flush().is_err() {
            errors += 1;
        }
        assert!(errors > 0);
        assert_eq!(h.into_inner().out, b"abc\n");
    }

    /// Two handlers on one thread keep separate blocks.
    #[test]
    fn blocks_are_per_handler() {
        let a = PrintHandler::new(Format::Value, Vec::new());
        let b = PrintHandler::new(Format::Value, Vec::new());
        a.handle(&msg(None, Some(b"a"))).unwrap();
        b.handle(&msg(None, Some(b"b"))).unwrap();
        a.flush().unwrap();
        b.flush().unwrap();
        assert_eq!(a.into_inner(), b"a\n");
        assert_eq!(b.into_inner(), b"b\n");
    }
}
