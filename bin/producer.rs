//! `producer [BROKER] TOPIC [KEY]`: publishes each line of stdin (or `--input`)
//! as one Kafka message. See README.md for every flag and the exit codes; the
//! work is done by `mykafkams::cli::producer` and `mykafkams::producer`.

use mykafkams::cli::{self, producer::ProducerArgs};

fn main() {
    let args: ProducerArgs = cli::parse_args();
    cli::run(|| cli::producer::main(args))
}
