#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft) on loopback, for the end-to-end test and for
# trying paycore's Kafka paths by hand. Kafka comes from Maven Central (no Docker, no tarball
# site): the first run resolves it with Maven into $KAFKA_HOME/lib, later runs reuse it.
#
#   scripts/kafka.sh start     # fetch (once), format, start, wait until it answers, make topics
#   scripts/kafka.sh stop      # stop it and remove its data
#   scripts/kafka.sh status    # exit 0 when it answers
#
# Environment: KAFKA_HOME (default ~/.cache/paycore-kafka), KAFKA_PORT (9092),
# KAFKA_CONTROLLER_PORT (9093), KAFKA_VERSION (4.3.1), KAFKA_PARTITIONS (3).
set -euo pipefail

KAFKA_HOME=${KAFKA_HOME:-$HOME/.cache/paycore-kafka}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_VERSION=${KAFKA_VERSION:-4.3.1}
KAFKA_PARTITIONS=${KAFKA_PARTITIONS:-3}
SLF4J_VERSION=2.0.20
BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
LIB="$KAFKA_HOME/lib-$KAFKA_VERSION"
RUN="$KAFKA_HOME/run-$KAFKA_PORT"
TOPICS=(paycore.order-events paycore.commands paycore.replies)

fetch() {
  [ -f "$LIB/.complete" ] && return 0
  command -v mvn >/dev/null || { echo "kafka.sh: needs Maven (mvn) and Java 17" >&2; exit 1; }
  mkdir -p "$KAFKA_HOME/pom"
  cat >"$KAFKA_HOME/pom/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>paycore</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- Kafka brings slf4j-api 1.7, which finds no 2.x backend and logs nothing: pin the API. -->
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>$SLF4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  echo "kafka.sh: resolving Apache Kafka $KAFKA_VERSION from Maven Central into $LIB"
  rm -rf "$LIB"
  mvn -q -B -Dstyle.color=never -f "$KAFKA_HOME/pom/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIB"
  touch "$LIB/.complete"
}

java_cp() { java -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$LIB/*" "$@"; }

answers() {
  # A metadata request, not an open port: the broker is ready when it lists topics.
  timeout 60 java -Xmx128m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn -cp "$LIB/*" org.apache.kafka.tools.TopicCommand \
    --bootstrap-server "$BOOTSTRAP" --list >/dev/null 2>&1
}

start() {
  fetch
  if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
    echo "kafka.sh: already running (pid $(cat "$RUN/pid")) on $BOOTSTRAP"
    return 0
  fi
  rm -rf "$RUN"
  mkdir -p "$RUN/data"
  cat >"$RUN/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN/data
num.partitions=$KAFKA_PARTITIONS
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  local cluster_id
  cluster_id=$(python3 -c 'import base64,uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  java_cp kafka.tools.StorageTool format -t "$cluster_id" -c "$RUN/server.properties" \
    --ignore-formatted >"$RUN/format.log" 2>&1 || { cat "$RUN/format.log" >&2; exit 1; }
  nohup java -Xmx512m -cp "$LIB/*" kafka.Kafka "$RUN/server.properties" >"$RUN/broker.log" 2>&1 &
  echo $! >"$RUN/pid"
  local started=$SECONDS
  until answers; do
    if ! kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
      echo "kafka.sh: the broker exited; its log:" >&2
      tail -50 "$RUN/broker.log" >&2
      exit 1
    fi
    if [ $((SECONDS - started)) -gt 120 ]; then
      echo "kafka.sh: no answer after 120 s; its log:" >&2
      tail -50 "$RUN/broker.log" >&2
      exit 1
    fi
    sleep 1
  done
  for t in "${TOPICS[@]}"; do
    java_cp org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create \
      --if-not-exists --topic "$t" --partitions "$KAFKA_PARTITIONS" --replication-factor 1 >/dev/null
  done
  java_cp org.apache.kafka.tools.TopicCommand --bootstrap-server "$BOOTSTRAP" --create \
    --if-not-exists --topic paycore.commands.dlq --partitions 1 --replication-factor 1 >/dev/null
  echo "kafka.sh: Apache Kafka $KAFKA_VERSION answers on $BOOTSTRAP after $((SECONDS - started)) s (pid $(cat "$RUN/pid"))"
}

stop() {
  if [ -f "$RUN/pid" ]; then
    local pid
    pid=$(cat "$RUN/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$RUN"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) fetch; answers ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
