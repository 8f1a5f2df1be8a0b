//! `consumer <BROKER> <TOPIC> [<PARTITION>] <GROUP>`: key-ordered, parallel
//! processing of a topic's messages, as a group member or on the partitions
//! given. See README.md for every flag and the exit codes; the work is done
//! by `mykafkams::cli::consumer` and `mykafkams::consumer`.

use mykafkams::cli::{self, consumer::ConsumerArgs};

fn main() {
    let args: ConsumerArgs = cli::parse_args();
    cli::run(|| cli::consumer::main(args))
}
