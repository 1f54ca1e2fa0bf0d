#!/usr/bin/env bash
# A real single-node Apache Cassandra 5.0 on loopback: the CQL server the ScyllaDB backend
# (src/storage/scylla/) is tested against, since no ScyllaDB server installs on these machines.
# Cassandra comes from its jars in Maven Central (no tarball, no Docker): the first run resolves
# them with Maven into $CASSANDRA_HOME/lib-VERSION, later runs reuse them.
#
#   scripts/cassandra.sh start     # fetch (once), start, wait until a CQL query answers
#   scripts/cassandra.sh stop      # stop it and remove its data
#   scripts/cassandra.sh status    # exit 0 when CQL answers
#
# Environment: CASSANDRA_HOME (default ~/.cache/paycore-cassandra), CASSANDRA_PORT (native
# CQL port, 9042), CASSANDRA_STORAGE_PORT (7000), CASSANDRA_VERSION (5.0.9), CASSANDRA_HEAP (2g: each keyspace of the tests holds some thirty tables, and the HTTP tests make one per app).
#
# The commit log is synced periodically (Cassandra's default): the server here is killed only at
# the end of a run. What an operator sets in production (commitlog_sync batch or group for
# durability across a node crash, replication 3) is in docs/SCYLLA.md.
set -euo pipefail

CASSANDRA_HOME=${CASSANDRA_HOME:-$HOME/.cache/paycore-cassandra}
CASSANDRA_PORT=${CASSANDRA_PORT:-9042}
CASSANDRA_STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-7000}
CASSANDRA_VERSION=${CASSANDRA_VERSION:-5.0.9}
CASSANDRA_HEAP=${CASSANDRA_HEAP:-2g}
LIB="$CASSANDRA_HOME/lib-$CASSANDRA_VERSION"
RUN="$CASSANDRA_HOME/run-$CASSANDRA_PORT"
HERE="$(cd "$(dirname "$0")" && pwd)"

fetch() {
  [ -f "$LIB/.complete" ] && return 0
  command -v mvn >/dev/null || { echo "cassandra.sh: needs Maven (mvn) and Java 17" >&2; exit 1; }
  mkdir -p "$CASSANDRA_HOME/pom"
  cat >"$CASSANDRA_HOME/pom/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>paycore</groupId><artifactId>cassandra-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.cassandra</groupId><artifactId>cassandra-all</artifactId><version>$CASSANDRA_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  echo "cassandra.sh: resolving Apache Cassandra $CASSANDRA_VERSION from Maven Central into $LIB"
  rm -rf "$LIB"
  mvn -q -B -Dstyle.color=never -f "$CASSANDRA_HOME/pom/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIB"
  touch "$LIB/.complete"
}

answers() {
  timeout 15 python3 "$HERE/cql_ping.py" 127.0.0.1 "$CASSANDRA_PORT" >/dev/null 2>&1
}

# Cassandra 5.0's conf/jvm17-server.options: the JDK internals it reaches into.
JVM_OPENS=(
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.base/jdk.internal.ref=ALL-UNNAMED
  --add-exports java.base/sun.nio.ch=ALL-UNNAMED
  --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
  --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
  --add-exports java.sql/java.sql=ALL-UNNAMED
  --add-exports java.base/java.lang.ref=ALL-UNNAMED
  --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
  --add-opens java.base/java.lang.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
  --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
  --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
  --add-opens java.base/jdk.internal.math=ALL-UNNAMED
  --add-opens java.base/jdk.internal.module=ALL-UNNAMED
  --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
  --add-opens java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens java.base/java.io=ALL-UNNAMED
  --add-opens java.base/java.nio=ALL-UNNAMED
  --add-opens java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens java.base/java.util=ALL-UNNAMED
  --add-opens java.base/java.util.concurrent.atomic=ALL-UNNAMED
  --add-opens java.base/java.lang=ALL-UNNAMED
  --add-opens java.base/java.math=ALL-UNNAMED
  --add-opens java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens java.base/java.net=ALL-UNNAMED
)

start() {
  fetch
  if [ -f "$RUN/pid" ] && kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
    echo "cassandra.sh: already running (pid $(cat "$RUN/pid")) on 127.0.0.1:$CASSANDRA_PORT"
    return 0
  fi
  rm -rf "$RUN"
  mkdir -p "$RUN/data"
  cat >"$RUN/cassandra.yaml" <<EOF
cluster_name: paycore-test
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $CASSANDRA_STORAGE_PORT
native_transport_port: $CASSANDRA_PORT
start_native_transport: true
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$CASSANDRA_STORAGE_PORT"
commitlog_sync: periodic
commitlog_sync_period: 10000ms
data_file_directories: [$RUN/data/data]
commitlog_directory: $RUN/data/commitlog
saved_caches_directory: $RUN/data/saved_caches
hints_directory: $RUN/data/hints
cdc_raw_directory: $RUN/data/cdc_raw
auto_snapshot: false
concurrent_compactors: 1
EOF
  cat >"$RUN/logback.xml" <<EOF
<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$RUN/system.log</file>
    <encoder><pattern>%d %-5level [%thread] %logger{36} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
  local jamm
  jamm=$(ls "$LIB"/jamm-*.jar | head -1)
  nohup java -Xms"$CASSANDRA_HEAP" -Xmx"$CASSANDRA_HEAP" -XX:+UseG1GC -Xss256k \
    "-javaagent:$jamm" "${JVM_OPENS[@]}" \
    -Djdk.attach.allowAttachSelf=true -Dio.netty.tryReflectionSetAccessible=true \
    -Dcassandra.config="file://$RUN/cassandra.yaml" -Dcassandra-foreground=yes \
    -Dcassandra.storagedir="$RUN/data" -Dcassandra.skip_wait_for_gossip_to_settle=0 \
    -Dcassandra.ring_delay_ms=5000 -Dcassandra.superuser_setup_delay_ms=0 \
    -Dlogback.configurationFile="$RUN/logback.xml" \
    -cp "$LIB/*" org.apache.cassandra.service.CassandraDaemon >"$RUN/stdout.log" 2>&1 &
  echo $! >"$RUN/pid"
  local started=$SECONDS
  until answers; do
    if ! kill -0 "$(cat "$RUN/pid")" 2>/dev/null; then
      echo "cassandra.sh: Cassandra exited; its log:" >&2
      tail -50 "$RUN/stdout.log" "$RUN/system.log" >&2 || true
      exit 1
    fi
    if [ $((SECONDS - started)) -gt 180 ]; then
      echo "cassandra.sh: no CQL answer after 180 s; its log:" >&2
      tail -50 "$RUN/system.log" >&2 || true
      exit 1
    fi
    sleep 1
  done
  echo "cassandra.sh: Apache Cassandra $(python3 "$HERE/cql_ping.py" 127.0.0.1 "$CASSANDRA_PORT") answers CQL on 127.0.0.1:$CASSANDRA_PORT after $((SECONDS - started)) s (pid $(cat "$RUN/pid"))"
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
  status) answers ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
