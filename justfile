# MyKafkaMS: the verbs people type. `just --list` shows them all.
#
# A real Apache Kafka broker backs the demo and the tests: with Docker it runs
# from docker/compose.yml, without Docker docker/kafka-local.sh starts one from
# jars fetched from Maven Central (needs Java 17+ and Maven).

set shell := ["bash", "-euo", "pipefail", "-c"]

export KAFKA_PORT := env_var_or_default("KAFKA_PORT", "9092")
export KAFKA_BOOTSTRAP := env_var_or_default("KAFKA_BOOTSTRAP", "127.0.0.1:" + KAFKA_PORT)
# The secure broker (issue 8: TLS, SASL, ACLs) uses this port and the next four;
# listeners, users and TLS files are listed at the top of docker/kafka-local.sh.
export KAFKA_SECURE_PORT := env_var_or_default("KAFKA_SECURE_PORT", "9292")

# List the recipes.
default:
    @just --list

# Start Kafka (Docker if an engine answers, else the local launcher), then run the demo.
up: kafka demo

# Stop whichever Kafka `just up` started.
down:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
        && docker compose -f docker/compose.yml ps -q 2>/dev/null | grep -q .; then
      docker compose -f docker/compose.yml down -v
    fi
    docker/kafka-local.sh down

# Make sure a broker answers at KAFKA_BOOTSTRAP: reuse one that runs, else start one.
kafka:
    #!/usr/bin/env bash
    set -euo pipefail
    if (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null; then
      echo "kafka: using the broker already answering on 127.0.0.1:$KAFKA_PORT" >&2
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      docker compose -f docker/compose.yml up -d --wait
    else
      docker/kafka-local.sh up
    fi

# Start the local no-Docker broker (Apache Kafka from Maven Central, KRaft, loopback).
kafka-up:
    docker/kafka-local.sh up

# Stop the local broker and delete its data.
kafka-down:
    docker/kafka-local.sh down

# Make sure the secure broker answers on KAFKA_SECURE_PORT: reuse one that runs, else start one.
kafka-secure:
    #!/usr/bin/env bash
    set -euo pipefail
    if (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_SECURE_PORT) 2>/dev/null; then
      echo "kafka-secure: using the broker already answering on 127.0.0.1:$KAFKA_SECURE_PORT" >&2
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      # The compose profile has the ports 9292..9296 built in.
      docker compose -f docker/compose.yml --profile secure up -d --wait kafka-secure
    else
      KAFKA_PORT=$KAFKA_SECURE_PORT KAFKA_SECURE=1 docker/kafka-local.sh up
    fi

# Start the local secure broker: SASL_SSL, SSL (mutual TLS), SASL_PLAINTEXT beside PLAINTEXT, with ACLs.
kafka-up-secure:
    KAFKA_PORT=$KAFKA_SECURE_PORT KAFKA_SECURE=1 docker/kafka-local.sh up

# Stop the local secure broker and delete its data (its TLS files stay for the next start).
kafka-down-secure:
    KAFKA_PORT=$KAFKA_SECURE_PORT docker/kafka-local.sh down

# Start a three-node cluster (replication factor 3) on 9392, 9402, 9412, for failover work
# (Docker if an engine answers: compose profile `cluster`; else the local launcher).
kafka-up-cluster:
    #!/usr/bin/env bash
    set -euo pipefail
    if (exec 3<>/dev/tcp/127.0.0.1/9392) 2>/dev/null; then
      echo "kafka-up-cluster: using the cluster already answering on 127.0.0.1:9392" >&2
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      docker compose -f docker/compose.yml --profile cluster up -d --wait kafka-node-1 kafka-node-2 kafka-node-3
    else
      KAFKA_NODES=3 KAFKA_PORT=9392 docker/kafka-local.sh up
    fi

# Stop the three-node cluster (whichever started it) and delete its data.
kafka-down-cluster:
    #!/usr/bin/env bash
    set -euo pipefail
    nodes=(kafka-node-1 kafka-node-2 kafka-node-3)
    if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
        && docker compose -f docker/compose.yml --profile cluster ps -q "${nodes[@]}" 2>/dev/null | grep -q .; then
      docker compose -f docker/compose.yml --profile cluster rm -sfv "${nodes[@]}"
    fi
    KAFKA_NODES=3 KAFKA_PORT=9392 docker/kafka-local.sh down

# Run one of Kafka's admin tools, e.g. `just kafka-tool topics --bootstrap-server 127.0.0.1:9092 --list`.
kafka-tool +ARGS:
    docker/kafka-local.sh tool {{ARGS}}

# Build the release binaries into target/release.
build:
    cargo build --release

# All tests (unit, property, integration against the real brokers, plain and secure; starts them if none answers).
test: kafka kafka-secure
    cargo test -- --test-threads 2

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# The demo: 100,000 keyed events through producer and ordered consumer, then a verdict.
demo: build
    target/release/mykafkams-demo --brokers "$KAFKA_BOOTSTRAP"

# The ordering core's throughput next to a raw channel ceiling (no broker needed).
bench-core:
    cargo bench --bench core

# What a member's SIGTERM costs the rest of its group, per protocol (needs the broker).
bench-rebalance: kafka
    cargo bench --bench rebalance

# Our producer next to kcat (librdkafka) and Java's ProducerPerformance: 1,000,000 keyed
# 100-byte records, medians of 3 (BENCH_LINES, BENCH_RUNS); writes target/bench/produce.json.
bench-produce: kafka build
    bench/produce.sh

# Reads to a tmpfs file, /dev/null, --format json, 64 partitions; writes target/bench/consume.json.
# Our consumer next to kcat -C -e on a 1,000,000-record backlog, with CPU seconds and peak RSS.
bench-consume: kafka build
    bench/consume.sh

# Per-key order checked in every run; writes target/bench/scale.json.
# Workers 1/16/64/128 per scheduler with 1 ms of I/O, and one slow key's cost to the others.
bench-scale: kafka build
    bench/scale.sh

# End-to-end latency p50/p99/p99.9 at a steady 10,000 msg/s; writes target/bench/latency.json.
bench-latency: kafka
    bench/latency.sh

# Medians of BENCH_RUNS (3), BENCH_LINES (1,000,000) records; writes target/bench/bench.json.
# The ordering core's table (bench-core) follows it; bench-rebalance stays its own verb.
# The side-by-side table: produce, consume, scaling, head-of-line, latency, RSS vs kcat.
bench: kafka build
    bench/bench.sh
