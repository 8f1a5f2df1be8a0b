//! A small HTTP/1.1 responder for `--metrics-addr`: `GET /metrics` (or
//! `HEAD`) answers the registry in the Prometheus text format; any other
//! request gets 404. One request per connection (`Connection: close`), a
//! request head of at most 8 KiB read within 5 s: enough for a scraper,
//! nothing a slow or hostile client can hold open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Largest request head we read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request and read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running endpoint; dropping it stops listening.
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address actually bound (the port chosen for `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to scrape, for the start-up line.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `addr` (`HOST:PORT`) and serves `registry` until the returned
/// server is dropped. Must run inside the tokio runtime. An address that
/// does not parse or resolve, or one that cannot be bound (port in use, no
/// permission), is a usage error naming the address.
pub async fn serve(addr: &str, registry: Registry) -> Result<MetricsServer> {
    let bad = |why: String| {
        Error::Usage(format!(
            "--metrics-addr '{addr}': {why}; give HOST:PORT, e.g. 127.0.0.1:9100 (port 0 picks a free one)"
        ))
    };
    let candidates: Vec<SocketAddr> = match tokio::net::lookup_host(addr).await {
        Ok(a) => a.collect(),
        Err(e) => return Err(bad(format!("not a usable address ({e})"))),
    };
    let mut last = None;
    let mut listener = None;
    for a in candidates {
        match TcpListener::bind(a).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let listener = match (listener, last) {
        (Some(l), _) => l,
        (None, Some(e)) => return Err(bad(format!("cannot listen there ({e})"))),
        (None, None) => return Err(bad("the host resolves to no address".into())),
    };
    let bound = listener
        .local_addr()
        .map_err(|e| bad(format!("cannot listen there ({e})")))?;
    let registry = Arc::new(registry);
    let task = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let registry = Arc::clone(&registry);
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(CLIENT_TIMEOUT, answer(stream, &registry)).await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: pause, keep serving.
                    tracing::debug!("metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(MetricsServer { addr: bound, task })
}

/// Reads one request head and writes the answer.
async fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                b"",
                true,
            )
            .await;
        }
    }
    let request_line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let request_line = String::from_utf8_lossy(request_line);
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if !matches!(method, "GET" | "HEAD") || path != "/metrics" {
        return respond(
            &mut stream,
            "404 Not Found",
            "text/plain; charset=utf-8",
            b"not found: GET /metrics\n",
            method != "HEAD",
        )
        .await;
    }
    let mut body = String::with_capacity(8 * 1024);
    if let Err(e) = prometheus_text::encode(&mut body, registry) {
        tracing::warn!("metrics endpoint: encoding failed: {e}");
        return respond(
            &mut stream,
            "500 Internal Server Error",
            "text/plain; charset=utf-8",
            b"encoding the metrics failed\n",
            method != "HEAD",
        )
        .await;
    }
    respond(
        &mut stream,
        "200 OK",
        prometheus_text::CONTENT_TYPE,
        body.as_bytes(),
        method != "HEAD",
    )
    .await
}

/// Writes a complete response and closes the connection.
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
    with_body: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        out.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if with_body {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_and_404_for_anything_else() {
        let mut r = Registry::default();
        let c: prometheus_client::metrics::counter::Counter = Default::default();
        c.inc();
        r.register("demo_things", "Things.", c);
        let server = serve("127.0.0.1:0", r).await.unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        let ok = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("\ndemo_things_total 1\n"), "{ok}");
        for req in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET /metricsx HTTP/1.1\r\n\r\n",
            "POST /metrics HTTP/1.1\r\n\r\n",
        ] {
            let r = get(addr, req).await;
            assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{req}: {r}");
        }
    }

    #[tokio::test]
    async fn a_bad_address_or_a_port_in_use_is_a_usage_error() {
        for bad in ["nonsense", "127.0.0.1", "127.0.0.1:99999"] {
            let e = serve(bad, Registry::default()).await.err().unwrap();
            assert_eq!(e.exit_code(), crate::error::EXIT_USAGE, "{e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = serve(&addr, Registry::default()).await.err().unwrap();
        assert_eq!(e.exit_code(), crate::error::EXIT_USAGE);
        assert!(e.to_string().contains("cannot listen"), "{e}");
    }
}
