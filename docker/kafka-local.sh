#!/usr/bin/env bash
# kafka-local.sh: a real single-node Apache Kafka (KRaft) on loopback, no Docker.
#
#   kafka-local.sh fetch               resolve the broker jars from Maven Central (once)
#   kafka-local.sh up                  start a broker+controller, wait until it serves metadata
#   kafka-local.sh down                stop it and delete its data
#   kafka-local.sh status              say whether it runs
#   kafka-local.sh tool NAME ARGS...   run one of Kafka's own admin tools, e.g.
#                                      tool topics --bootstrap-server 127.0.0.1:9092 --list
#                                      tool consumer-groups --bootstrap-server ... --describe --group g
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1), KAFKA_HEAP (512m),
# KAFKA_CACHE (~/.cache/mykafkams/kafka-<version>), KAFKA_STATE_DIR (<repo>/target/kafka-local),
# KAFKA_GROUP_PROTOCOLS (unset: the broker default classic,consumer; e.g. "classic" for a broker
# without KIP-848 groups; written as group.coordinator.rebalance.protocols).
# Exit codes: 0 ok, 1 failure (message on stderr), 2 usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
port=${KAFKA_PORT:-9092}
cport=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
heap=${KAFKA_HEAP:-512m}
cache=${KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mykafkams/kafka-$version}
state=${KAFKA_STATE_DIR:-$repo/target/kafka-local}/$port
log4j="$here/log4j2.properties"

die() { echo "kafka-local: $*" >&2; exit 1; }
say() { echo "kafka-local: $*" >&2; }

need_java() {
  command -v java >/dev/null 2>&1 ||
    die "java not found: install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
}

# Resolve the jars once; later runs use the cache and need no network.
fetch() {
  need_java
  if [ -f "$cache/.complete" ]; then return 0; fi
  command -v mvn >/dev/null 2>&1 ||
    die "mvn not found: install Maven (Debian: apt-get install maven) to fetch Kafka $version from Maven Central"
  say "fetching Apache Kafka $version jars from Maven Central into $cache"
  mkdir -p "$cache"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$cache" >&2 ||
    die "Maven could not resolve Kafka $version (network or ~/.m2 settings?)"
  touch "$cache/.complete"
}

java_run() { # java_run LOGLEVEL MAINCLASS ARGS...  (JAVA_EXEC=1: replace this shell)
  local level=$1; shift
  ${JAVA_EXEC:+exec} java -Xshare:auto -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$log4j" -Dmykafkams.log.level="$level" \
    -cp "$cache/*" "$@"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

running_pid() {
  [ -f "$state/pid" ] || return 1
  local pid; pid=$(cat "$state/pid")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

up() {
  fetch
  if pid=$(running_pid); then
    say "already running on 127.0.0.1:$port (pid $pid)"; return 0
  fi
  for p in "$port" "$cport"; do
    port_open "$p" && die "port $p on 127.0.0.1 is already in use: stop what holds it (just kafka-down?) or set KAFKA_PORT"
  done
  mkdir -p "$state"
  local data; data=$(mktemp -d "${TMPDIR:-/tmp}/mykafkams-kafka-$port.XXXXXX")
  echo "$data" > "$state/data"
  cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# KIP-848 groups: a test cluster's timings (Kafka's defaults are a 45 s session
# and 5 s heartbeats), so a crashed member's partitions move within seconds.
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
auto.create.topics.enable=false
delete.topic.enable=true
PROPS
  if [ -n "${KAFKA_GROUP_PROTOCOLS:-}" ]; then
    echo "group.coordinator.rebalance.protocols=$KAFKA_GROUP_PROTOCOLS" >> "$state/server.properties"
  fi
  local cluster_id=-
  # A base64url id; like Kafka's own Uuid, never one starting with '-' (the tool would take it for an option).
  while [[ $cluster_id == -* ]]; do
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
  done
  java_run WARN kafka.tools.StorageTool format -t "$cluster_id" -c "$state/server.properties" \
    >"$state/format.log" 2>&1 || { cat "$state/format.log" >&2; cleanup_data; die "formatting KRaft storage failed"; }
  say "starting Apache Kafka $version on 127.0.0.1:$port (controller $cport, heap $heap, data $data)"
  KAFKA_HEAP_OPTS="" nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$log4j" -Dmykafkams.log.level=INFO \
    -cp "$cache/*" kafka.Kafka "$state/server.properties" >"$state/server.log" 2>&1 &
  echo $! > "$state/pid"
  # Ready means: the broker answers a metadata request from a real client.
  local deadline=$((SECONDS + 90))
  until port_open "$port" &&
      java_run WARN org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list \
        >/dev/null 2>&1; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$state/server.log" >&2; cleanup_data; die "the broker exited during start-up (log above)"
    fi
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$state/server.log" >&2; down; die "the broker did not answer metadata within 90 s"; }
    sleep 1
  done
  say "ready: bootstrap 127.0.0.1:$port (log: $state/server.log)"
}

cleanup_data() {
  if [ -f "$state/data" ]; then rm -rf "$(cat "$state/data")"; rm -f "$state/data"; fi
  rm -f "$state/pid"
}

down() {
  local pid
  if pid=$(running_pid); then
    say "stopping broker on 127.0.0.1:$port (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then say "still running after 30 s: killing it"; kill -KILL "$pid" || true; fi
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  else
    say "no local broker running on 127.0.0.1:$port"
  fi
  cleanup_data
}

status() {
  if pid=$(running_pid); then echo "running on 127.0.0.1:$port (pid $pid)"; else echo "not running"; return 1; fi
}

tool() {
  [ $# -ge 1 ] || { echo "usage: kafka-local.sh tool NAME ARGS..." >&2; exit 2; }
  local name=$1; shift; local cls
  case "$name" in
    topics) cls=org.apache.kafka.tools.TopicCommand ;;
    consumer-groups) cls=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
    console-consumer) cls=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
    console-producer) cls=org.apache.kafka.tools.ConsoleProducer ;;
    get-offsets) cls=org.apache.kafka.tools.GetOffsetShell ;;
    delete-records) cls=org.apache.kafka.tools.DeleteRecordsCommand ;;
    broker-api-versions) cls=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
    configs) cls=org.apache.kafka.admin.ConfigCommand ;;
    producer-perf-test) cls=org.apache.kafka.tools.ProducerPerformance ;;
    transactional-message-copier) cls=org.apache.kafka.tools.TransactionalMessageCopier ;;
    *) echo "kafka-local: unknown tool '$name' (topics, consumer-groups, console-consumer, console-producer, get-offsets, delete-records, broker-api-versions, configs, producer-perf-test, transactional-message-copier)" >&2; exit 2 ;;
  esac
  fetch
  # exec: the tool is this process, so a signal sent to it (a test stopping
  # a console consumer) reaches the JVM.
  JAVA_EXEC=1 java_run WARN "$cls" "$@"
}

cmd=${1:-}; shift || true
case "$cmd" in
  fetch) fetch ;;
  up) up ;;
  down) down ;;
  status) status ;;
  tool) tool "$@" ;;
  *) echo "usage: kafka-local.sh fetch|up|down|status|tool NAME ARGS..." >&2; exit 2 ;;
esac
