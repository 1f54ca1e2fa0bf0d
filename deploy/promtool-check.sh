#!/usr/bin/env bash
# The static checks of paycore's operator view, fast and without a running paycore or
# Prometheus server (for CI; deploy/live-check.sh is the live proof):
#   - promtool check config / check rules / test rules on deploy/prometheus;
#   - every alert has a severity, a summary, a description and a runbook_url whose anchor is a
#     heading of deploy/prometheus/RUNBOOK.md, and a firing and a quiet case in the tests;
#   - deploy/grafana/dashboards/paycore.json is what deploy/grafana/paycore_dashboard.py writes.
# promtool comes with Debian's prometheus package (scripts/prometheus.sh install).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || bash scripts/prometheus.sh install

echo "== promtool check config deploy/prometheus/prometheus.yml"
promtool check config deploy/prometheus/prometheus.yml
echo "== promtool check rules"
promtool check rules deploy/prometheus/rules/paycore-recording.yml deploy/prometheus/rules/paycore-alerts.yml
echo "== promtool test rules"
promtool test rules deploy/prometheus/rules/paycore-alerts.test.yml

echo "== alert labels, annotations, runbook anchors, test coverage"
python3 - deploy/prometheus/rules/paycore-alerts.yml deploy/prometheus/RUNBOOK.md \
  deploy/prometheus/rules/paycore-alerts.test.yml <<'PY'
import re, sys
rules, runbook, tests = (open(p).read() for p in sys.argv[1:])
# GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes.
anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.*)$", runbook, re.M)}
problems, alerts = [], re.split(r"\n\s*- alert: ", rules)[1:]
for block in alerts:
    name = block.split("\n", 1)[0].strip()
    for key in ("severity", "summary", "description", "runbook_url"):
        if not re.search(rf"^\s+{key}: \S", block, re.M):
            problems.append(f"{name}: no {key}")
    sev = re.search(r"^\s+severity: (\S+)", block, re.M)
    if sev and sev.group(1) not in ("critical", "warning"):
        problems.append(f"{name}: severity {sev.group(1)} is neither critical nor warning")
    url = re.search(r'runbook_url: "?([^"\n]+)', block)
    if url:
        path, _, anchor = url.group(1).partition("#")
        if path != "deploy/prometheus/RUNBOOK.md" or anchor not in anchors:
            problems.append(f"{name}: runbook_url {url.group(1)} is not a heading of RUNBOOK.md")
    cases = re.findall(rf"alertname: {name}\n\s+exp_alerts:( \[\])?", tests)
    if not any(c == " []" for c in cases) or not any(c == "" for c in cases):
        problems.append(f"{name}: needs a firing and a quiet case in the tests")
for p in problems:
    print("  " + p)
print(f"  {len(alerts)} alerts, {len(problems)} problems")
sys.exit(1 if problems else 0)
PY

echo "== the dashboard is what its generator writes"
python3 deploy/grafana/paycore_dashboard.py --check
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["schemaVersion"] == 39; print("  %d panels, schemaVersion %d" % (sum(p["type"] != "row" for p in d["panels"]), d["schemaVersion"]))' deploy/grafana/dashboards/paycore.json
echo "promtool-check: passed"
