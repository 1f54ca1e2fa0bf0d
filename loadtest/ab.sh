#!/usr/bin/env bash
# An A/B of two paycore builds, or of two settings of one build, under one load. Each round runs
# A, then B (B first in even rounds), each against a fresh paycore and a fresh simulator
# process: `paycore-loadtest run --scenario $SCENARIO --rate $RATE --duration $DUR`. Each run
# prints paycore's and the simulator's CPU per unit and the ratio of the two. The generator is
# always A's.
#
# On a shared machine paycore's CPU per unit drifts by up to 20% between identical runs, and
# the simulator's drifts with it while its work stays the same. So the ratio is the steadier
# measure (loadtest/ANALYSIS.md).
#
#   loadtest/ab.sh DIR_A DIR_B                  # directories holding release builds of
#                                               # paycore and paycore-loadtest
#   loadtest/ab.sh DIR DIR                      # one build, with EXTRA_A / EXTRA_B below
#
# Knobs (environment): ROUNDS (3), RATE (2000 units/s, open loop), DUR (10 s), SCENARIO
# (lifecycle), EXTRA_A / EXTRA_B (space-separated VAR=value settings for one side's paycore,
# e.g. EXTRA_B="PAYCORE_STORAGE__SQLITE__COMMIT_INTERVAL_US=2000").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
[ $# -eq 2 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
DIR_A=$1 DIR_B=$2
ROUNDS=${ROUNDS:-3} RATE=${RATE:-2000} DUR=${DUR:-10} SCENARIO=${SCENARIO:-lifecycle}
for d in "$DIR_A" "$DIR_B"; do
  [ -x "$d/paycore" ] || { echo "no paycore binary in $d" >&2; exit 2; }
done
[ -x "$DIR_A/paycore-loadtest" ] || { echo "no paycore-loadtest binary in $DIR_A" >&2; exit 2; }
TMP=$(mktemp -d -t paycore-ab.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# shellcheck source=loadtest/lib.sh
. "$ROOT/loadtest/lib.sh"

one() { # side dir extra: prints "side paycore_us simulator_us ratio"
  local side=$1 dir=$2 extra=$3 run="$TMP/$1-$RANDOM"
  mkdir -p "$run"
  local sim_port biller_port port behaviour=PAYCORE_SIMULATOR__BEHAVIOUR
  sim_port=$(free_port) biller_port=$(free_port) port=$(free_port)
  env PAYCORE_SIMULATOR__PORT="$sim_port" PAYCORE_SIMULATOR__BILLER_PORT="$biller_port" \
    ${behaviour}__QPS=10000000 ${behaviour}__BURST=1000000 ${behaviour}__PAY_DELAY_MS_MIN=5 \
    ${behaviour}__PAY_DELAY_MS_MAX=20 ${behaviour}__MAX_PAYMENTS=20000000 RUST_LOG=warn \
    "$dir/paycore" --config "$ROOT/config.toml" channel-sim >"$run/sim.log" 2>&1 &
  local sim_pid=$!
  PIDS+=("$sim_pid")
  wait_ready "http://127.0.0.1:$sim_port/sim/v1/payments?out_trade_no=probe" 30
  # shellcheck disable=SC2086 # $extra is a list of VAR=value words
  env PAYCORE_SERVER__PORT="$port" PAYCORE_SIMULATOR__PORT=0 PAYCORE_SIMULATOR__BILLER_PORT=0 \
    PAYCORE_STORAGE__SQLITE__PATH="$run/paycore.db" \
    PAYCORE_MERCHANTS__0__SECRET=demo-secret-change-me \
    PAYCORE_MERCHANTS__0__RATE_LIMIT_PER_SEC=10000000 PAYCORE_MERCHANTS__0__RATE_LIMIT_BURST=1000000 \
    PAYCORE_CHANNELS__SIM__QPS=10000000 PAYCORE_CHANNELS__SIM__BURST=1000000 \
    PAYCORE_SIMULATOR__IN_PROCESS=false PAYCORE_CHANNELS__SIM__BASE_URL="http://127.0.0.1:$sim_port" \
    PAYCORE_MERCHANTS__0__BILLER__URL="http://127.0.0.1:$biller_port" RUST_LOG=warn $extra \
    "$dir/paycore" --config "$ROOT/config.toml" serve >"$run/paycore.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_ready "http://127.0.0.1:$port/readyz" 60
  "$DIR_A/paycore-loadtest" run --url "http://127.0.0.1:$port" --out "$run" --quiet \
    --scenario "$SCENARIO" --rate "$RATE" --duration "$DUR" --name ab \
    --cpu-pid "paycore=$pid" --cpu-pid "simulator=$sim_pid" >/dev/null
  kill "$pid" "$sim_pid" 2>/dev/null || true
  wait "$pid" "$sim_pid" 2>/dev/null || true
  python3 - "$side" "$run/ab.json" <<'PY'
import json, sys
side, path = sys.argv[1], sys.argv[2]
r = json.load(open(path))
p, s = r["cpu"]["paycore"]["us_per_unit"], r["cpu"]["simulator"]["us_per_unit"]
print(f"{side} {p:.0f} {s:.0f} {p / s if s else float('nan'):.2f}")
PY
  rm -rf "$run"
}

echo "side paycore_us_per_unit simulator_us_per_unit ratio  ($SCENARIO at $RATE/s for $DUR s)"
# Not through a pipe: `one` must run in this shell, so that its processes are in PIDS.
measure() { # side
  if [ "$1" = A ]; then one A "$DIR_A" "${EXTRA_A:-}" >>"$TMP/all.txt"
  else one B "$DIR_B" "${EXTRA_B:-}" >>"$TMP/all.txt"; fi
  tail -n 1 "$TMP/all.txt"
}
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) -eq 1 ]; then measure A; measure B; else measure B; measure A; fi
done
python3 - "$TMP/all.txt" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if l[:1] in "AB"]
for side in "AB":
    mine = [r for r in rows if r[0] == side]
    print(f"mean {side}: paycore {statistics.mean(float(r[1]) for r in mine):.0f} µs, "
          f"ratio {statistics.mean(float(r[3]) for r in mine):.2f} over {len(mine)} runs")
PY
