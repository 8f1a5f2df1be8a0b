#!/usr/bin/env bash
# kafka-local.sh: a real single-node Apache Kafka (KRaft) on loopback, no Docker.
#
#   kafka-local.sh fetch               resolve the broker jars from Maven Central (once)
#   kafka-local.sh up                  start a broker+controller, wait until it serves metadata
#   kafka-local.sh down                stop it and delete its data
#   kafka-local.sh status              say whether it runs
#   kafka-local.sh kill                SIGKILL the broker, keeping its data (a crash, for failover tests)
#   kafka-local.sh restart             start a killed broker again on its data
#   kafka-local.sh tool NAME ARGS...   run one of Kafka's own admin tools, e.g.
#                                      tool topics --bootstrap-server 127.0.0.1:9092 --list
#                                      tool consumer-groups --bootstrap-server ... --describe --group g
#                                      tool acls --bootstrap-server 127.0.0.1:9292 --list
#                                      tool log-dirs --bootstrap-server ... --describe --topic-list t
#                                      tool dump-log --files <log dir>/t-0/00000000000000000000.log
#                                      (log-dirs names the broker's log dir; dump-log prints each
#                                      batch of a segment file, with its compresscodec)
#
# KAFKA_NODES=N up|down: an N-node cluster (each node broker+controller), node i on
# KAFKA_PORT+10*(i-1) (controller one above), replication factor N, min.insync.replicas 2;
# e.g. KAFKA_NODES=3 KAFKA_PORT=9392 (just kafka-up-cluster): 9392, 9402, 9412. kill and
# restart act on one node: KAFKA_PORT=9402 kafka-local.sh kill.
#
# KAFKA_ADVERTISED_PORT=P up (one plain node only): listen on KAFKA_PORT but advertise
# 127.0.0.1:P in advertised.listeners, so every connection a client opens after bootstrap
# (partition leaders and coordinators found via Metadata) goes to P, where a test's relay
# forwards to KAFKA_PORT and can inject faults (tests/common/proxy.rs). Start the relay
# before `up`: readiness is checked by a real client, which follows the advertisement; the
# admin tools go through it too. kill and restart keep it (it is in server.properties).
# The advertised port must not be the controller's (KAFKA_PORT+1).
#
# Environment: KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1), KAFKA_HEAP (512m),
# KAFKA_CACHE (~/.cache/mykafkams/kafka-<version>), KAFKA_STATE_DIR (<repo>/target/kafka-local),
# KAFKA_GROUP_PROTOCOLS (unset: the broker default classic,consumer; e.g. "classic" for a broker
# without KIP-848 groups; written as group.coordinator.rebalance.protocols).
#
# KAFKA_SECURE=1 (just kafka-up-secure: KAFKA_PORT=9292) starts the same broker with
# the listeners of issue 8 (TLS and SASL) and an ACL authorizer; the settings are
# docker/secure/secure.properties, the TLS files come from docker/secure/gen-tls.sh
# (needs openssl). With port P (9292):
#   PLAINTEXT      127.0.0.1:P    (9292) no auth, User:ANONYMOUS (super user); admin tools
#   CONTROLLER     127.0.0.1:P+1  (9293) KRaft only
#   SASL_SSL       localhost:P+2  (9294) PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER
#   SSL            localhost:P+3  (9295) mutual TLS, client certificate required
#   SASL_PLAINTEXT localhost:P+4  (9296) PLAIN, SCRAM-SHA-256, OAUTHBEARER (not SCRAM-SHA-512:
#                                        the "mechanism not enabled" case), no TLS; KIP-368
#                                        sessions of 5 s (connections.max.reauth.ms on this listener)
# All bind 127.0.0.1; the TLS ones are advertised as localhost, the only name the
# broker certificate holds (DNS:localhost, no IP SAN: 127.0.0.1 is a hostname mismatch).
# Users (super users bypass ACLs):
#   alice    / alice-secret     PLAIN and SCRAM-SHA-256   super user
#   scram256 / scram256-secret  SCRAM-SHA-256             super user
#   scram512 / scram512-secret  SCRAM-SHA-512             super user
#   oauth-user                  OAUTHBEARER, unsecured JWT ("alg":"none", sub=oauth-user, exp)
#                                                         super user (any other sub: no rights)
#   User:mykafkams-client       the client certificate on SSL   super user
#   carol    / carol-secret     PLAIN   topic Read/Write/Describe/Create on all topics, no
#                                       group rights (consuming in a group: GROUP_AUTHORIZATION_FAILED)
#   mallory  / mallory-secret   PLAIN   no rights (TOPIC_AUTHORIZATION_FAILED)
# TLS files in <state>/P/tls/ (target/kafka-local/9292/tls/), made once and then reused:
#   ca.pem (+ ca.key)           the CA the broker trusts; clients verify the broker with it
#   broker.pem, broker.key, broker-keystore.pem   the broker's certificate, key, PEM key store
#   client.pem                  client certificate, CN=mykafkams-client
#   client.key                  its key, PKCS#8 unencrypted ("BEGIN PRIVATE KEY")
#   client-encrypted.key        the same key, encrypted PKCS#8 (PBES2, AES-256-CBC,
#                               PBKDF2-HMAC-SHA256), password client-key-secret
#   client-rsa.key              the same key, PKCS#1 ("BEGIN RSA PRIVATE KEY")
#   other-ca.pem (+ .key)       an unrelated CA (a client trusting it must reject the broker)
#   other-client.pem, .key      CN=mykafkams-client signed by other-ca (the SSL listener refuses it)
#
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
# One node of a multi-node cluster (set by `KAFKA_NODES=N up` for each node).
node_id=${KAFKA_NODE_ID:-1}
voters=${KAFKA_VOTERS:-1@127.0.0.1:$cport}
replication=${KAFKA_REPLICATION:-1}
min_isr=$(( replication > 1 ? 2 : 1 ))
nodes=${KAFKA_NODES:-1}
advertised_port=${KAFKA_ADVERTISED_PORT:-$port}
secure=
case "${KAFKA_SECURE:-}" in ''|0|false|no) ;; *) secure=1 ;; esac
sasl_ssl_port=$((port + 2)) ssl_port=$((port + 3)) sasl_plaintext_port=$((port + 4))
tls="$state/tls"

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

