//! Which broker's fetch task a partition goes to: one task (and one
//! connection) per leader, started when the first partition goes to it and
//! ended when it has none left or its connection fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::broker::{self, Dispatch, Settings};

/// A running broker task.
struct Handle {
    id: u64,
    inbox: mpsc::UnboundedSender<Dispatch>,
    task: JoinHandle<()>,
}

/// The broker fetch tasks of one consumer.
pub struct Router {
    settings: Arc<Settings>,
    brokers: Mutex<HashMap<String, Handle>>,
    next_id: AtomicU64,
    /// Tasks started so far (for tests and logs).
    started: AtomicU64,
}

impl Router {
    /// A router with no task yet.
    pub(crate) fn new(settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            settings: Arc::new(settings),
            brokers: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            started: AtomicU64::new(0),
        })
    }

    /// What the broker tasks share.
    pub(crate) fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings)
    }

    /// Hands a partition to the fetch task of the broker at `addr`
    /// ("host:port"), starting one if there is none. Must run inside a tokio
    /// runtime.
    pub(crate) fn dispatch(self: &Arc<Self>, addr: &str, d: Dispatch) {
        let mut brokers = self.brokers.lock();
        // Sent under the lock: a task leaving the map closes its inbox after
        // taking the lock, so nothing sent here is lost.
        let d = match brokers.get(addr) {
            Some(h) => match h.inbox.send(d) {
                Ok(()) => return,
                Err(mpsc::error::SendError(d)) => d,
            },
            None => d,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (inbox, rx) = mpsc::unbounded_channel();
        inbox.send(d).expect("the receiver is right here");
        let task = tokio::spawn(broker::run(addr.to_string(), id, rx, Arc::clone(self)));
        self.started.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(broker = addr, "fetch task starts");
        brokers.insert(addr.to_string(), Handle { id, inbox, task });
    }

    /// Takes a task out of the map (if it is still the one there).
    pub(crate) fn retire(&self, addr: &str, id: u64) {
        let mut brokers = self.brokers.lock();
        if brokers.get(addr).is_some_and(|h| h.id == id) {
            brokers.remove(addr);
        }
    }

    /// Broker tasks running now.
    pub fn brokers(&self) -> usize {
        self.brokers.lock().len()
    }

    /// Broker tasks started so far.
    pub fn tasks_started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Stops every broker task at once.
    pub fn shutdown(&self) {
        for (_, h) in self.brokers.lock().drain() {
            h.task.abort();
        }
    }
}
