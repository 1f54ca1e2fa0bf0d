#!/usr/bin/env bash
# A real Prometheus on loopback scraping one paycore every second, with paycore's alert and
# recording rules loaded: what deploy/live-check.sh evaluates the dashboard's and the rules'
# queries against, and a way to look at a local paycore's metrics by hand. Prometheus is
# Debian's package (apt-get installs it the first time; its service is not started).
#
#   scripts/prometheus.sh start [HOST:PORT]  # paycore's address (default 127.0.0.1:8080): generate
#                                            # the config, start, wait until ready and scraping
#   scripts/prometheus.sh stop               # stop it and remove its data
#   scripts/prometheus.sh status             # exit 0 when it is ready; prints its URL
#   scripts/prometheus.sh url                # prints its URL (http://127.0.0.1:PORT)
#   scripts/prometheus.sh install            # only install prometheus and promtool if missing
#
# The config is deploy/prometheus/prometheus.yml with the target replaced by HOST:PORT, scrape
# and evaluation intervals of PROM_INTERVAL, and the rule files by their absolute paths; data
# and config live in a temp directory removed by stop.
#
# Environment: PROM_PORT (default: a free port), PROM_INTERVAL (1s), PROM_STATE (the file that
# remembers the running instance between start and stop; default
# ${TMPDIR:-/tmp}/paycore-prometheus.state: set your own to run several at once).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
SHIPPED="$ROOT/deploy/prometheus/prometheus.yml"
RULES="$ROOT/deploy/prometheus/rules"
PROM_INTERVAL=${PROM_INTERVAL:-1s}
PROM_STATE=${PROM_STATE:-${TMPDIR:-/tmp}/paycore-prometheus.state}

install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  echo "prometheus.sh: installing Debian's prometheus package"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# The running instance: "PID PORT DIR" in $PROM_STATE.
state() { [ -f "$PROM_STATE" ] && cat "$PROM_STATE"; }

ready() { # port
  curl -sf "http://127.0.0.1:$1/-/ready" >/dev/null 2>&1
}

# The paycore target's health after its first scrape ("up" or "down"); empty before it.
target_health() { # port
  curl -sf "http://127.0.0.1:$1/api/v1/targets?state=active" 2>/dev/null | python3 -c '
import json, sys
for t in json.load(sys.stdin)["data"]["activeTargets"]:
    if t["labels"].get("job") == "paycore" and t["health"] != "unknown":
        print(t["health"], t.get("lastError", ""))
        break
'
}

start() {
  local target=${1:-127.0.0.1:8080}
  install
  if read -r pid port dir < <(state) && kill -0 "$pid" 2>/dev/null; then
    echo "prometheus.sh: already running (pid $pid) on http://127.0.0.1:$port"
    return 0
  fi
  local port=${PROM_PORT:-$(free_port)}
  dir=$(mktemp -d -t paycore-prometheus.XXXXXX)
  # The shipped config with loopback addresses: the same jobs, rules and rule order.
  sed -e "s#\"paycore:8080\"#\"$target\"#" \
      -e "s#\"localhost:9090\"#\"127.0.0.1:$port\"#" \
      -e "s#^\(  *\)scrape_interval: .*#\1scrape_interval: $PROM_INTERVAL#" \
      -e "s#^\(  *\)evaluation_interval: .*#\1evaluation_interval: $PROM_INTERVAL#" \
      -e "s#^\(  *- \)rules/#\1$RULES/#" \
      "$SHIPPED" >"$dir/prometheus.yml"
  grep -q "\"$target\"" "$dir/prometheus.yml" || { echo "prometheus.sh: no paycore:8080 target in $SHIPPED" >&2; exit 1; }
  promtool check config "$dir/prometheus.yml" >"$dir/check.log" 2>&1 || { cat "$dir/check.log" >&2; exit 1; }
  nohup prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=1d --web.listen-address="127.0.0.1:$port" \
    >"$dir/prometheus.log" 2>&1 &
  local pid=$!
  echo "$pid $port $dir" >"$PROM_STATE"
  local started=$SECONDS
  until ready "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "prometheus.sh: prometheus exited; its log:" >&2
      tail -30 "$dir/prometheus.log" >&2
      exit 1
    fi
    if [ $((SECONDS - started)) -gt 60 ]; then
      echo "prometheus.sh: not ready after 60 s; its log:" >&2
      tail -30 "$dir/prometheus.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "prometheus.sh: $(prometheus --version 2>&1 | head -1 | cut -d' ' -f1-3) ready on http://127.0.0.1:$port after $((SECONDS - started)) s (pid $pid, data in $dir)"
  # Targets reach the scrape loop only after service discovery's first update (about 5 s):
  # wait for the first scrape of paycore, so the caller's queries have data to see.
  local health=""
  until health=$(target_health "$port") && [ -n "$health" ]; do
    if [ $((SECONDS - started)) -gt 60 ]; then
      echo "prometheus.sh: paycore ($target) not scraped after 60 s" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "prometheus.sh: first scrape of paycore ($target) after $((SECONDS - started)) s: $health"
}

stop() {
  local pid port dir
  if read -r pid port dir < <(state); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    case "$dir" in */paycore-prometheus.*) rm -rf "$dir" ;; esac
  fi
  rm -f "$PROM_STATE"
}

status() {
  local pid port dir
  read -r pid port dir < <(state) || { echo "prometheus.sh: not started" >&2; return 1; }
  ready "$port" || { echo "prometheus.sh: not ready on http://127.0.0.1:$port" >&2; return 1; }
  echo "http://127.0.0.1:$port"
}

url() {
  local pid port dir
  read -r pid port dir < <(state) || { echo "prometheus.sh: not started" >&2; return 1; }
  echo "http://127.0.0.1:$port"
}

case "${1:-}" in
  start) start "${2:-}" ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  install) install ;;
  *) echo "usage: $0 start [HOST:PORT]|stop|status|url|install" >&2; exit 2 ;;
esac
