//! `producer [BROKER] TOPIC [KEY]`: publishes each line of stdin (or `--input`)
//! as one Kafka message. See README.md for every flag and the exit codes.
//!
//! Argument parsing plus the library's public builder: `cli::producer`
//! turns the flags into a [`Producer`] builder and feeds it the input.

use mykafkams::cli::producer::{self as args, ProducerArgs};
use mykafkams::cli::{self, Signals};
use mykafkams::config::Tool;
use mykafkams::producer::Producer;

fn main() {
    let (args, _) = cli::parse_command_line::<ProducerArgs>(Tool::Producer);
    cli::run(|| async move {
        // Listening first: a signal during start-up is not lost.
        let signals = Signals::install()?;
        let (builder, topic, key) = args::builder(&args)?;
        let input = args::open_input(&args).await?;
        let producer: Producer = builder.build().await?;
        args::publish(&args, producer, &topic, key.as_deref(), input, signals).await
    })
}
