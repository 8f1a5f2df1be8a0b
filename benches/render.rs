//! Cost of rendering one message for `--handler print`, per format, as a
//! plain table (`cargo bench --bench render`).
//!
//! Messages are the consumer benchmark's: 100-byte ASCII values, keys
//! `account-NNNNN`, no headers, a real-looking timestamp. Each row renders
//! every message once and reports nanoseconds per message (best of a few
//! runs). The `memcpy` row (value plus newline appended to a reused buffer)
//! is the floor any format pays.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mykafkams::handlers::Format;
use mykafkams::handlers::print::{render, render_into};
use mykafkams::{Headers, Message};

const MESSAGES: usize = 1_000_000;
const KEYS: usize = 1_000;
const RUNS: usize = 5;

fn messages() -> Vec<Message> {
    let topic: Arc<str> = Arc::from("bench");
    let value = Bytes::from(vec![b'x'; 100]);
    (0..MESSAGES)
        .map(|i| Message {
            topic: Arc::clone(&topic),
            partition: 3,
            offset: 1_000_000 + i as i64,
            key: Some(Bytes::from(format!("account-{:05}", i % KEYS))),
            value: Some(value.clone()),
            timestamp_ms: 1_700_000_000_000 + i as i64,
            headers: Headers::new(),
        })
        .collect()
}

fn best(mut f: impl FnMut() -> Duration) -> Duration {
    (0..RUNS).map(|_| f()).min().expect("RUNS > 0")
}

fn ns_per_message(d: Duration) -> f64 {
    d.as_nanos() as f64 / MESSAGES as f64
}

/// Bytes written in total, so the work cannot be optimised away.
fn timed(msgs: &[Message], mut one: impl FnMut(&Message) -> usize) -> Duration {
    let start = Instant::now();
    let mut bytes = 0usize;
    for m in msgs {
        bytes += one(m);
    }
    black_box(bytes);
    start.elapsed()
}

fn row(name: &str, ns: f64, floor: f64) {
    println!("| {name:<40} | {ns:>8.1} | {:>8.2} |", ns / floor);
}

fn main() {
    let msgs = messages();
    println!("render benchmark: {MESSAGES} messages, 100-byte values, no headers, best of {RUNS}");
    println!();
    println!("| {:<40} | {:>8} | {:>8} |", "render", "ns/msg", "x memcpy");
    println!("|{:-<42}|{:->10}|{:->10}|", "", "", "");

    let mut out: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut memcpy = || {
        timed(&msgs, |m| {
            out.clear();
            out.extend_from_slice(m.value.as_deref().unwrap_or_default());
            out.push(b'\n');
            black_box(&out);
            out.len()
        })
    };
    let floor = ns_per_message(best(&mut memcpy));
    row("memcpy of value + newline (floor)", floor, floor);

    for (format, name) in [
        (Format::Value, "value"),
        (Format::Text, "text"),
        (Format::Json, "json"),
    ] {
        let ns = ns_per_message(best(|| {
            timed(&msgs, |m| black_box(render(format, m)).len())
        }));
        row(&format!("render({name}), a Vec per line"), ns, floor);
    }
    for (format, name) in [
        (Format::Value, "value"),
        (Format::Text, "text"),
        (Format::Json, "json"),
    ] {
        let ns = ns_per_message(best(|| {
            timed(&msgs, |m| {
                out.clear();
                render_into(format, m, &mut out);
                black_box(&out);
                out.len()
            })
        }));
        row(&format!("render_into({name}), reused buffer"), ns, floor);
    }
}
