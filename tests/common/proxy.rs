//! A loopback TCP relay between Kafka clients and one broker, which can lose
//! acknowledgements and break connections on purpose.
//!
//! The broker is started with `KAFKA_ADVERTISED_PORT` set to the relay's
//! port, so every connection a client opens (bootstrap, and the leaders and
//! coordinators Metadata names) comes through here. The relay reads whole
//! Kafka frames (4-byte big-endian length, then the body) in both directions;
//! a request body starts with api_key (i16), api_version (i16) and
//! correlation_id (i32), a response body with the correlation_id. An end of
//! stream from one side is passed on to the other (a half-close), as TCP
//! through a router would.
//!
//! [`Proxy::lose_acks_of`] arms it: the Nth Produce request (api key 0)
//! counted from then on still reaches the broker, which writes it, but its
//! response is never relayed: the relay closes both sockets the moment that
//! response arrives. The client sees a connection lost with a write in
//! flight, the case where a retry without idempotence writes a batch twice.
//!
//! [`Proxy::arm`] injects one [`Fault`] into the connection that carries the
//! next request of some api keys: cut it (before the request reaches the
//! broker, or when its response comes back), stall it (relay no byte either
//! way for a while, then cut or resume), or half-close it toward the client
//! or the broker. [`Proxy::fired`] lists what was injected where.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Kafka's api key of Produce.
const PRODUCE: i16 = 0;

/// Frames larger than this are not Kafka (Kafka's own cap is 100 MiB).
const MAX_FRAME: usize = 200 << 20;

/// A side of a relayed connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    /// The Kafka client (our producer or consumer).
    Client,
    /// The broker.
    Broker,
}

/// One way to break a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// Close both sockets before the triggering request reaches the broker.
    CutAtRequest,
    /// Relay the request, then close both sockets when its response arrives
    /// instead of relaying it (the request was served; the client never learns).
    CutAtResponse,
    /// Relay no byte in either direction for this long (the triggering
    /// request included), then close both sockets (`cut`) or go on.
    Stall {
        /// How long nothing moves.
        pause: Duration,
        /// Whether the connection is closed when the stall ends.
        cut: bool,
    },
    /// Relay the request, then shut down writing toward one side: that side
    /// reads an end of stream while the connection is otherwise open.
    HalfClose(Side),
}

impl Fault {
    /// A short name for tables: `cut@request`, `stall->cut`, `half-close->client`...
    pub fn label(&self) -> &'static str {
        match self {
            Fault::CutAtRequest => "cut@request",
            Fault::CutAtResponse => "cut@response",
            Fault::Stall { cut: true, .. } => "stall->cut",
            Fault::Stall { cut: false, .. } => "stall->resume",
            Fault::HalfClose(Side::Client) => "half-close->client",
            Fault::HalfClose(Side::Broker) => "half-close->broker",
        }
    }
}

/// A fault the relay injected.
#[derive(Clone, Debug)]
pub struct Fired {
    /// The api key of the request that triggered it.
    pub api_key: i16,
    /// What was done.
    pub fault: Fault,
    /// When.
    pub at: Instant,
}

/// A fault waiting for its request.
struct Armed {
    api_keys: BTreeSet<i16>,
    fault: Fault,
}

/// The relay; it stops accepting and closes every connection when dropped.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    /// Produce requests seen since the last [`Proxy::lose_acks_of`].
    produce_requests: AtomicU64,
    /// Which of those (1-based) lose their response.
    doomed: Mutex<BTreeSet<u64>>,
    acks_dropped: AtomicU64,
    connections: AtomicU64,
    /// Every connection still open, to break them on drop.
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    /// Requests relayed per api key.
    requests: Mutex<BTreeMap<i16, u64>>,
    /// The fault [`Proxy::arm`] set, until a request triggers it.
    armed: Mutex<Option<Armed>>,
    /// Faults injected so far.
    fired: Mutex<Vec<Fired>>,
}

/// One relayed connection: both sockets, and whether it is stalled or cut.
struct Conn {
    client: TcpStream,
    broker: TcpStream,
    /// Nothing is written either way before this instant.
    stalled_until: Mutex<Option<Instant>>,
    wake: Condvar,
    cut: AtomicBool,
    /// Writing toward the client was shut down (a half-close): responses
    /// are dropped from then on, and the client decides when to close.
    client_write_closed: AtomicBool,
}

