//! `consumer <BROKER> <TOPIC> [<PARTITION>] <GROUP>`: key-ordered, parallel
//! processing of a topic's messages, as a group member or on the partitions
//! given. See README.md for every flag and the exit codes.
//!
//! Argument parsing plus the library's public builder: `cli::consumer`
//! turns the flags into a [`Consumer`] builder, and the run is the one a
//! Rust service gets from `Consumer::run`.

use mykafkams::cli::consumer::{self as args, Chosen, ConsumerArgs};
use mykafkams::cli::{self, Signals};
use mykafkams::config::Tool;
use mykafkams::consumer::Consumer;

fn main() {
    let (args, command_line) = cli::parse_command_line::<ConsumerArgs>(Tool::Consumer);
    cli::run(|| async move {
        // Listening first: a signal during start-up is not lost.
        let mut signals = Signals::install()?;
        let mut builder = args::builder(&args, &command_line)?;
        // Listen first, too: a port in use should not wait for a broker.
        let metrics = args::metrics(&args).await?;
        if let Some((_, m)) = &metrics {
            builder = builder.metrics(m.clone());
        }
        let handler = args::handler(&args)?;
        let consumer: Consumer = builder.build()?;
        // The first SIGINT/SIGTERM drains and stops, the second aborts.
        let stop = consumer.shutdown_handle();
        tokio::spawn(async move {
            signals.recv().await;
            stop.shutdown();
            signals.recv().await;
            stop.abort();
        });
        let summary = match handler {
            Chosen::Print(h) => consumer.run(h).await?,
            Chosen::Exec(h) => consumer.run(h).await?,
            Chosen::Pipe(h) => consumer.run(h).await?, // an AsyncHandler: tasks
        };
        eprintln!("{}", summary.line());
        summary.into_result()
    })
}
