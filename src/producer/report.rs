//! The delivery report (`--report FILE`): one line per record, added as
//! each batch completes (through a 256 KiB buffer, so the file is complete
//! only once the producer has exited), so a script can tell exactly what
//! was written:
//!
//! ```text
//! <number>\t<partition>\t<offset>     acknowledged (offset -1 with acks=0)
//! <number>\terror\t<message>          not written
//! ```
//!
//! Numbers count records from 1 in the order they were sent (for the
//! `producer` binary: input lines). Lines appear in completion order.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// The open report file.
pub struct Report {
    out: Mutex<ReportFile>,
}

struct ReportFile {
    writer: BufWriter<File>,
    error: Option<std::io::Error>,
}

impl Report {
    /// Creates (truncates) the report at `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).map_err(|e| {
            Error::Usage(format!("cannot create report file {}: {e}", path.display()))
        })?;
        Ok(Self {
            out: Mutex::new(ReportFile {
                writer: BufWriter::with_capacity(256 * 1024, file),
                error: None,
            }),
        })
    }

    /// Records `numbers`, written at consecutive offsets from `base_offset`
    /// (`None`: offsets unknown, acks=0).
    pub fn written(&self, numbers: &[u64], partition: i32, base_offset: Option<i64>) {
        let mut out = self.out.lock();
        let mut line = String::with_capacity(48);
        for (i, n) in numbers.iter().enumerate() {
            let offset = base_offset.map_or(-1, |b| b + i as i64);
            line.clear();
            use std::fmt::Write as _;
            let _ = writeln!(line, "{n}\t{partition}\t{offset}");
            out.put(line.as_bytes());
        }
    }

    /// Records `numbers` as not written, with `error` (one line, tabs and
    /// newlines flattened).
    pub fn failed(&self, numbers: &[u64], error: &str) {
        let error: String = error
            .chars()
            .map(|c| if c == '\t' || c == '\n' { ' ' } else { c })
            .collect();
        let mut out = self.out.lock();
        for n in numbers {
            let line = format!("{n}\terror\t{error}\n");
            out.put(line.as_bytes());
        }
    }

    /// Flushes the file; reports the first write error, if any.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut out = self.out.lock();
        if let Some(e) = out.error.take() {
            return Err(e);
        }
        out.writer.flush()
    }
}

impl ReportFile {
    fn put(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.writer.write_all(bytes)
        {
            self.error = Some(e);
        }
    }
}
