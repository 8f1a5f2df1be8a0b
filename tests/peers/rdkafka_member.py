#!/usr/bin/env python3
"""A librdkafka (confluent-kafka) consumer-group member for interop tests.

  rdkafka_member.py --bootstrap B --topic T --group G --protocol classic|consumer
                    [--assignor range] [--client-id ID] [--out FILE]
                    [--idle-exit SECONDS] [--max-seconds N]

Joins G with the classic or the KIP-848 consumer protocol, reads T from the
earliest offset and writes one line per message, flushed at once:
  partition<TAB>offset<TAB>key<TAB>value
Rebalances are logged to stderr as `assigned [t/0, t/1]` / `revoked [...]` /
`lost [...]`, and offsets are committed synchronously on revoke and at the end.

Exits 0 once it has had an assignment and a message and then --idle-exit
seconds (10) pass without a new message, after --max-seconds (120) in any
case, or on SIGTERM/SIGINT; it always closes the consumer, which leaves the
group. A fatal client error (e.g. the consumer protocol on a classic-only
broker) prints `fatal: ...` to stderr and exits 1.
"""
import argparse
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def names(partitions):
    return "[" + ", ".join(f"{p.topic}/{p.partition}" for p in partitions) + "]"


def commit(consumer):
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as e:  # e.g. _NO_OFFSET: nothing consumed since the last commit
        if e.args[0].code() != KafkaError._NO_OFFSET:
            log(f"commit failed: {e}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--protocol", required=True, choices=["classic", "consumer"])
    ap.add_argument("--assignor", help="classic: partition.assignment.strategy (default range,roundrobin); "
                    "consumer: group.remote.assignor (default: the broker's)")
    ap.add_argument("--client-id", default="rdkafka-member")
    ap.add_argument("--out", help="output file (default stdout)")
    ap.add_argument("--idle-exit", type=float, default=10.0)
    ap.add_argument("--max-seconds", type=float, default=120.0)
    args = ap.parse_args()

    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": args.client_id,
        "group.protocol": args.protocol,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
    }
    if args.protocol == "classic":
        conf["partition.assignment.strategy"] = args.assignor or "range,roundrobin"
    elif args.assignor:  # KIP-848: the broker assigns; the client may only name its assignor
        conf["group.remote.assignor"] = args.assignor

    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    consumer = Consumer(conf)
    state = {"assigned": False, "stop": False}

    def on_assign(c, partitions):
        state["assigned"] = True
        log("assigned", names(partitions))

    def on_revoke(c, partitions):
        log("revoked", names(partitions))
        commit(c)

    def on_lost(c, partitions):
        log("lost", names(partitions))

    def on_signal(signum, frame):
        state["stop"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    consumer.subscribe([args.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)

    start = time.monotonic()
    last_msg = None
    code = 0
    try:
        while not state["stop"]:
            now = time.monotonic()
            if now - start >= args.max_seconds:
                log(f"max-seconds {args.max_seconds:g} reached")
                break
            if state["assigned"] and last_msg is not None and now - last_msg >= args.idle_exit:
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().fatal() or msg.error().code() == KafkaError._FATAL:
                    log(f"fatal: {msg.error()}")
                    code = 1
                    break
                log(f"error: {msg.error()}")
                continue
            key = (msg.key() or b"").decode("utf-8", "replace")
            value = (msg.value() or b"").decode("utf-8", "replace")
            out.write(f"{msg.partition()}\t{msg.offset()}\t{key}\t{value}\n")
            out.flush()
            last_msg = time.monotonic()
    except KafkaException as e:
        log(f"fatal: {e}")
        code = 1
    finally:
        if code == 0:
            commit(consumer)
        consumer.close()  # leaves the group (runs on_revoke first)
        if out is not sys.stdout:
            out.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
