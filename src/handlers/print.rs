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

use parking_lot::Mutex;

use super::json::{json_len_hint, write_i64, write_json};
use crate::copy::put_short;
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

    fn buffers_output(&self) -> bool {
        true
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
            put_short(out, msg.value.as_deref().unwrap_or_default());
        }
        Format::Text => {
            write_i64(i64::from(msg.partition), out);
            out.push(b'\t');
            write_i64(msg.offset, out);
            out.push(b'\t');
            put_short(out, msg.key.as_deref().unwrap_or_default());
            out.push(b'\t');
            put_short(out, msg.value.as_deref().unwrap_or_default());
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
            headers: vec![("h".into(), Bytes::from_static(b"v"))].into(),
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
