//! An async handler that calls an HTTP service for each message.
//!
//! ```sh
//! cargo run --example http_handler -- 127.0.0.1:9092 orders billing --exit-at-end
//! ```
//!
//! The example starts the service itself: an axum server on a free
//! loopback port that takes `POST /events` (the key in `x-key`, the value
//! as the body) after 1 ms of "work". The consumer reads every partition
//! (committing as the group) with up to `--concurrency` requests in flight,
//! never two for one key, and prints `partition offset status` per message.
//! A reply other than 2xx is an error: retried with backoff, then the
//! failure policy (here: stop).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mykafkams::consumer::Partitions;
use mykafkams::{Consumer, HandlerError, Message};

#[derive(Parser)]
struct Args {
    /// Bootstrap brokers, comma separated.
    brokers: String,
    /// The topic to read.
    topic: String,
    /// The consumer group whose offsets are used.
    group: String,
    /// Requests in flight at once, across keys.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Stop once every partition is caught up and handled.
    #[arg(long)]
    exit_at_end: bool,
}

/// The service: 1 ms of work per event, then 204 (400 without a key).
async fn serve(served: Arc<AtomicU64>) -> std::io::Result<std::net::SocketAddr> {
    let app = Router::new().route(
        "/events",
        post(move |headers: HeaderMap| {
            let served = Arc::clone(&served);
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                served.fetch_add(1, Ordering::Relaxed);
                match headers.contains_key("x-key") {
                    true => StatusCode::NO_CONTENT,
                    false => StatusCode::BAD_REQUEST,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let served = Arc::new(AtomicU64::new(0));
    let url = format!("http://{}/events", serve(Arc::clone(&served)).await?);

    let consumer = Consumer::builder()
        .bootstrap_servers(args.brokers)
        .topics(args.topic)
        .group(args.group)
        .partitions(Partitions::All)
        .max_concurrency(args.concurrency)
        .handler_timeout(Duration::from_secs(10)) // a hung call fails, and is retried
        .exit_at_end(args.exit_at_end)
        .build()?;

    // One pooled HTTP client, shared by every task.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let handler = move |msg: Message| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let request = hyper::Request::post(url)
                .header("x-key", msg.key.as_deref().unwrap_or_default())
                .body(Full::new(msg.value.clone().unwrap_or_default()))
                .map_err(|e| HandlerError::new(format!("building the request: {e}")))?;
            let status = client
                .request(request)
                .await
                .map_err(|e| HandlerError::new(format!("calling the service: {e}")))?
                .status();
            if !status.is_success() {
                return Err(HandlerError::new(format!("the service answered {status}")));
            }
            writeln!(
                std::io::stdout().lock(),
                "{} {} {}",
                msg.partition,
                msg.offset,
                status.as_u16()
            )
            .map_err(|e| HandlerError::new(format!("writing stdout: {e}")))
        }
    };

    let stop = consumer.shutdown_handle();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.shutdown();
    });
    let summary = consumer.run(handler).await?;
    eprintln!(
        "{} handled, {} requests served",
        summary.stats.finished,
        served.load(Ordering::Relaxed)
    );
    summary.into_result()?;
    Ok(())
}
