#!/usr/bin/env bash
# The benchmark suite: builds release, starts paycore, the channel simulator as its own process
# (so that each report's CPU per unit, read from /proc, is paycore's own), Redis and the
# Redis-lock baseline server on loopback with random free ports and a temp data directory,
# runs every scenario (each bounded in count and time), stops everything it started, and
# writes loadtest/RESULTS.md from the JSON reports in $OUT.
#
#   loadtest/run.sh                  # the full suite (about 10 minutes after the build)
#   QUICK=1 loadtest/run.sh          # 3-second runs and a small memory run: a smoke test
#   MEMORY_ORDERS=10000000 MEMORY_RATE=3000 loadtest/run.sh   # the 10-million-order memory run (~56 min more)
#
# Knobs (environment): DUR (seconds per scenario, default 10, at most 20), CLIENTS (closed-loop
# concurrency, 64), KAFKA (1: the Kafka section with a real broker; 0 skips it), KAFKA_COUNT
# (create commands through Kafka, 300000), KAFKA_WARMUP (commands through the same broker and
# paycore before the count, 200000: the broker's JIT), LIFECYCLE_CLIENTS (1024), MEMORY_ORDERS (1000000), MEMORY_RATE (2500/s: below saturation, so RSS is measured, not a backlog), MAX_LIVE (live-actor cap for
# the memory run, 10000), BENCH=1 (also run `cargo bench`), OUT (loadtest/out).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${OUT:-$ROOT/loadtest/out}
QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then DEFAULT_DUR=3; DEFAULT_MEM=20000; else DEFAULT_DUR=10; DEFAULT_MEM=1000000; fi
DUR=${DUR:-$DEFAULT_DUR}
if [ "$DUR" -gt 20 ]; then echo "DUR is capped at 20 seconds per scenario" >&2; DUR=20; fi
CLIENTS=${CLIENTS:-64}
LIFECYCLE_CLIENTS=${LIFECYCLE_CLIENTS:-1024}
MEMORY_ORDERS=${MEMORY_ORDERS:-$DEFAULT_MEM}
MEMORY_RATE=${MEMORY_RATE:-2500}
MAX_LIVE=${MAX_LIVE:-10000}
BENCH=${BENCH:-0}
KAFKA=${KAFKA:-1}
KAFKA_COUNT=${KAFKA_COUNT:-$([ "$QUICK" = 1 ] && echo 20000 || echo 300000)}
KAFKA_WARMUP=${KAFKA_WARMUP:-$([ "$QUICK" = 1 ] && echo 2000 || echo 200000)}
KAFKA_UP=0
MEM_SECS=$(python3 -c "import math; print(math.ceil($MEMORY_ORDERS / $MEMORY_RATE) + 1)")
if [ "$MEM_SECS" -gt 3600 ]; then
  echo "MEMORY_ORDERS / MEMORY_RATE must fit in an hour (the generator's bound): raise MEMORY_RATE" >&2
  exit 2
fi
LT="$CARGO_TARGET_DIR/release/paycore-loadtest"
PAYCORE="$CARGO_TARGET_DIR/release/paycore"
SECRET=demo-secret-change-me

log() { printf '\n== %s\n' "$*" >&2; }

# --- what the suite needs -------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
  log "installing redis-server (Debian package)"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is needed to write RESULTS.md" >&2; exit 1; }

log "building release (paycore, paycore-loadtest) into $CARGO_TARGET_DIR"
cargo build --release -p paycore -p paycore-loadtest --bin paycore --bin paycore-loadtest

