#!/usr/bin/env bash
# The storage backends side by side: create and lifecycle, closed loop, against paycore on
# SQLite and then on the CQL backend with a local Apache Cassandra (scripts/cassandra.sh, which
# shares the machine's cores with paycore and the generator). Writes its JSON reports to
# $OUT/backend-<backend>-<scenario>.json and prints one line per run.
#
#   loadtest/backends.sh            # 10 s per run (DUR), 64 clients for create, 256 for lifecycle
#
# Knobs: DUR (seconds per run, at most 20), CLIENTS (64), LIFECYCLE_CLIENTS (256), OUT
# (loadtest/out), CASSANDRA_PORT (a free port when unset; a Cassandra already answering there is
# used as it is and left running).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$ROOT/loadtest/out}
DUR=${DUR:-10}
if [ "$DUR" -gt 20 ]; then DUR=20; fi
CLIENTS=${CLIENTS:-64}
LIFECYCLE_CLIENTS=${LIFECYCLE_CLIENTS:-256}
LT="$CARGO_TARGET_DIR/release/paycore-loadtest"
PAYCORE="$CARGO_TARGET_DIR/release/paycore"
SECRET=demo-secret-change-me
mkdir -p "$OUT"

# shellcheck source=loadtest/lib.sh
. "$ROOT/loadtest/lib.sh"

cargo build --release -p paycore -p paycore-loadtest --bin paycore --bin paycore-loadtest

TMP=$(mktemp -d -t paycore-backends.XXXXXX)
PID=""
STARTED_CASSANDRA=0
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null || true
  [ "$STARTED_CASSANDRA" = 1 ] && bash scripts/cassandra.sh stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

export CASSANDRA_PORT=${CASSANDRA_PORT:-$(free_port)}
if ! python3 scripts/cql_ping.py 127.0.0.1 "$CASSANDRA_PORT" "SELECT release_version FROM system.local" >/dev/null 2>&1; then
  export CASSANDRA_STORAGE_PORT=${CASSANDRA_STORAGE_PORT:-$(free_port)}
  bash scripts/cassandra.sh start
  STARTED_CASSANDRA=1
fi
KEYSPACE="paycore_bench_$$"

serve() { # backend
  PORT=$(free_port)
  local backend_env=(PAYCORE_STORAGE__BACKEND="$1")
  if [ "$1" = scylla ]; then
    backend_env+=(PAYCORE_STORAGE__SCYLLA__CONTACT_POINTS="[\"127.0.0.1:$CASSANDRA_PORT\"]"
      PAYCORE_STORAGE__SCYLLA__DIALECT=cassandra PAYCORE_STORAGE__SCYLLA__CONSISTENCY=one
      PAYCORE_STORAGE__SCYLLA__KEYSPACE="$KEYSPACE")
    env "${backend_env[@]}" RUST_LOG=warn "$PAYCORE" --config config.toml migrate >/dev/null
  fi
  env "${backend_env[@]}" \
      PAYCORE_SERVER__PORT="$PORT" PAYCORE_SIMULATOR__PORT=0 PAYCORE_SIMULATOR__BILLER_PORT=0 \
      PAYCORE_STORAGE__SQLITE__PATH="$TMP/$1.db" \
      PAYCORE_MERCHANTS__0__SECRET="$SECRET" \
      PAYCORE_MERCHANTS__0__RATE_LIMIT_PER_SEC=10000000 PAYCORE_MERCHANTS__0__RATE_LIMIT_BURST=1000000 \
      PAYCORE_CHANNELS__SIM__QPS=10000000 PAYCORE_CHANNELS__SIM__BURST=1000000 \
      PAYCORE_SIMULATOR__BEHAVIOUR__QPS=10000000 PAYCORE_SIMULATOR__BEHAVIOUR__BURST=1000000 \
      PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MIN=5 PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MAX=20 \
      PAYCORE_SIMULATOR__BEHAVIOUR__MAX_PAYMENTS=20000000 \
      RUST_LOG=warn "$PAYCORE" --config config.toml serve >"$TMP/$1.log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 120))
  until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "paycore on $1 not ready" >&2; cat "$TMP/$1.log" >&2; exit 1; fi
    sleep 0.2
  done
}

summary() { # json: one line, the figures RESULTS.md reports
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency"]
parts = [f"{k} p50 {v['p50_ms']:.2f} ms p99 {v['p99_ms']:.2f} ms" for k, v in sorted(lat.items())]
cpu = r.get("cpu", {}).get("paycore", {}).get("us_per_unit")
print(f"{sys.argv[1]}: {r['ok_rate']:.0f} units/s, {r['units_ok']} ok, {r['units_failed']} failed, "
      f"{r['units_unfinished']} unfinished; paycore CPU {cpu:.0f} us/unit; " + "; ".join(parts))
EOF
}

for backend in sqlite scylla; do
  serve "$backend"
  URL="http://127.0.0.1:$PORT"
  "$LT" run --url "$URL" --out "$OUT" --quiet --cpu-pid "paycore=$PID" --scenario create \
    --clients "$CLIENTS" --duration "$DUR" --name "backend-$backend-create"
  summary "$OUT/backend-$backend-create.json"
  "$LT" run --url "$URL" --out "$OUT" --quiet --cpu-pid "paycore=$PID" --scenario lifecycle \
    --clients "$LIFECYCLE_CLIENTS" --duration "$DUR" --name "backend-$backend-lifecycle"
  summary "$OUT/backend-$backend-lifecycle.json"
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
done
python3 scripts/cql_ping.py 127.0.0.1 "$CASSANDRA_PORT" "DROP KEYSPACE IF EXISTS $KEYSPACE" >/dev/null 2>&1 || true
