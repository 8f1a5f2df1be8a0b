//! What both binaries share around the library: logging set-up, signals, and
//! turning a result into one line and an exit code.

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
        Ok(rt) => report(rt.block_on(main())),
        Err(e) => report(Err(Error::io("starting the async runtime", e))),
    };
    std::process::exit(code)
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
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
