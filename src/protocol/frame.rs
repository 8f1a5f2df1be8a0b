//! Kafka's framing: a 4-byte big-endian length, then a request or response
//! header, then the body. Building request frames, reading response frames
//! (with a size limit and a clear word for a TLS peer) and checking response
//! headers live here, shared by the one-at-a-time [`super::Connection`] and
//! the [`super::pipeline`].

use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::transport::Stream;

/// Builds one request frame: 4-byte big-endian length, request header (at
/// `header_version`: v1 plain, v2 flexible), then the body.
pub(super) fn encode_frame(
    api: ApiKey,
    version: i16,
    header_version: i16,
    correlation_id: i32,
    client_id: &str,
    capacity: usize,
    encode_body: impl FnOnce(&mut BytesMut) -> Result<(), String>,
) -> Result<Bytes, String> {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_string(client_id.to_string())));
    let mut buf = BytesMut::with_capacity(capacity);
    buf.put_i32(0); // length placeholder, patched below
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("request header: {e}"))?;
    encode_body(&mut buf)?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| "request larger than 2 GiB".to_string())?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf.freeze())
}

/// Why reading (or writing) a frame failed.
pub(super) enum FrameError {
    /// The transport failed.
    Io(io::Error),
    /// The length prefix was impossible (negative, over the limit, or a TLS
    /// alert where a Kafka frame was expected).
    Bad(String),
}

/// Writes `frame` and reads one length-prefixed response frame (without its
/// length prefix): the one-request-at-a-time exchange of [`super::Connection`].
pub(super) async fn round_trip(
    stream: &mut Stream,
    frame: &[u8],
    max_response_bytes: usize,
) -> Result<Bytes, FrameError> {
    stream.write_all(frame).await.map_err(FrameError::Io)?;
    stream.flush().await.map_err(FrameError::Io)?;
    read_frame(stream, max_response_bytes).await
}

/// Reads one length-prefixed frame (without its prefix) of at most `max`
/// bytes: the reader of both [`super::Connection`] and the pipeline.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    read: &mut R,
    max: usize,
) -> Result<Bytes, FrameError> {
    let len = read.read_i32().await.map_err(FrameError::Io)?;
    // A TLS listener answers a plaintext request with a TLS alert record:
    // content type 21, version 3.x. No Kafka frame is that long.
    if let [0x15, 0x03, 0x00..=0x04, _] = len.to_be_bytes() {
        return Err(FrameError::Bad(
            "the broker answered with a TLS alert: this port speaks TLS, set security.protocol=SSL or SASL_SSL".into(),
        ));
    }
    let len = usize::try_from(len)
        .map_err(|_| FrameError::Bad(format!("negative response length {len}")))?;
    if len > max {
        return Err(FrameError::Bad(format!(
            "response of {len} bytes exceeds the {max}-byte limit"
        )));
    }
    let mut body = vec![0u8; len];
    read.read_exact(&mut body).await.map_err(FrameError::Io)?;
    Ok(Bytes::from(body))
}

/// Decodes the response header, checks it answers `correlation_id`, and
/// returns the remaining body.
pub(super) fn split_response_header(
    mut response: Bytes,
    header_version: i16,
    correlation_id: i32,
) -> Result<Bytes, String> {
    let header = ResponseHeader::decode(&mut response, header_version)
        .map_err(|e| format!("response header: {}", e.to_string().trim()))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "response correlation id {} does not match request {correlation_id}",
            header.correlation_id
        ));
    }
    Ok(response)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bytes::Buf;

    use crate::protocol::CLIENT_ID;

    /// A response frame body with a v0 header (correlation id only).
    pub(in crate::protocol) fn with_header_v0(correlation_id: i32, body: &[u8]) -> Vec<u8> {
        let mut v = correlation_id.to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frame_has_length_prefix_and_v1_header() {
        let frame = encode_frame(ApiKey::FindCoordinator, 2, 1, 7, CLIENT_ID, 256, |b| {
            b.put_slice(b"xy");
            Ok(())
        })
        .unwrap();
        let mut f = &frame[..];
        assert_eq!(f.get_i32() as usize, frame.len() - 4);
        assert_eq!(f.get_i16(), ApiKey::FindCoordinator as i16);
        assert_eq!(f.get_i16(), 2);
        assert_eq!(f.get_i32(), 7);
        assert_eq!(f.get_i16(), CLIENT_ID.len() as i16);
        assert_eq!(&f[..CLIENT_ID.len()], CLIENT_ID.as_bytes());
        assert_eq!(&f[CLIENT_ID.len()..], b"xy");
    }

    #[test]
    fn flexible_header_ends_with_empty_tag_buffer() {
        let frame =
            encode_frame(ApiKey::OffsetCommit, 9, 2, 1, CLIENT_ID, 256, |_| Ok(())).unwrap();
        // length + key + version + correlation + client id + tag count 0
        assert_eq!(frame.len(), 4 + 2 + 2 + 4 + 2 + CLIENT_ID.len() + 1);
        assert_eq!(*frame.last().unwrap(), 0);
    }

    #[test]
    fn response_header_correlation_is_checked() {
        let ok = split_response_header(Bytes::from(with_header_v0(5, b"rest")), 0, 5).unwrap();
        assert_eq!(&ok[..], b"rest");
        let err = split_response_header(Bytes::from(with_header_v0(6, b"")), 0, 5).unwrap_err();
        assert!(err.contains("correlation id 6"), "{err}");
        // Flexible header: correlation id then a tag-buffer count.
        let mut flex = with_header_v0(5, &[0]);
        flex.extend_from_slice(b"body");
        let ok = split_response_header(Bytes::from(flex), 1, 5).unwrap();
        assert_eq!(&ok[..], b"body");
        assert!(split_response_header(Bytes::from_static(&[0, 1]), 0, 5).is_err());
    }
}
