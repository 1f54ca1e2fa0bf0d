# Shell helpers the load-test scripts share (run.sh, backends.sh, ab.sh): sourced, not run.

# A free TCP port on loopback (the kernel picks it; the caller binds it soon after).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until `url` answers 2xx, at most `seconds`.
wait_ready() { # url seconds
  local deadline=$((SECONDS + $2))
  until curl -sf "$1" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "not ready: $1" >&2; return 1; fi
    sleep 0.2
  done
}
