//! What both binaries share around the library: logging set-up, signals, and
//! turning a result into one line and an exit code.

pub mod consumer;
pub mod producer;

use std::future::Future;

use crate::error::{EXIT_OK, Error, Result};

/// Sends `tracing` output to stderr; the level comes from `RUST_LOG`
/// (default: warnings, plus this crate's info lines). rskafka's own retry
/// warnings are hidden by default: the error the user gets already says what
/// failed, once.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,rskafka=error,mykafkams=info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// Prints `error: <one line>` for a failure and returns the exit code to use.
pub fn report(result: Result<()>) -> i32 {
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Builds the tokio runtime, runs `main`, and exits with its code. A runtime
/// that cannot start is reported like any other error.
pub fn run<F>(main: impl FnOnce() -> F) -> !
where
    F: Future<Output = Result<()>>,
{
    init_logging();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let code = report(rt.block_on(main()));
            // Don't wait for blocking tasks: a read of an open stdin (the
            // producer stopped by a signal) would never return.
            rt.shutdown_background();
            code
        }
        Err(e) => report(Err(Error::io("starting the async runtime", e))),
    };
    std::process::exit(code)
}

/// SIGINT and SIGTERM, listened to from the moment [`Signals::install`]
/// returns (installing early means a signal that arrives during start-up is
/// not lost to the default handler, which would kill the process).
pub struct Signals {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers. Must run inside the tokio runtime.
    pub fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let err = |e| Error::io("installing signal handlers", e);
            Ok(Self {
                int: signal(SignalKind::interrupt()).map_err(err)?,
                term: signal(SignalKind::terminate()).map_err(err)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses the command line. `--help` and `--version` print and exit 0; any
/// other mistake prints one line (`error: ...` plus a pointer to `--help`) and
/// exits with [`EXIT_USAGE`](crate::error::EXIT_USAGE), instead of clap's
/// multi-line report.
pub fn parse_args<T: clap::Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            // --help / --version: clap's own output is what people expect.
            let _ = e.print();
            std::process::exit(EXIT_OK);
        }
        Err(e) => {
            let text = e.render().to_string();
            let usage = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Usage: "))
                .map(str::to_string);
            let first = match (e.kind(), usage) {
                // clap lists the missing names on later lines; the usage says it better.
                (clap::error::ErrorKind::MissingRequiredArgument, Some(u)) => {
                    format!("missing arguments; usage: {u}")
                }
                _ => text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
                    .to_string(),
            };
            let bin = std::env::args().next().unwrap_or_default();
            let bin = std::path::Path::new(&bin)
                .file_name()
                .map_or_else(|| "command".into(), |n| n.to_string_lossy().into_owned());
            eprintln!("error: {first} (see {bin} --help)");
            std::process::exit(crate::error::EXIT_USAGE);
        }
    }
}

/// Parses `key=value` (for `--header`).
pub fn parse_key_value(s: &str) -> std::result::Result<(String, Vec<u8>), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.as_bytes().to_vec())),
        _ => Err(format!("'{s}' is not key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_as_key_value() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), b"b=c".to_vec())
        );
        assert_eq!(parse_key_value("a=").unwrap(), ("a".into(), Vec::new()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=v").is_err());
    }
}
