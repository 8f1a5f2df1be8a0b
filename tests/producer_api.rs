//! The library's `Producer` against the real broker: `send` resolves to
//! where the broker wrote the record, headers arrive in order after the
//! configured ones, `flush` returns only once everything queued was
//! acknowledged, a refused record fails its own future (and only it), and
//! a closed producer refuses new records instead of never sending them.

mod common;

use common::{bootstrap, read_partition, require_broker, unique};
use mykafkams::error::EXIT_FAILED_MESSAGES;
use mykafkams::{Error, Producer};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A new one-partition topic with these `--config` settings.
fn topic_with(config: &[&str]) -> String {
    let topic = unique("papi");
    common::create_topic_with(&topic, config);
    topic
}

async fn producer() -> Producer {
    Producer::builder()
        .property("bootstrap.servers", bootstrap()) // as a properties file has it
        .header("origin", "test")
        .build()
        .await
        .unwrap()
}

#[test]
fn send_resolves_to_the_written_offset_with_the_headers_in_order() {
    require_broker();
    let topic = topic_with(&[]);
    runtime().block_on(async {
        let p = producer().await;
        for i in 0..3i64 {
            let at = p
                .send(
                    &topic,
                    Some(b"k"),
                    format!("v{i}").as_bytes(),
                    &[("n", i.to_string().as_bytes())],
                )
                .await
                .unwrap();
            assert_eq!((at.partition, at.offset), (0, Some(i)));
        }
        p.close().await;
    });
    let records = read_partition(&topic, 0);
    assert_eq!(records.len(), 3);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_bytes()));
        assert_eq!(r.headers["origin"], b"test");
        assert_eq!(r.headers["n"], i.to_string().as_bytes());
    }
}

#[test]
fn flush_returns_once_everything_queued_is_acknowledged() {
    require_broker();
    let topic = topic_with(&[]);
    let n = 2_000;
    runtime().block_on(async {
        let p = Producer::builder()
            .bootstrap_servers(bootstrap())
            .linger(std::time::Duration::from_secs(30)) // only a flush sends early
            .build()
            .await
            .unwrap();
        let mut pending = Vec::new();
        for i in 0..n {
            pending.push(
                p.enqueue(&topic, None, format!("{i}").as_bytes(), &[])
                    .await
                    .unwrap(),
            );
        }
        let flushed = tokio::time::timeout(std::time::Duration::from_secs(20), p.flush()).await;
        flushed
            .expect("flush sends at once, not after the 30 s linger")
            .unwrap();
        // Every future is resolved by now; their offsets are 0..n in order.
        for (i, d) in pending.into_iter().enumerate() {
            let d = tokio::time::timeout(std::time::Duration::ZERO, d)
                .await
                .expect("resolved before flush returned")
                .unwrap();
            assert_eq!(d.offset, Some(i as i64));
        }
    });
    assert_eq!(common::end_offsets(&topic), vec![(0, n as i64)]);
}

#[test]
fn a_refused_record_fails_alone_and_a_closed_producer_refuses_at_once() {
    require_broker();
    let topic = topic_with(&["max.message.bytes=20000"]);
    runtime().block_on(async {
        let p = producer().await;
        let big = vec![b'x'; 50_000];
        let err = p.enqueue(&topic, None, &big, &[]).await.unwrap_err();
        assert_eq!(err.exit_code(), EXIT_FAILED_MESSAGES, "{err}");
        assert!(err.to_string().contains("max.message.bytes"), "{err}");
        let ok = p.send(&topic, None, b"small", &[]).await.unwrap();
        assert_eq!(ok.offset, Some(0), "the refused record took no offset");
        // enqueue already reported the refused record; nothing else failed.
        p.flush().await.unwrap();
        p.close().await;
        let after = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            p.send(&topic, None, b"late", &[]),
        )
        .await
        .expect("fails at once, not never");
        assert!(matches!(after, Err(Error::FailedMessages(m)) if m.contains("closed")));
    });
}

#[test]
fn a_bad_bootstrap_or_property_fails_at_build() {
    let rt = runtime();
    let unknown = rt
        .block_on(
            Producer::builder()
                .bootstrap_servers(bootstrap())
                .property("linger.msec", "5")
                .build(),
        )
        .unwrap_err();
    assert!(unknown.to_string().contains("linger.ms"), "{unknown}");
    let port = common::closed_port();
    let unreachable = rt
        .block_on(
            Producer::builder()
                .bootstrap_servers(format!("127.0.0.1:{port}"))
                .connect_timeout(std::time::Duration::from_secs(2))
                .build(),
        )
        .unwrap_err();
    assert_eq!(
        unreachable.exit_code(),
        mykafkams::error::EXIT_UNREACHABLE,
        "{unreachable}"
    );
}
