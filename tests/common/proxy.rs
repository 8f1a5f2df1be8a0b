//! A loopback TCP relay between Kafka clients and one broker, which can lose
//! acknowledgements on purpose.
//!
//! The broker is started with `KAFKA_ADVERTISED_PORT` set to the relay's
//! port, so every connection a client opens (bootstrap, and the leaders and
//! coordinators Metadata names) comes through here. The relay reads whole
//! Kafka frames (4-byte big-endian length, then the body) in both directions;
//! a request body starts with api_key (i16), api_version (i16) and
//! correlation_id (i32), a response body with the correlation_id.
//!
//! [`Proxy::lose_acks_of`] arms it: the Nth Produce request (api key 0)
//! counted from then on still reaches the broker, which writes it, but its
//! response is never relayed: the relay closes both sockets the moment that
//! response arrives. The client sees a connection lost with a write in
//! flight, the case where a retry without idempotence writes a batch twice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Kafka's api key of Produce.
const PRODUCE: i16 = 0;

/// Frames larger than this are not Kafka (Kafka's own cap is 100 MiB).
const MAX_FRAME: usize = 200 << 20;

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
    /// Both sockets of every open connection, to close them on drop.
    open: Mutex<HashMap<u64, (TcpStream, TcpStream)>>,
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

    /// Disarms the relay: nothing more is dropped.
    pub fn disarm(&self) {
        self.shared.doomed.lock().unwrap().clear();
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
        for (client, broker) in self.shared.open.lock().unwrap().values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = broker.shutdown(Shutdown::Both);
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

/// Relays one connection until either side closes it or its ack is dropped.
fn relay(id: u64, client: TcpStream, broker_port: u16, shared: &Arc<Shared>) {
    let Ok(broker) = TcpStream::connect(("127.0.0.1", broker_port)) else {
        return; // dropping `client` hangs up on it
    };
    let _ = client.set_nodelay(true);
    let _ = broker.set_nodelay(true);
    let clones = || Some((client.try_clone().ok()?, broker.try_clone().ok()?));
    let (Some(registered), Some((client_in, broker_out)), Some((client_out, broker_in))) =
        (clones(), clones(), clones())
    else {
        return;
    };
    shared.open.lock().unwrap().insert(id, registered);
    // Correlation ids of this connection whose responses are withheld.
    let withheld = Arc::new(Mutex::new(HashSet::<i32>::new()));

    let responses = {
        let (shared, withheld) = (Arc::clone(shared), Arc::clone(&withheld));
        std::thread::spawn(move || {
            let _ = relay_responses(broker_in, client_out, &withheld, &shared);
        })
    };
    let _ = relay_requests(client_in, broker_out, &withheld, shared);
    let _ = client.shutdown(Shutdown::Both);
    let _ = broker.shutdown(Shutdown::Both);
    let _ = responses.join();
    shared.open.lock().unwrap().remove(&id);
}

/// Client → broker: counts Produce requests and marks the doomed ones
/// before forwarding them (so their response cannot overtake the mark).
fn relay_requests(
    mut from: TcpStream,
    mut to: TcpStream,
    withheld: &Mutex<HashSet<i32>>,
    shared: &Shared,
) -> io::Result<()> {
    loop {
        let frame = read_frame(&mut from)?;
        if frame.len() >= 12 {
            let api_key = i16::from_be_bytes([frame[4], frame[5]]);
            let correlation_id = i32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
            if api_key == PRODUCE {
                let nth = shared.produce_requests.fetch_add(1, Ordering::SeqCst) + 1;
                if shared.doomed.lock().unwrap().remove(&nth) {
                    withheld.lock().unwrap().insert(correlation_id);
                }
            }
        }
        to.write_all(&frame)?;
    }
}

/// Broker → client: relays responses until a withheld one arrives, then
/// closes both sockets without relaying it.
fn relay_responses(
    mut from: TcpStream,
    mut to: TcpStream,
    withheld: &Mutex<HashSet<i32>>,
    shared: &Shared,
) -> io::Result<()> {
    loop {
        let frame = read_frame(&mut from)?;
        if frame.len() >= 8 {
            let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            if withheld.lock().unwrap().remove(&correlation_id) {
                shared.acks_dropped.fetch_add(1, Ordering::SeqCst);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        to.write_all(&frame)?;
    }
}

/// One whole frame, its 4-byte length prefix included.
fn read_frame(from: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len)?;
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
    Ok(frame)
}
