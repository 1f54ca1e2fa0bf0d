#!/bin/bash
# paycore-healthcheck [--port PORT] [PATH]: exit 0 when GET http://127.0.0.1:PORT/PATH answers
# 200, else print the answer's status line (or its absence) and exit 1.
#
# The images' HEALTHCHECK. The runtime image carries no curl or wget on purpose (less to
# patch, less for an intruder); bash is in debian:bookworm-slim already, and its /dev/tcp is
# enough for one HTTP/1.0 request to this container. Kubernetes does not use it: its probes
# are httpGet (deploy/k8s).
#
# PORT defaults to PAYCORE_SERVER__PORT, then 8080; PATH to /healthz (process up: /readyz
# would mark the container unhealthy while Kafka or the database is away, and Docker only
# reports it, so liveness is what matters here).
set -euo pipefail

port=${PAYCORE_SERVER__PORT:-8080}
if [ "${1:-}" = "--port" ]; then
  port=$2
  shift 2
fi
path=${1:-/healthz}

if ! exec 3<>"/dev/tcp/127.0.0.1/$port"; then
  echo "unhealthy: nothing listens on 127.0.0.1:$port" >&2
  exit 1
fi
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
status_line=""
read -r -t 5 status_line <&3 || true
exec 3<&-
case "$status_line" in
  "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "unhealthy: GET $path on port $port answered: ${status_line:-nothing}" >&2
exit 1
