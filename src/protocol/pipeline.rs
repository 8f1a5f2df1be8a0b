//! A connection with many requests in flight: what the producer needs to
//! keep a broker busy (Kafka answers the requests of one connection in the
//! order they were sent, so responses are matched to requests by position,
//! and checked by correlation id).
//!
//! [`Connection`] sends one request at a time, which suits the fetcher and
//! the group coordinator. [`Connection::into_pipeline`] hands its socket,
//! after the handshake and SASL, to two tasks: a writer that writes framed
//! requests as they are queued, and a reader that reads responses and
//! delivers each as a [`Reply`] on the owner's channel, tagged with the
//! token the owner gave the request.
//!
//! A pipeline is not re-authenticated (KIP-368): it reports
//! [`Pipeline::retire_at`], after which its owner sends nothing new on it and
//! opens another.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::HeaderVersion;
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::frame::{FrameError, encode_frame, read_frame, split_response_header};
use super::transport::Stream;
use super::{ApiRequest, Connection, ProtocolError};

/// The outcome of one pipelined request.
#[derive(Debug)]
pub struct Reply {
    /// The token given to [`Pipeline::send`].
    pub token: u64,
    /// The response body (header stripped), or why there is none. For a
    /// request sent without expecting a response, an empty body once it was
    /// written.
    pub result: Result<Bytes, ProtocolError>,
}

/// A request written, waiting for its response.
struct Pending {
    token: u64,
    correlation_id: i32,
    api: ApiKey,
    response_header_version: i16,
}

/// What the writer task writes; `written` asks for a [`Reply`] once the
/// frame is on the socket (requests the broker does not answer).
struct Outgoing {
    frame: Bytes,
    written: Option<u64>,
    api: ApiKey,
}

/// A connection with requests in flight; see the module docs. Dropping it
/// closes the socket; requests still in flight then get no reply, so the
/// owner fails them itself.
pub struct Pipeline {
    broker: String,
    client_id: Arc<str>,
    next_correlation_id: i32,
    pending: Arc<Mutex<VecDeque<Pending>>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    broken: Arc<AtomicBool>,
    retire_at: Option<Instant>,
    tasks: [JoinHandle<()>; 2],
    versions: std::collections::HashMap<i16, super::VersionRange>,
}

impl Connection {
    /// Turns this connection (handshake and SASL done) into a [`Pipeline`]
    /// whose replies arrive on `replies`. Fails if the connection is already
    /// broken.
    pub fn into_pipeline(
        self,
        replies: mpsc::UnboundedSender<Reply>,
    ) -> Result<Pipeline, ProtocolError> {
        let wire = self.wire.into_inner();
        let Some(stream) = wire.stream else {
            return Err(ProtocolError::Broken {
                broker: self.broker,
            });
        };
        let (read, write) = tokio::io::split(stream);
        let pending = Arc::new(Mutex::new(VecDeque::new()));
        let broken = Arc::new(AtomicBool::new(false));
        let (outgoing, queue) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write_loop(
            write,
            queue,
            replies.clone(),
            self.broker.clone(),
            Arc::clone(&broken),
        ));
        let reader = tokio::spawn(read_loop(
            read,
            Arc::clone(&pending),
            replies,
            self.broker.clone(),
            self.config.max_response_bytes,
            Arc::clone(&broken),
        ));
        Ok(Pipeline {
            broker: self.broker,
            client_id: self.config.client_id,
            next_correlation_id: wire.next_correlation_id,
            pending,
            outgoing,
            broken,
            retire_at: wire.reauthenticate_at,
            tasks: [writer, reader],
            versions: self.broker_versions,
        })
    }
}

impl Pipeline {
    /// When the broker's SASL session ends (KIP-368): send nothing new on
    /// this pipeline after this moment.
    pub fn retire_at(&self) -> Option<Instant> {
        self.retire_at
    }

    /// True once reading or writing failed; every request in flight got an
    /// error reply.
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// The highest version of `api` both sides support within `ours`.
    pub fn negotiate(&self, api: ApiKey, ours: super::VersionRange) -> Result<i16, ProtocolError> {
        let theirs = self.versions.get(&(api as i16)).copied();
        match theirs.map(|t| t.intersect(&ours)) {
            Some(common) if !common.is_empty() => Ok(common.max),
            _ => Err(ProtocolError::UnsupportedVersion {
                broker: self.broker.clone(),
                api,
                ours,
                theirs,
            }),
        }
    }