need_openssl() {
  command -v openssl >/dev/null 2>&1 ||
    die "openssl not found: the secure broker makes its TLS certificates with it (Debian: apt-get install openssl)"
}

# The listeners, TLS and SASL settings and authorizer of the secure broker.
secure_properties() {
  sed -e "s|@BIND@|127.0.0.1|g" -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$cport|g" \
    -e "s|@SASL_SSL_PORT@|$sasl_ssl_port|g" -e "s|@SSL_PORT@|$ssl_port|g" \
    -e "s|@SASL_PLAINTEXT_PORT@|$sasl_plaintext_port|g" -e "s|@TLS@|$tls|g" \
    "$here/secure/secure.properties"
}

# SCRAM users are stored in the cluster metadata when the storage is formatted.
scram_users=(
  --add-scram 'SCRAM-SHA-256=[name=scram256,password=scram256-secret]'
  --add-scram 'SCRAM-SHA-512=[name=scram512,password=scram512-secret]'
  --add-scram 'SCRAM-SHA-256=[name=alice,password=alice-secret]'
)

# ACLs for the users that are not super users, through the PLAINTEXT listener.
secure_acls() {
  java_run WARN org.apache.kafka.tools.AclCommand --bootstrap-server "127.0.0.1:$port" --add \
    --allow-principal User:carol --operation Read --operation Write --operation Describe \
    --operation Create --topic '*' >"$state/acls.log" 2>&1
}

