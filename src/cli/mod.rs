//! What both binaries share around the library: logging set-up, signals, and
//! turning a result into one line and an exit code.

pub mod consumer;
pub mod producer;

use std::future::Future;

use crate::config::{CommandLine, Tool};
use crate::error::{EXIT_OK, Error, Result};
use crate::metrics::MetricsServer;

/// The allocator line of [`LONG_VERSION`] (see `ALLOCATOR` in lib.rs).
#[cfg(all(target_env = "musl", feature = "musl-dlmalloc"))]
macro_rules! allocator {
    () => {
        "dlmalloc (pure Rust; feature musl-dlmalloc)"
    };
}
#[cfg(not(all(target_env = "musl", feature = "musl-dlmalloc")))]
macro_rules! allocator {
    () => {
        "the system's"
    };
}

/// What `-V` prints after the binary's name: the crate version and the git
/// commit it was built from (`unknown` outside a git checkout; see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MYKAFKAMS_GIT_COMMIT"),
    ")"
);

/// What `--version` prints after the binary's name: [`VERSION`], then the
/// target, the codecs and the security mechanisms built in (all of them,
/// always: every codec and mechanism is pure Rust and there is nothing to
/// opt into), and the global allocator.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit:    ",
    env!("MYKAFKAMS_GIT_COMMIT"),
    "\ntarget:    ",
    env!("MYKAFKAMS_TARGET"),
    "\ncodecs:    gzip, snappy, lz4, zstd (produce and fetch)",
    "\nsecurity:  TLS 1.2/1.3 (rustls, ring), SASL PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER",
    "\nallocator: ",
    allocator!(),
);

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

/// Parses the command line of `tool`: folds `--config FILE` and `-X
/// key=value` into flags ([`crate::config::fold`]), prints its warnings, then
/// lets clap parse the result with "a later flag overrides an earlier one".
/// `--help` and `--version` print and exit 0; any mistake prints one line
/// (`error: ...` plus a pointer to `--help`) and exits with
/// [`EXIT_USAGE`](crate::error::EXIT_USAGE), instead of clap's multi-line report.
pub fn parse_command_line<T: clap::Parser>(tool: Tool) -> (T, CommandLine) {
    let command_line = match crate::config::fold(std::env::args_os().collect(), tool) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    };
    for w in &command_line.warnings {
        eprintln!("warning: {w}");
    }
    (parse_from(&command_line.argv), command_line)
}

/// Parses the process arguments as they are (no `--config`/`-X`), as
/// [`parse_command_line`] does otherwise: for the demo.
pub fn parse_args<T: clap::Parser>() -> T {
    parse_from(&std::env::args_os().collect::<Vec<_>>())
}

/// clap with "a later flag overrides an earlier one", and its errors as one line.
fn parse_from<T: clap::Parser>(argv: &[std::ffi::OsString]) -> T {
    let bin = std::path::Path::new(argv.first().map_or("command".as_ref(), |a| a.as_os_str()))
        .file_name()
        .map_or_else(|| "command".into(), |n| n.to_string_lossy().into_owned());
    let parsed = T::command()
        .args_override_self(true)
        .try_get_matches_from(argv)
        .and_then(|m| T::from_arg_matches(&m));
    match parsed {
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
                _ => first_line(&e),
            };
            eprintln!("error: {first} (see {bin} --help)");
            std::process::exit(crate::error::EXIT_USAGE);
        }
    }
}

/// Reads Kafka `properties` as `-X` on `tool`'s command line would (same
/// names, checks and messages), without the environment, into `T`; the
/// matches tell which options the properties set (by clap id). `positional`
/// fills required positional arguments, which properties never set.
pub(crate) fn parse_properties<T: clap::Parser>(
    properties: &[(String, String)],
    tool: Tool,
    positional: &[&str],
) -> Result<(T, clap::ArgMatches)> {
    let mut raw = vec![std::ffi::OsString::from("mykafkams")];
    for (k, v) in properties {
        raw.push("-X".into());
        raw.push(format!("{k}={v}").into());
    }
    raw.extend(positional.iter().map(std::ffi::OsString::from));
    let folded = crate::config::fold_with_env(raw, tool, &|_| None)?;
    for w in &folded.warnings {
        tracing::warn!("{w}");
    }
    let bad = |e: clap::Error| Error::Usage(format!("a property: {}", first_line(&e)));
    let matches = T::command()
        .mut_args(|a| a.env(None::<&str>))
        .args_override_self(true)
        .try_get_matches_from(&folded.argv)
        .map_err(bad)?;
    let args = T::from_arg_matches(&matches).map_err(bad)?;
    Ok((args, matches))
}

/// Whether the properties behind `matches` ([`parse_properties`]) set option `id`.
pub(crate) fn set_by(matches: &clap::ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// The first line of clap's report, without its `error: ` prefix.
fn first_line(e: &clap::Error) -> String {
    e.render()
        .to_string()
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string()
}

/// Starts the `--metrics-addr` endpoint, if asked for, serving `registry`,
/// and prints where (`<tool>: metrics on http://HOST:PORT/metrics`), so
/// port 0 is usable. Keep the server alive for the run: dropping it stops
/// serving.
pub async fn metrics_endpoint(
    tool: &str,
    addr: Option<&str>,
    registry: impl FnOnce() -> prometheus_client::registry::Registry,
) -> Result<Option<MetricsServer>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let server = crate::metrics::serve(addr, registry()).await?;
    eprintln!("{tool}: metrics on {}", server.url());
    Ok(Some(server))
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