    /// Queues `request` at `version`; its reply arrives tagged `token`.
    /// With `expect_response` false (a produce with acks=0) the reply is an
    /// empty body as soon as the request is written. `size_hint` (bytes)
    /// sizes the frame buffer so that large requests are not regrown.
    pub fn send<R: ApiRequest>(
        &mut self,
        token: u64,
        request: &R,
        version: i16,
        expect_response: bool,
        size_hint: usize,
    ) -> Result<(), ProtocolError> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let frame = encode_frame(
            R::KEY,
            version,
            R::header_version(version),
            correlation_id,
            &self.client_id,
            size_hint,
            |buf: &mut BytesMut| request.encode(buf, version).map_err(|e| e.to_string()),
        )
        .map_err(|detail| ProtocolError::Encode {
            broker: self.broker.clone(),
            api: R::KEY,
            version,
            detail,
        })?;
        if expect_response {
            // Queued before the frame is written, so the reader always finds it.
            self.pending.lock().push_back(Pending {
                token,
                correlation_id,
                api: R::KEY,
                response_header_version: R::Response::header_version(version),
            });
        }
        let outgoing = Outgoing {
            frame,
            written: (!expect_response).then_some(token),
            api: R::KEY,
        };
        self.outgoing
            .send(outgoing)
            .map_err(|_| ProtocolError::Broken {
                broker: self.broker.clone(),
            })
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn write_loop(
    mut write: WriteHalf<Stream>,
    mut queue: mpsc::UnboundedReceiver<Outgoing>,
    replies: mpsc::UnboundedSender<Reply>,
    broker: String,
    broken: Arc<AtomicBool>,
) {
    while let Some(first) = queue.recv().await {
        // Write what is queued together: one flush per burst, not per request.
        let mut burst = vec![first];
        while let Ok(more) = queue.try_recv() {
            burst.push(more);
        }
        let mut failed = None;
        for o in &burst {
            if let Err(e) = write.write_all(&o.frame).await {
                failed = Some((o.api, e));
                break;
            }
        }
        if failed.is_none()
            && let Err(e) = write.flush().await
        {
            failed = Some((burst[0].api, e));
        }
        if let Some((api, source)) = failed {
            broken.store(true, Ordering::Relaxed);
            // The reader fails the requests waiting for responses; answer
            // those that expected none here.
            let kind = source.kind();
            queue.close();
            let mut unanswered = burst;
            while let Ok(more) = queue.try_recv() {
                unanswered.push(more);
            }
            for o in unanswered {
                if let Some(token) = o.written {
                    let _ = replies.send(Reply {
                        token,
                        result: Err(io_error(&broker, api, io::Error::from(kind))),
                    });
                }
            }
            let _ = write.shutdown().await;
            return;
        }
        for o in burst {
            if let Some(token) = o.written {
                let _ = replies.send(Reply {
                    token,
                    result: Ok(Bytes::new()),
                });
            }
        }
    }
}

async fn read_loop(
    mut read: ReadHalf<Stream>,
    pending: Arc<Mutex<VecDeque<Pending>>>,
    replies: mpsc::UnboundedSender<Reply>,
    broker: String,
    max_response_bytes: usize,
    broken: Arc<AtomicBool>,
) {
    loop {
        let frame = read_frame(&mut read, max_response_bytes).await;
        let next = pending.lock().pop_front();
        let failure = match (frame, next) {
            (Ok(body), Some(p)) => {
                match split_response_header(body, p.response_header_version, p.correlation_id) {
                    Ok(body) => {
                        let _ = replies.send(Reply {
                            token: p.token,
                            result: Ok(body),
                        });
                        continue;
                    }
                    Err(detail) => {
                        let api = p.api;
                        Some((
                            p,
                            ProtocolError::Decode {
                                broker: broker.clone(),
                                api,
                                version: -1,
                                detail,
                            },
                        ))
                    }
                }
            }
            (Ok(_), None) => None,
            (Err(e), Some(p)) => {
                let err = match e {
                    FrameError::Io(source) => io_error(&broker, p.api, source),
                    FrameError::Bad(detail) => ProtocolError::Decode {
                        broker: broker.clone(),
                        api: p.api,
                        version: -1,
                        detail,
                    },
                };
                Some((p, err))
            }
            // Nothing was waiting: an idle connection closed (or a response
            // nobody asked for, which means the stream is out of step).
            (Err(_), None) => None,
        };
        broken.store(true, Ordering::Relaxed);
        // The failed request and every one behind it get the same error.
        // The failed request gets its own error; every one behind it is
        // aborted with it.
        let rest: Vec<Pending> = pending.lock().drain(..).collect();
        let mut cause = None;
        if let Some((p, err)) = failure {
            cause = Some(err.to_string());
            let _ = replies.send(Reply {
                token: p.token,
                result: Err(err),
            });
        }
        for q in rest {
            let source = match &cause {
                Some(text) => io::Error::new(io::ErrorKind::ConnectionAborted, text.clone()),
                None => io::Error::from(io::ErrorKind::ConnectionAborted),
            };
            let _ = replies.send(Reply {
                token: q.token,
                result: Err(io_error(&broker, q.api, source)),
            });
        }
        return;
    }
}

fn io_error(broker: &str, api: ApiKey, source: io::Error) -> ProtocolError {
    ProtocolError::Io {
        broker: broker.to_string(),
        api,
        source,
    }
}