impl Conn {
    /// Closes both sockets; every thread of the connection ends.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.broker.shutdown(Shutdown::Both);
        self.wake.notify_all();
    }

    /// Waits out a stall; false if the connection was cut meanwhile.
    fn wait_unstalled(&self) -> bool {
        let mut until = self.stalled_until.lock().unwrap();
        loop {
            if self.cut.load(Ordering::SeqCst) {
                return false;
            }
            match *until {
                Some(t) if t > Instant::now() => {
                    let left = t.saturating_duration_since(Instant::now());
                    until = self.wake.wait_timeout(until, left).unwrap().0;
                }
                _ => return true,
            }
        }
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:`port` and relays each connection to the broker
    /// on 127.0.0.1:`broker_port`. A client that connects while the broker is
    /// down is hung up on, as the broker itself would be unreachable.
    pub fn start(port: u16, broker_port: u16) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("proxy cannot listen on 127.0.0.1:{port}: {e}"));
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-{port}"))
                .spawn(move || accept_loop(listener, broker_port, shared))
                .unwrap()
        };
        Proxy {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The relay's address, to give clients as their bootstrap broker.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Arms the relay: of the Produce requests seen from now on, those with
    /// the 1-based positions in `nth` reach the broker but lose their
    /// response. Resets the count of Produce requests.
    pub fn lose_acks_of(&self, nth: &[u64]) {
        let mut doomed = self.shared.doomed.lock().unwrap();
        *doomed = nth.iter().copied().collect();
        self.shared.produce_requests.store(0, Ordering::SeqCst);
    }

    /// Disarms the relay: nothing more is dropped or broken.
    pub fn disarm(&self) {
        self.shared.doomed.lock().unwrap().clear();
        self.shared.armed.lock().unwrap().take();
    }

    /// Responses to Produce requests withheld so far (one per lost
    /// acknowledgement; other requests in flight on that connection lose
    /// theirs too, uncounted).
    pub fn acks_dropped(&self) -> u64 {
        self.shared.acks_dropped.load(Ordering::SeqCst)
    }

    /// Produce requests relayed since the relay was last armed.
    pub fn produce_requests(&self) -> u64 {
        self.shared.produce_requests.load(Ordering::SeqCst)
    }

    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Arms one fault for the connection carrying the next request whose api
    /// key is in `api_keys` (any request if empty); replaces a fault armed
    /// before that has not fired.
    pub fn arm(&self, api_keys: &[i16], fault: Fault) {
        *self.shared.armed.lock().unwrap() = Some(Armed {
            api_keys: api_keys.iter().copied().collect(),
            fault,
        });
    }

    /// Whether the fault last armed is still waiting for its request.
    pub fn armed(&self) -> bool {
        self.shared.armed.lock().unwrap().is_some()
    }

    /// Faults injected so far, in order.
    pub fn fired(&self) -> Vec<Fired> {
        self.shared.fired.lock().unwrap().clone()
    }

    /// Requests relayed so far, per api key.
    pub fn requests(&self) -> BTreeMap<i16, u64> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ =
            TcpStream::connect_timeout(&([127, 0, 0, 1], self.port).into(), Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for conn in self.shared.open.lock().unwrap().values() {
            conn.cut();
        }
    }
}

fn accept_loop(listener: TcpListener, broker_port: u16, shared: Arc<Shared>) {
    for (id, client) in listener.incoming().enumerate() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || relay(id as u64, client, broker_port, &shared));
    }
}

/// Relays one connection until either side closes it or a fault breaks it.
fn relay(id: u64, client: TcpStream, broker_port: u16, shared: &Arc<Shared>) {
    let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)) else {
        return; // dropping `client` hangs up on it
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let clones = || Some((client.try_clone().ok()?, broker.try_clone().ok()?));
    let (Some((client_in, broker_out)), Some((client_out, broker_in))) = (clones(), clones())
    else {
        return;
    };
    let conn = Arc::new(Conn {
        client,
        broker,
        stalled_until: Mutex::new(None),
        wake: Condvar::new(),
        cut: AtomicBool::new(false),
        client_write_closed: AtomicBool::new(false),
    });
    shared.open.lock().unwrap().insert(id, Arc::clone(&conn));
    // Correlation ids of this connection whose responses are withheld.
    let withheld = Arc::new(Mutex::new(HashSet::<i32>::new()));

    let responses = {
        let (shared, withheld, conn) =
            (Arc::clone(shared), Arc::clone(&withheld), Arc::clone(&conn));
        std::thread::spawn(move || {
            match relay_responses(broker_in, client_out, &withheld, &shared, &conn) {
                // The broker closed: the client reads the end of stream too.
                Ok(()) => {
                    conn.client_write_closed.store(true, Ordering::SeqCst);
                    let _ = conn.client.shutdown(Shutdown::Write);
                }
                Err(_) => conn.cut(),
            }
        })
    };
    let _ = relay_requests(client_in, broker_out, &withheld, shared, &conn);
    conn.cut();
    let _ = responses.join();
    shared.open.lock().unwrap().remove(&id);
}

