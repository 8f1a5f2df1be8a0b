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
up: banner kafka demo

# What `just up` is about to do, before it does it.
[private]
banner:
    #!/usr/bin/env bash
    if (exec 3<>/dev/tcp/127.0.0.1/$KAFKA_PORT) 2>/dev/null; then
      broker="reuse the broker already answering on 127.0.0.1:$KAFKA_PORT"
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
      broker="start Apache Kafka from docker/compose.yml (image apache/kafka)"
    else
      broker="start Apache Kafka on 127.0.0.1:$KAFKA_PORT from jars (Maven Central; the first time ~1 min)"
    fi
    echo "MyKafkaMS demo: this will"
    echo "  1. $broker;"
    echo "  2. build the release binaries (cargo build --release; the first time ~5 min on 2 cores);"
    echo "  3. send 100,000 keyed events through our producer and consume them with the ordered,"
    echo "     parallel consumer, checking every key's order, then print the verdict."
    echo "  Stop the broker afterwards with: just down"
    echo

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

# Profile `dist`: LTO, one codegen unit, stripped; ldd checks each is static; SHA256SUMS beside them.
# Static musl binaries for deployment into target/dist/, with their sizes.
dist:
    #!/usr/bin/env bash
    set -euo pipefail
    target=x86_64-unknown-linux-musl
    if ! rustup target list --installed | grep -qx "$target"; then
      echo "dist: adding the Rust target $target (rustup target add $target)" >&2
      rustup target add "$target"
    fi
    # ring (rustls' crypto) compiles its C and assembly for the target: it needs musl's gcc wrapper.
    if ! command -v x86_64-linux-musl-gcc >/dev/null 2>&1; then
      if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "dist: installing musl-tools (Debian), for ring's C code" >&2
        apt-get install -y -qq musl-tools >/dev/null 2>&1 \
          || { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; }
      else
        echo "dist: x86_64-linux-musl-gcc not found: install musl-tools (Debian/Ubuntu) or musl-gcc" >&2; exit 2
      fi
    fi
    echo "dist: cargo build --profile dist --target $target --bins (LTO: a few minutes)" >&2
    cargo build --locked --profile dist --target "$target" --bins
    mkdir -p target/dist
    bins=(producer consumer mykafkams-demo)
    for b in "${bins[@]}"; do
      cp "${CARGO_TARGET_DIR:-target}/$target/dist/$b" target/dist/
      if ! ldd "target/dist/$b" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
        echo "dist: target/dist/$b is not static: $(ldd "target/dist/$b" 2>&1 | head -1)" >&2; exit 1
      fi
    done
    (cd target/dist && sha256sum "${bins[@]}" > SHA256SUMS)
    for b in "${bins[@]}"; do
      printf 'dist: target/dist/%-15s %5.1f MiB  static (ldd: %s)\n' "$b" \
        "$(awk -v b="$(stat -c %s "target/dist/$b")" 'BEGIN { print b / 1048576 }')" \
        "$(ldd "target/dist/$b" 2>&1 | sed 's/^[[:space:]]*//' | head -1)"
    done
    echo "dist: checksums in target/dist/SHA256SUMS" >&2

# Static, round trip by host name, a caught handler panic, --version (tests/dist.rs).
# The musl binaries of `just dist` against the local broker.
test-dist: kafka dist
    cargo test --test dist -- --ignored --test-threads 2

# Produce and consume 1,000,000 records, medians of 3, builds taking turns; writes target/bench/dist.json.
# The musl binaries of `just dist` next to the glibc release build.
bench-dist: kafka build dist
    bench/dist.sh

# All tests (unit, property, integration against the real brokers, plain and secure; starts them if none answers).
test: kafka kafka-secure
    cargo test -- --test-threads 2

# The fault loops at full size (issue 15), then their table (target/chaos/rows.tsv):
# SIGKILL, rebalance and crash storms, connection faults, broker faults, a stuck key.
# `just test` runs the short version of each. Starts the broker if none answers.
test-chaos: kafka
    rm -f target/chaos/rows.tsv
    MYKAFKAMS_CHAOS=full cargo test --release --test chaos -- --include-ignored --test-threads 1 --nocapture
    bench/chaos-table.sh target/chaos/rows.tsv

# Formatting, lints, warning-free docs and a packaging dry run, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    RUSTDOCFLAGS="-D warnings" cargo doc --no-deps
    just package-check

# The crate as `cargo publish` would upload it: packaged (manifest checks, file list),
# unpacked and type-checked on its own. Like `cargo publish --dry-run`, which built it
# in full (3-4 minutes of CI); checking reuses clippy's dependency checks.
package-check:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo package --no-verify --allow-dirty --locked
    version=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["packages"][0]["version"])')
    dir=target/package-check
    rm -rf "$dir" && mkdir -p "$dir"
    tar xzf "target/package/mykafkams-$version.crate" -C "$dir"
    cargo check --locked --all-targets --manifest-path "$dir/mykafkams-$version/Cargo.toml" --target-dir target
    echo "package-check: mykafkams-$version.crate builds on its own ($(tar tzf "target/package/mykafkams-$version.crate" | wc -l) files)"

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

# --handler pipe (a Python asyncio process) next to --handler exec -- true; writes target/bench/pipe.json.
bench-pipe: kafka build
    bench/pipe.sh

# End-to-end latency p50/p99/p99.9 at a steady 10,000 msg/s; writes target/bench/latency.json.
bench-latency: kafka
    bench/latency.sh

# Medians of BENCH_RUNS (3), BENCH_LINES (1,000,000) records; writes target/bench/bench.json.
# The ordering core's table (bench-core) follows it; bench-rebalance stays its own verb.
# The side-by-side table: produce, consume, scaling, async, head-of-line, pipe, latency, RSS vs kcat.
bench: kafka build
    bench/bench.sh
