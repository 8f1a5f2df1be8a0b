//! `producer [BROKER] TOPIC [KEY]`: publishes each line of stdin (or `--input`)
//! as one Kafka message. See README.md for every flag and the exit codes; the
//! work is done by `mykafkams::cli::producer` and `mykafkams::producer`.

use mykafkams::cli::{self, producer::ProducerArgs};
use mykafkams::config::Tool;

fn main() {
    let (args, _) = cli::parse_command_line::<ProducerArgs>(Tool::Producer);
    cli::run(|| cli::producer::main(args))
}