/// Client → broker: counts requests, marks the doomed Produce requests
/// before forwarding them (so their response cannot overtake the mark), and
/// injects the armed fault.
fn relay_requests(
    mut from: TcpStream,
    mut to: TcpStream,
    withheld: &Mutex<HashSet<i32>>,
    shared: &Shared,
    conn: &Conn,
) -> io::Result<()> {
    loop {
        let Some(frame) = read_frame(&mut from)? else {
            return Ok(()); // the client closed
        };
        let mut after: Option<Fault> = None;
        if frame.len() >= 12 {
            let api_key = i16::from_be_bytes([frame[4], frame[5]]);
            let correlation_id = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
            *shared.requests.lock().unwrap().entry(api_key).or_default() += 1;
            if api_key == PRODUCE {
                let nth = shared.produce_requests.fetch_add(1, Ordering::SeqCst) + 1;
                if shared.doomed.lock().unwrap().remove(&nth) {
                    withheld.lock().unwrap().insert(correlation_id);
                }
            }
            let fault = {
                let mut armed = shared.armed.lock().unwrap();
                let hit = armed
                    .as_ref()
                    .is_some_and(|a| a.api_keys.is_empty() || a.api_keys.contains(&api_key));
                if hit {
                    armed.take().map(|a| a.fault)
                } else {
                    None
                }
            };
            if let Some(fault) = fault {
                shared.fired.lock().unwrap().push(Fired {
                    api_key,
                    fault,
                    at: Instant::now(),
                });
                match fault {
                    Fault::CutAtRequest => return Ok(()),
                    Fault::CutAtResponse => {
                        withheld.lock().unwrap().insert(correlation_id);
                    }
                    Fault::Stall { pause, cut } => {
                        *conn.stalled_until.lock().unwrap() = Some(Instant::now() + pause);
                        if !conn.wait_unstalled() || cut {
                            return Ok(());
                        }
                    }
                    Fault::HalfClose(_) => after = Some(fault),
                }
            }
        }
        if !conn.wait_unstalled() {
            return Ok(());
        }
        to.write_all(&frame)?;
        match after {
            Some(Fault::HalfClose(Side::Client)) => {
                conn.client_write_closed.store(true, Ordering::SeqCst);
                conn.client.shutdown(Shutdown::Write)?
            }
            Some(Fault::HalfClose(Side::Broker)) => conn.broker.shutdown(Shutdown::Write)?,
            _ => {}
        }
    }
}

/// Broker → client: relays responses (holding them through a stall) until
/// a withheld one arrives, then closes both sockets without relaying it.
/// `Ok` when the broker ended the stream.
fn relay_responses(
    mut from: TcpStream,
    mut to: TcpStream,
    withheld: &Mutex<HashSet<i32>>,
    shared: &Shared,
    conn: &Conn,
) -> io::Result<()> {
    loop {
        let Some(frame) = read_frame(&mut from)? else {
            return Ok(());
        };
        if frame.len() >= 8 {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if withheld.lock().unwrap().remove(&correlation_id) {
                shared.acks_dropped.fetch_add(1, Ordering::SeqCst);
                conn.cut();
                return Err(io::ErrorKind::ConnectionAborted.into());
            }
        }
        if !conn.wait_unstalled() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if !conn.client_write_closed.load(Ordering::SeqCst) {
            to.write_all(&frame)?;
        }
    }
}

/// One whole frame, its 4-byte length prefix included; `None` at a clean
/// end of stream (between frames).
fn read_frame(from: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match from.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    let n = i32::from_be_bytes(len);
    if n < 0 || n as usize > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a Kafka frame (length {n})"),
        ));
    }
    let mut frame = vec![0u8; 4 + n as usize];
    frame[..4].copy_from_slice(&len);
    from.read_exact(&mut frame[4..])?;
    Ok(Some(frame))
}