secure_banner() {
  say "  PLAINTEXT      127.0.0.1:$port (no auth, User:ANONYMOUS)"
  say "  SASL_SSL       localhost:$sasl_ssl_port (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER)"
  say "  SSL            localhost:$ssl_port (mutual TLS: client.pem + client.key)"
  say "  SASL_PLAINTEXT localhost:$sasl_plaintext_port (PLAIN, SCRAM-SHA-256, OAUTHBEARER; re-authentication every 5 s)"
  say "  TLS files      $tls/ (ca.pem, client.pem, client.key, client-encrypted.key, client-rsa.key, other-ca.pem)"
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
    say "already running on 127.0.0.1:$port (pid $pid)"
    if [ -n "$secure" ]; then
      grep -q '^listeners=.*SASL_SSL' "$state/server.properties" ||
        die "the broker on 127.0.0.1:$port is not the secure one: stop it first (KAFKA_PORT=$port $0 down)"
      secure_banner
    fi
    return 0
  fi
  if [ "$advertised_port" != "$port" ]; then
    [ -z "$secure" ] || die "KAFKA_ADVERTISED_PORT is for a plain node: unset it or KAFKA_SECURE"
    [ "$advertised_port" != "$cport" ] || die "KAFKA_ADVERTISED_PORT=$advertised_port is the controller's port: pick another"
  fi
  local ports=("$port" "$cport") format_args=()
  if [ -n "$secure" ]; then
    need_openssl
    ports+=("$sasl_ssl_port" "$ssl_port" "$sasl_plaintext_port")
    format_args=("${scram_users[@]}")
  fi
  for p in "${ports[@]}"; do
    port_open "$p" && die "port $p on 127.0.0.1 is already in use: stop what holds it (just kafka-down?) or set KAFKA_PORT"
  done
  mkdir -p "$state"
  if [ -n "$secure" ]; then
    sh "$here/secure/gen-tls.sh" "$tls" || die "making the TLS material in $tls failed"
  fi
  local listeners
  if [ -n "$secure" ]; then
    listeners=$(secure_properties) || die "reading $here/secure/secure.properties failed"
  else
    listeners="listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$advertised_port
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
  fi
  local data; data=$(mktemp -d "${TMPDIR:-/tmp}/mykafkams-kafka-$port.XXXXXX")
  echo "$data" > "$state/data"
  cat > "$state/server.properties" <<PROPS
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$voters
controller.listener.names=CONTROLLER
$listeners
log.dirs=$data/logs
num.partitions=1
offsets.topic.replication.factor=$replication
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$replication
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replication
share.coordinator.state.topic.min.isr=$min_isr
default.replication.factor=$replication
min.insync.replicas=$min_isr
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
  local cluster_id=${KAFKA_CLUSTER_ID:-$(new_cluster_id)}
  java_run WARN kafka.tools.StorageTool format -t "$cluster_id" -c "$state/server.properties" ${format_args[@]+"${format_args[@]}"} \
    >"$state/format.log" 2>&1 || { cat "$state/format.log" >&2; cleanup_data; die "formatting KRaft storage failed"; }
  say "starting Apache Kafka $version on 127.0.0.1:$port (node $node_id, controller $cport, heap $heap, data $data)"
  if [ "$advertised_port" != "$port" ]; then
    say "advertised as 127.0.0.1:$advertised_port: clients reach it only while a relay listens there"
  fi
  launch
  wait_ready
  if [ -n "$secure" ]; then
    secure_acls || { cat "$state/acls.log" >&2; down; die "adding the ACLs failed (log above)"; }
  fi
  say "ready: bootstrap 127.0.0.1:$port (log: $state/server.log)"
  if [ -n "$secure" ]; then secure_banner; fi
}

# A base64url id; like Kafka's own Uuid, never one starting with '-' (the tool would take it for an option).
new_cluster_id() {
  local id=-
  while [[ $id == -* ]]; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
  done
  echo "$id"
}

