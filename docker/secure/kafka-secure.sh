#!/bin/bash
# Entry point of the compose service `kafka-secure` (profile `secure`) in the
# apache/kafka image: the broker `KAFKA_SECURE=1 docker/kafka-local.sh up` starts
# without Docker, on the fixed ports 9292..9296. The image's own env-to-properties
# start-up is bypassed on purpose: it demands JKS key store password files as soon
# as a listener is SSL, and Kafka refuses a key store password with PEM stores.
set -euo pipefail

props=/tmp/server.properties
rm -f /tmp/ready
{
  cat <<'PROPS'
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9293
controller.listener.names=CONTROLLER
log.dirs=/tmp/kraft-logs
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
group.consumer.min.heartbeat.interval.ms=500
group.consumer.heartbeat.interval.ms=1000
auto.create.topics.enable=false
delete.topic.enable=true
PROPS
  # Bound to all interfaces of the container; compose publishes them on 127.0.0.1.
  sed -e 's|@BIND@|0.0.0.0|g' -e 's|@PORT@|9292|g' -e 's|@CONTROLLER_PORT@|9293|g' \
    -e 's|@SASL_SSL_PORT@|9294|g' -e 's|@SSL_PORT@|9295|g' -e 's|@SASL_PLAINTEXT_PORT@|9296|g' \
    -e 's|@TLS@|/tls|g' /secure/secure.properties
} > "$props"

bin=/opt/kafka/bin
"$bin/kafka-storage.sh" format --ignore-formatted -t "$("$bin/kafka-storage.sh" random-uuid)" -c "$props" \
  --add-scram 'SCRAM-SHA-256=[name=scram256,password=scram256-secret]' \
  --add-scram 'SCRAM-SHA-512=[name=scram512,password=scram512-secret]' \
  --add-scram 'SCRAM-SHA-256=[name=alice,password=alice-secret]'

"$bin/kafka-server-start.sh" "$props" &
pid=$!
trap 'kill -TERM "$pid"; wait "$pid"' TERM INT

until "$bin/kafka-topics.sh" --bootstrap-server 127.0.0.1:9292 --list >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { echo "kafka-secure: the broker exited during start-up" >&2; exit 1; }
  sleep 1
done
"$bin/kafka-acls.sh" --bootstrap-server 127.0.0.1:9292 --add --allow-principal User:carol \
  --operation Read --operation Write --operation Describe --operation Create --topic '*'
touch /tmp/ready # the healthcheck: metadata served and ACLs in place
echo "kafka-secure: ready (SASL_SSL localhost:9294, SSL localhost:9295, SASL_PLAINTEXT localhost:9296)"
wait "$pid"