# --- processes we start, and only those, are stopped on exit --------------------------------
TMP=$(mktemp -d -t paycore-loadtest.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
  done
  [ "$KAFKA_UP" = 1 ] && bash "$ROOT/scripts/kafka.sh" stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# shellcheck source=loadtest/lib.sh
. "$ROOT/loadtest/lib.sh"

PAYCORE_PID=""
start_paycore() { # data-dir extra-env...
  local dir=$1; shift
  PORT=$(free_port)
  mkdir -p "$dir"
  env PAYCORE_SERVER__PORT="$PORT" \
      PAYCORE_SIMULATOR__PORT=0 \
      PAYCORE_SIMULATOR__BILLER_PORT=0 \
      PAYCORE_STORAGE__SQLITE__PATH="$dir/paycore.db" \
      PAYCORE_MERCHANTS__0__SECRET="$SECRET" \
      PAYCORE_MERCHANTS__0__RATE_LIMIT_PER_SEC=10000000 \
      PAYCORE_MERCHANTS__0__RATE_LIMIT_BURST=1000000 \
      PAYCORE_CHANNELS__SIM__QPS=10000000 \
      PAYCORE_CHANNELS__SIM__BURST=1000000 \
      PAYCORE_SIMULATOR__BEHAVIOUR__QPS=10000000 \
      PAYCORE_SIMULATOR__BEHAVIOUR__BURST=1000000 \
      PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MIN=5 \
      PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MAX=20 \
      PAYCORE_SIMULATOR__BEHAVIOUR__MAX_PAYMENTS=20000000 \
      RUST_LOG=warn "$@" \
      "$PAYCORE" --config "$ROOT/config.toml" serve >"$dir/paycore.log" 2>&1 &
  PAYCORE_PID=$!
  PIDS+=("$PAYCORE_PID")
  URL="http://127.0.0.1:$PORT"
  wait_ready "$URL/readyz" 60
}

SIM_PID=""
SIM_ENV=()
start_sim() { # log-file: the channel simulator (and business-system simulator) as its own process
  SIM_PORT=$(free_port)
  BILLER_PORT=$(free_port)
  env PAYCORE_SIMULATOR__PORT="$SIM_PORT" \
      PAYCORE_SIMULATOR__BILLER_PORT="$BILLER_PORT" \
      PAYCORE_SIMULATOR__BEHAVIOUR__QPS=10000000 \
      PAYCORE_SIMULATOR__BEHAVIOUR__BURST=1000000 \
      PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MIN=5 \
      PAYCORE_SIMULATOR__BEHAVIOUR__PAY_DELAY_MS_MAX=20 \
      PAYCORE_SIMULATOR__BEHAVIOUR__MAX_PAYMENTS=20000000 \
      RUST_LOG=warn "$PAYCORE" --config "$ROOT/config.toml" channel-sim >"$1" 2>&1 &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
  wait_ready "http://127.0.0.1:$SIM_PORT/sim/v1/payments?out_trade_no=probe" 30
  # What paycore needs to use it instead of its in-process simulators.
  SIM_ENV=(PAYCORE_SIMULATOR__IN_PROCESS=false
    PAYCORE_CHANNELS__SIM__BASE_URL="http://127.0.0.1:$SIM_PORT"
    PAYCORE_MERCHANTS__0__BILLER__URL="http://127.0.0.1:$BILLER_PORT")
}

stop_sim() {
  if [ -n "$SIM_PID" ]; then
    kill "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
    SIM_PID=""
  fi
}

stop_paycore() {
  if [ -n "$PAYCORE_PID" ]; then
    kill "$PAYCORE_PID" 2>/dev/null || true
    wait "$PAYCORE_PID" 2>/dev/null || true
    PAYCORE_PID=""
  fi
}

mkdir -p "$OUT"
# The reports of loadtest/backends.sh (backend-*) share this directory and are not this run's:
# they stay.
find "$OUT" -maxdepth 1 \( -name '*.json' -o -name '*.png' \) ! -name 'backend-*' -delete
rm -rf "$OUT"/commands.txt "$OUT"/on-change
# The commit the binaries were built from (its own outputs do not count as changes).
BUILT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- . ':!loadtest/out' ':!loadtest/RESULTS.md' 2>/dev/null)" ]; then
  BUILT="$BUILT (with uncommitted changes)"
fi
echo "$BUILT" >"$OUT/build.txt"
run() { # the loadtest command line, recorded for RESULTS.md
  echo "paycore-loadtest $*" | sed -e "s#$TMP#\$TMP#g" -e "s#${URL:-@none@}\b#\$URL#g" \
    -e "s#${REDIS_URL:-@none@}\b#\$REDIS_URL#g" -e "s#${BASE_URL:-@none@}\b#\$BASE_URL#g" -e "s#${BASE2_URL:-@none@}\b#\$BASE2_URL#g" \
    -e "s#$OUT#\$OUT#g" -e "s#--rss-pid [0-9]*#--rss-pid \$PAYCORE_PID#" \
    -e "s#--cpu-pid paycore=[0-9]*#--cpu-pid paycore=\$PAYCORE_PID#" -e "s#--cpu-pid simulator=[0-9]*#--cpu-pid simulator=\$SIM_PID#" \
    -e "s#--cpu-pid broker=[0-9]*#--cpu-pid broker=\$BROKER_PID#" >>"$OUT/commands.txt"
  "$LT" "$@"
}

# --- Redis and the baseline -----------------------------------------------------------------
REDIS_PORT=$(free_port)
log "starting redis-server on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
  --protected-mode yes --daemonize no --logfile "$TMP/redis.log" &
PIDS+=("$!")
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
run baseline-check --redis-url "$REDIS_URL" --baseline-db "$TMP/check.db"

BASE_PORT=$(free_port)
"$LT" baseline-serve --redis-url "$REDIS_URL" --baseline-db "$TMP/baseline-http.db" \
  --port "$BASE_PORT" --workers 2 >"$TMP/baseline.log" 2>&1 &
