//! `consumer <BROKER> <TOPIC> [<PARTITION>] <GROUP>`: key-ordered, parallel
//! processing of a topic's messages, as a group member or on the partitions
//! given. See README.md for every flag and the exit codes; the work is done
//! by `mykafkams::cli::consumer` and `mykafkams::consumer`.

use mykafkams::cli::{self, consumer::ConsumerArgs};
use mykafkams::config::Tool;

fn main() {
    let (args, command_line) = cli::parse_command_line::<ConsumerArgs>(Tool::Consumer);
    cli::run(|| cli::consumer::main(args, command_line))
}
