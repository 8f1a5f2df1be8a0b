//! How each record ended, told to whoever waits for it: the report file
//! (the CLI's `--report`), a [`DeliveryFuture`] (the library's
//! [`Producer::send`](super::Producer::send)), and [`flush`](super::TopicProducer::flush),
//! which waits until every record queued before it has ended.
//!
//! Both the sender task (a batch written or failed) and the caller's side
//! (a record refused before it was queued) settle records here, so no
//! waiter is ever left behind.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use super::Shared;
use crate::error::{Error, Result};

/// Where the broker wrote a record: what a [`DeliveryFuture`] resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The partition the record went to.
    pub partition: i32,
    /// Its offset in the partition; `None` with `acks=0`, where the broker
    /// does not answer.
    pub offset: Option<i64>,
}

/// Resolves once the broker acknowledged the record (its [`Delivery`]), or
/// once it failed for good (retries and the delivery timeout spent, or its
/// partition stopped after an earlier failure).
#[must_use = "the record is sent either way; the future only tells how it ended"]
#[derive(Debug)]
pub struct DeliveryFuture(pub(super) oneshot::Receiver<Result<Delivery, String>>);

impl Future for DeliveryFuture {
    type Output = Result<Delivery>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| match r {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(why)) => Err(Error::FailedMessages(why)),
            Err(_) => Err(Error::FailedMessages(
                "the producer stopped before the record was acknowledged".into(),
            )),
        })
    }
}

/// Record number → the future waiting for it. Only records sent through
/// the library's `send` wait; the CLI's never do, and pay one empty-map
/// check per batch.
#[derive(Default)]
pub(super) struct Waiters(
    parking_lot::Mutex<HashMap<u64, oneshot::Sender<Result<Delivery, String>>>>,
);

impl Waiters {
    /// A future for record `number` (before the record can possibly end).
    pub(super) fn register(&self, number: u64) -> DeliveryFuture {
        let (tx, rx) = oneshot::channel();
        self.0.lock().insert(number, tx);
        DeliveryFuture(rx)
    }
}

impl Shared {
    /// Records `numbers` (in batch order) were written to partition `p`
    /// from `base_offset` (`None` with acks=0).
    /// Counts them acknowledged last, so whoever sees the count (`flush`)
    /// finds their futures resolved.
    pub(super) fn written(&self, numbers: &[u64], p: i32, base_offset: Option<i64>) {
        if let Some(r) = &self.report {
            r.written(numbers, p, base_offset);
        }
        let mut waiters = self.waiters.0.lock();
        if !waiters.is_empty() {
            for (i, n) in numbers.iter().enumerate() {
                if let Some(tx) = waiters.remove(n) {
                    let offset = base_offset.map(|b| b + i as i64);
                    let _ = tx.send(Ok(Delivery {
                        partition: p,
                        offset,
                    }));
                }
            }
        }
        drop(waiters);
        self.counters
            .acknowledged
            .fetch_add(numbers.len() as u64, Ordering::Release);
        self.settled.notify_waiters();
    }

    /// Records `numbers` failed for good, because of `why`; counted last,
    /// as in [`written`](Self::written).
    pub(super) fn failed(&self, numbers: &[u64], why: &str) {
        if let Some(r) = &self.report {
            r.failed(numbers, why);
        }
        let mut waiters = self.waiters.0.lock();
        if !waiters.is_empty() {
            for n in numbers {
                if let Some(tx) = waiters.remove(n) {
                    let _ = tx.send(Err(why.to_string()));
                }
            }
        }
        drop(waiters);
        self.counters.fail(numbers.len() as u64, why);
        self.settled.notify_waiters();
    }

    /// Records that ended so far, acknowledged or failed.
    pub(super) fn ended(&self) -> u64 {
        let c = &self.counters;
        c.acknowledged.load(Ordering::Acquire) + c.failed.load(Ordering::Acquire)
    }
}