# Starts the JVM of the formatted node in $state.
launch() {
  KAFKA_HEAP_OPTS="" nohup java -Xms"$heap" -Xmx"$heap" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$log4j" -Dmykafkams.log.level=INFO \
    -cp "$cache/*" kafka.Kafka "$state/server.properties" >>"$state/server.log" 2>&1 &
  echo $! > "$state/pid"
}

# A broker advertised on another port is ready only through the relay there.
relay_hint() {
  local adv
  adv=$(sed -n 's|^advertised.listeners=PLAINTEXT://127.0.0.1:\([0-9]*\)$|\1|p' "$state/server.properties" 2>/dev/null)
  if [ -n "$adv" ] && [ "$adv" != "$port" ]; then
    echo " (it is advertised as 127.0.0.1:$adv: is a relay to $port listening there?)"
  fi
}

# Ready means: the broker answers a metadata request from a real client.
wait_ready() {
  local deadline=$((SECONDS + 90))
  until port_open "$port" &&
      java_run WARN org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --list \
        >/dev/null 2>&1; do
    if ! running_pid >/dev/null; then
      tail -n 30 "$state/server.log" >&2; cleanup_data; die "the broker exited during start-up (log above)"
    fi
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$state/server.log" >&2; down; die "the broker did not answer metadata within 90 s$(relay_hint)"; }
    sleep 1
  done
}

# KAFKA_NODES=N: N broker+controller nodes forming one KRaft cluster, node i
# on port KAFKA_PORT + 10*(i-1) (controller one above), replication factor N
# for the internal topics and new topics, min.insync.replicas 2.
node_port() { echo $((port + 10 * ($1 - 1))); }

cluster_up() {
  [ -z "${KAFKA_ADVERTISED_PORT:-}" ] || die "KAFKA_ADVERTISED_PORT is for a single node: unset it or KAFKA_NODES"
  fetch
  local i voters_list="" cluster_id pids=() failed=0
  for i in $(seq 1 "$nodes"); do
    voters_list+="${voters_list:+,}$i@127.0.0.1:$(( $(node_port "$i") + 1 ))"
  done
  cluster_id=$(new_cluster_id)
  say "starting a $nodes-node cluster: $(for i in $(seq 1 "$nodes"); do printf '127.0.0.1:%s ' "$(node_port "$i")"; done)"
  for i in $(seq 1 "$nodes"); do
    KAFKA_NODES=1 KAFKA_NODE_ID=$i KAFKA_PORT=$(node_port "$i") KAFKA_CONTROLLER_PORT= \
      KAFKA_VOTERS=$voters_list KAFKA_CLUSTER_ID=$cluster_id KAFKA_REPLICATION=$nodes \
      bash "${BASH_SOURCE[0]}" up &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || { cluster_down; die "the $nodes-node cluster did not start (logs above)"; }
  say "ready: bootstrap $(for i in $(seq 1 "$nodes"); do printf '127.0.0.1:%s,' "$(node_port "$i")"; done | sed 's/,$//')"
}

# All nodes at once: stopped one by one, the last ones would lose their
# controller quorum and hang in their controlled shutdown.
cluster_down() {
  local i pids=()
  for i in $(seq 1 "$nodes"); do
    KAFKA_NODES=1 KAFKA_PORT=$(node_port "$i") KAFKA_CONTROLLER_PORT= bash "${BASH_SOURCE[0]}" down &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || true; done
}

# kill: SIGKILL the node, keeping its data (a crash); restart: start it again
# on that data. For failover tests.
crash() {
  local pid
  pid=$(running_pid) || die "no local broker running on 127.0.0.1:$port"
  say "killing broker on 127.0.0.1:$port (pid $pid), keeping its data"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  rm -f "$state/pid"
}

restart() {
  fetch
  if running_pid >/dev/null; then say "already running on 127.0.0.1:$port"; return 0; fi
  [ -f "$state/data" ] && [ -f "$state/server.properties" ] ||
    die "no stopped broker on 127.0.0.1:$port to restart (start one with up)"
  say "restarting broker on 127.0.0.1:$port on its data"
  launch
  wait_ready
  say "ready: 127.0.0.1:$port"
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
    configs) cls=kafka.admin.ConfigCommand ;;
    acls) cls=org.apache.kafka.tools.AclCommand ;;
    producer-perf-test) cls=org.apache.kafka.tools.ProducerPerformance ;;
    transactional-message-copier) cls=org.apache.kafka.tools.TransactionalMessageCopier ;;
    log-dirs) cls=org.apache.kafka.tools.LogDirsCommand ;;
    dump-log) cls=kafka.tools.DumpLogSegments ;;
    *) echo "kafka-local: unknown tool '$name' (topics, consumer-groups, console-consumer, console-producer, get-offsets, delete-records, broker-api-versions, configs, acls, producer-perf-test, transactional-message-copier, log-dirs, dump-log)" >&2; exit 2 ;;
  esac
  fetch
  # exec: the tool is this process, so a signal sent to it (a test stopping
  # a console consumer) reaches the JVM.
  JAVA_EXEC=1 java_run WARN "$cls" "$@"
}

cmd=${1:-}; shift || true
case "$cmd" in
  fetch) fetch ;;
  up) if [ "$nodes" -gt 1 ]; then cluster_up; else up; fi ;;
  down) if [ "$nodes" -gt 1 ]; then cluster_down; else down; fi ;;
  kill) crash ;;
  restart) restart ;;
  status) status ;;
  tool) tool "$@" ;;
  *) echo "usage: kafka-local.sh fetch|up|down|status|kill|restart|tool NAME ARGS..." >&2; exit 2 ;;
esac
