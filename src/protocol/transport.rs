//! How bytes reach a broker: a TCP stream, wrapped in TLS when the security
//! protocol says so. [`Stream`] hides which, so framing and SASL above it
//! are written once.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::ProtocolError;
use super::tls::explain_handshake_error;

/// A connected socket to one broker, plain or TLS.
pub enum Stream {
    /// `PLAINTEXT` and `SASL_PLAINTEXT`.
    Plain(TcpStream),
    /// `SSL` and `SASL_SSL`.
    Tls(Box<TlsStream<TcpStream>>),
}

/// The host part of `host:port` (IPv6 brackets removed): the name the
/// broker's certificate must carry, and the SNI we send.
pub fn host_of(broker: &str) -> &str {
    let host = broker.rsplit_once(':').map_or(broker, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Opens a TCP connection to `broker` and, with `tls`, completes the TLS
/// handshake, all within `timeout`.
pub async fn open(
    broker: &str,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<Stream, ProtocolError> {
    let connect = async {
        let tcp = TcpStream::connect(broker)
            .await
            .map_err(|source| ProtocolError::Connect {
                broker: broker.to_string(),
                source,
            })?;
        // Group requests are tiny; don't let Nagle delay them.
        let _ = tcp.set_nodelay(true);
        let Some(config) = tls else {
            return Ok(Stream::Plain(tcp));
        };
        let host = host_of(broker);
        // A DNS name gets SNI and a name check; an IP literal is checked
        // against the certificate's IP addresses (no SNI for IPs, per RFC 6066).
        let name = ServerName::try_from(host.to_string()).map_err(|_| ProtocolError::Security {
            broker: broker.to_string(),
            detail: format!("'{host}' is not a valid host name for TLS"),
        })?;
        let connector = TlsConnector::from(config.clone());
        match connector.connect(name, tcp).await {
            Ok(stream) => Ok(Stream::Tls(Box::new(stream))),
            // A hang-up without a TLS alert: most likely no TLS listener,
            // but a restarting broker looks the same; retried as lost.
            Err(e)
                if !e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
                    && matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
            {
                Err(ProtocolError::ClosedEarly {
                    broker: broker.to_string(),
                    hint: "during the TLS handshake: the port does not speak TLS (use security.protocol=PLAINTEXT or SASL_PLAINTEXT there, or the broker's TLS port)",
                })
            }
            Err(e) => Err(ProtocolError::Security {
                broker: broker.to_string(),
                detail: explain_handshake_error(host, &e),
            }),
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(ProtocolError::ConnectTimeout {
            broker: broker.to_string(),
            after: timeout,
        }),
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_what_the_certificate_must_name() {
        assert_eq!(host_of("localhost:9094"), "localhost");
        assert_eq!(host_of("kafka-1.example.com:9093"), "kafka-1.example.com");
        assert_eq!(host_of("[::1]:9094"), "::1");
        assert_eq!(host_of("127.0.0.1:9094"), "127.0.0.1");
    }
}