PIDS+=("$!")
BASE_URL="http://127.0.0.1:$BASE_PORT"
wait_ready "$BASE_URL/readyz" 30
# A second baseline server whose repeated pays only read under the lock (its most favourable case).
BASE2_PORT=$(free_port)
"$LT" baseline-serve --redis-url "$REDIS_URL" --baseline-db "$TMP/baseline-http-2.db" \
  --port "$BASE2_PORT" --workers 2 --repeat-write on-change >"$TMP/baseline-2.log" 2>&1 &
PIDS+=("$!")
BASE2_URL="http://127.0.0.1:$BASE2_PORT"
wait_ready "$BASE2_URL/readyz" 30

# --- paycore --------------------------------------------------------------------------------
# The simulator runs as its own process, so that the CPU each report gives per unit
# (`--cpu-pid`, from /proc) is paycore's own, and the simulator's beside it.
start_sim "$TMP/sim-main.log"
log "starting paycore (data in $TMP/paycore), the simulator on :$SIM_PORT"
start_paycore "$TMP/paycore" "${SIM_ENV[@]}"
echo "$URL" >"$OUT/target.txt"
COMMON=(--url "$URL" --out "$OUT" --quiet --cpu-pid "paycore=$PAYCORE_PID" --cpu-pid "simulator=$SIM_PID")

half() { python3 -c "import json,sys; print(max(1, int(json.load(open(sys.argv[1]))['ok_rate'] / 2)))" "$1"; }

log "create: saturation (closed loop), then open loop at half of it"
run run "${COMMON[@]}" --scenario create --clients "$CLIENTS" --duration "$DUR" --name create-saturation
run run "${COMMON[@]}" --scenario create --rate "$(half "$OUT/create-saturation.json")" --duration "$DUR" --name create-half

log "lifecycle: saturation (closed loop), then open loop at half of it"
# A lifecycle unit waits for the simulator's callback (5..20 ms) and polls, so it takes far more
# clients than the other scenarios to keep paycore busy.
run run "${COMMON[@]}" --scenario lifecycle --clients "$LIFECYCLE_CLIENTS" --duration "$DUR" --name lifecycle-saturation
run run "${COMMON[@]}" --scenario lifecycle --rate "$(half "$OUT/lifecycle-saturation.json")" --duration "$DUR" --name lifecycle-half

log "hot: saturation, then open loop at half of it"
run run "${COMMON[@]}" --scenario hot --clients "$CLIENTS" --duration "$DUR" --name hot-saturation
run run "${COMMON[@]}" --scenario hot --rate "$(half "$OUT/hot-saturation.json")" --duration "$DUR" --name hot-half

log "contention: saturation, then open loop at half of it"
run run "${COMMON[@]}" --scenario contention --clients "$CLIENTS" --duration "$DUR" --name contention-saturation
run run "${COMMON[@]}" --scenario contention --rate "$(half "$OUT/contention-saturation.json")" --duration "$DUR" --name contention-half

log "mixed: open loop"
run run "${COMMON[@]}" --scenario mixed --rate 2000 --duration "$DUR" --name mixed

log "find-max: create with p99 under 5 ms"
run find-max "${COMMON[@]}" --scenario create --p99-ms 5 --start-rate 1000 --factor 1.5 \
  --step-secs "$((DUR < 4 ? 2 : 4))" --max-steps 10 --name findmax-create

log "the comparison: hot and create against paycore and the Redis-lock baseline, in one run each"
for scenario in hot create; do
  run compare "${COMMON[@]}" --scenario "$scenario" --clients "$CLIENTS" --duration "$DUR" \
    --redis-url "$REDIS_URL" --baseline-url "$BASE_URL"
done
# The baseline's most favourable reading of the hot workload: a repeated pay is a read under the
# lock (no write). Reported beside the default (every request writes its row).
run compare --url "$URL" --quiet --out "$OUT/on-change" --scenario hot --clients "$CLIENTS" \
  --duration "$DUR" --redis-url "$REDIS_URL" --repeat-write on-change --baseline-url "$BASE2_URL"
# The faithful comparison: unsettled orders under concurrent pay, read, paid result and close,
# against the baseline that locks every operation that may change the order and writes only
# when one does.
log "the faithful comparison: contention against the on-change Redis-lock baseline"
run compare --url "$URL" --quiet --out "$OUT/on-change" --cpu-pid "paycore=$PAYCORE_PID" \
  --scenario contention --clients "$CLIENTS" --duration "$DUR" --redis-url "$REDIS_URL" \
  --repeat-write on-change --baseline-url "$BASE2_URL"
stop_paycore
stop_sim

# --- the core without HTTP ------------------------------------------------------------------
log "the core without HTTP: paycore's actors and embedded store in the generator's process"
run in-process --config "$ROOT/config.toml" --data-dir "$TMP" --duration "$DUR" \
  --out "$OUT/in-process.json" >/dev/null

# --- the merchant side: notifications to a local sink, fulfillment at the business system ----
log "lifecycle with notifications to a local sink and fulfillment on, open loop at half of saturation"
SINK_PORT=$(free_port)
# The sink runs the load's duration plus a drain, then reports the lag of order.paid deliveries.
"$LT" sink --port "$SINK_PORT" --duration "$((DUR + 15))" --out "$OUT/sink-lifecycle.json" >/dev/null &
SINK_PID=$!
PIDS+=("$SINK_PID")
start_paycore "$TMP/paycore-notify" PAYCORE_MERCHANTS__0__NOTIFY_URL="http://127.0.0.1:$SINK_PORT/hook"
# A new paycore, a new URL: COMMON names the first one.
run run --url "$URL" --out "$OUT" --quiet --scenario lifecycle --rate "$(half "$OUT/lifecycle-saturation.json")" --duration "$DUR" --name lifecycle-notify
wait "$SINK_PID" || true
curl -s "$URL/metrics" | grep -E '^paycore_(notifications_total|fulfillments_total)' >"$OUT/merchant-side-metrics.txt" || true
stop_paycore

# --- Kafka: create commands in, replies and events out ----------------------------------------
if [ "$KAFKA" = 1 ]; then
  log "Kafka: a real Apache Kafka broker (scripts/kafka.sh), $KAFKA_COUNT create commands through it"
  export KAFKA_PORT=$(free_port) KAFKA_CONTROLLER_PORT=$(free_port) KAFKA_HOME=${KAFKA_HOME:-$HOME/.cache/paycore-kafka}
  bash "$ROOT/scripts/kafka.sh" start
  KAFKA_UP=1
  start_paycore "$TMP/paycore-kafka" PAYCORE_STREAM__KIND=kafka \
    PAYCORE_STREAM__KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT" \
    PAYCORE_STREAM__KAFKA__COMMANDS__ENABLED=true
  # A warm-up: the consumer group is assigned, the connections are open, and the broker's JIT
  # has compiled its hot paths before the count. By hand, the broker's CPU per command fell from
  # 55 to 14 µs over its first ~600,000 commands (loadtest/ANALYSIS.md): a count taken on a cold
  # broker measures the JVM's warm-up, not the steady state a long-running broker is in.
  "$LT" kafka-ingest --bootstrap "127.0.0.1:$KAFKA_PORT" --count "$KAFKA_WARMUP" --duration 300 --out "$OUT/kafka-warmup.json" >/dev/null
  BROKER_PID=$(cat "$KAFKA_HOME/run-$KAFKA_PORT/pid" 2>/dev/null || echo 0)
  run kafka-ingest --bootstrap "127.0.0.1:$KAFKA_PORT" --count "$KAFKA_COUNT" --duration 300 --out "$OUT/kafka-ingest.json" \
    --cpu-pid "paycore=$PAYCORE_PID" --cpu-pid "broker=$BROKER_PID" >/dev/null
  stop_paycore
  bash "$ROOT/scripts/kafka.sh" stop
  KAFKA_UP=0
fi

# --- memory: many orders through a small live-actor cap --------------------------------------
log "memory: $MEMORY_ORDERS orders at $MEMORY_RATE/s (about $MEM_SECS s) with max_live_orders=$MAX_LIVE"
# The simulator runs as its own process here, so paycore's RSS is paycore's alone (the simulator
# keeps a record of every payment it made: that is its audit ledger, not paycore's memory).
start_sim "$TMP/sim-mem.log"
start_paycore "$TMP/paycore-mem" PAYCORE_ACTORS__MAX_LIVE_ORDERS="$MAX_LIVE" "${SIM_ENV[@]}"
run run --url "$URL" --out "$OUT" --quiet --scenario mixed --mix create=90,lifecycle=10 \
  --rate "$MEMORY_RATE" --count "$MEMORY_ORDERS" --duration "$MEM_SECS" \
  --rss-pid "$PAYCORE_PID" --name memory
stop_paycore
stop_sim

if [ "$BENCH" = 1 ]; then
  log "criterion benches"
  cargo bench --bench state_machine --bench signing --bench sqlite_writer --bench ledger -- \
    --warm-up-time 1 --measurement-time 3 2>&1 | tee "$OUT/bench.txt" | grep -E "^[a-z_]+/|time:|thrpt:" || true
fi

log "writing loadtest/RESULTS.md"
python3 "$ROOT/loadtest/results.py" "$OUT" "$ROOT/loadtest/RESULTS.md" \
  --memory-orders "$MEMORY_ORDERS" --max-live "$MAX_LIVE" --dur "$DUR" --clients "$CLIENTS"
echo "done: loadtest/RESULTS.md, reports and plots in $OUT"
