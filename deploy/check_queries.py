#!/usr/bin/env python3
"""Evaluates every PromQL expression paycore's operator view depends on against a live
Prometheus, and fails listing each one that does not parse or returns no series.

    deploy/check_queries.py --prometheus http://127.0.0.1:9090 [--kafka]

What is checked (Python 3 standard library only):

- The dashboard (deploy/grafana/dashboards/*.json): every panel's targets[].expr, nested rows
  included, and every query variable's label_values(...). Template variables are substituted
  first: $__rate_interval -> 1m, $__interval -> 15s, $__range -> 1h, and each dashboard
  variable by its "All" value (allValue, e.g. $merchant -> .*) or else its current value.
  Each expression must evaluate and return at least one series.
- The recording rules: each rule's expression must return series, and so must the series it
  records (proof that Prometheus loaded the rule and evaluates it).
- The alert rules, which are quiet when healthy, so their result may be empty. The rule:
  the expression as written must evaluate; then it is split at its top-level comparison and
  set operators (==, !=, >, <, >=, <=, and, or, unless; `bool` and on/ignoring/group_left/
  group_right modifiers dropped) and every operand that names a metric must return series
  (absent(X) is checked as X). So `x > 0.05 and on (job) y > 0.1` checks that x and y have
  data, whatever their values.
- The rules Prometheus reports (/api/v1/rules): every alert and record named in
  deploy/prometheus/rules/*.yml (test files aside) must be loaded, with health "ok".
- Every metric name any expression uses must exist in Prometheus (a typo in an `or` branch
  would otherwise pass).

Kafka-only metrics (KAFKA_ONLY below) exist only when paycore runs with Kafka (stream.kind =
"kafka", commands enabled). Without --kafka, an expression whose only missing metrics are in
that list is reported as "kafka-only" and accepted; with --kafka they are required too.

Exit status: 0 when everything passes, 1 when something fails, 2 on a usage or connection
error.
"""

import argparse
import glob
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))

# Metrics paycore exports only with Kafka: the relay's publish counter (only with an external
# transport), the command consumer's labelled counters and its lag gauge.
KAFKA_ONLY = {
    "paycore_stream_events_published_total",
    "paycore_kafka_commands_total",
    "paycore_kafka_replies_total",
    "paycore_kafka_dead_letters_total",
    "paycore_kafka_consumer_lag_messages",
}

# Grafana's built-in interval variables, as a 1 s scrape makes sense of them.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "1h", "__range_s": "3600"}

# --- PromQL, as far as this check needs it -------------------------------------------------

TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<number>0x[0-9a-fA-F]+|[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?[a-zA-Z0-9]*|\.[0-9]+)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){}\[\],@])
    """,
    re.X,
)
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
SET_OPS = {"and", "or", "unless"}
MODIFIERS = {"on", "ignoring", "group_left", "group_right"}
GROUPING = {"by", "without"} | MODIFIERS
KEYWORDS = SET_OPS | GROUPING | {"bool", "offset", "inf", "nan", "Inf", "NaN", "start", "end"}
OPEN = {"(": ")", "{": "}", "[": "]"}


def tokens(expr):
    """(kind, text, start, end) for each token, spaces and comments left out."""
    out, pos = [], 0
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read {expr[pos:pos + 20]!r}")
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group(), m.start(), m.end()))
        pos = m.end()
    return out


def metric_names(expr):
    """Metric names of the expression's vector selectors (label names, functions, keywords and
    the label lists of by/without/on/ignoring/group_* left out)."""
    toks = tokens(expr)
    names, stack = set(), []
    skip_group = False  # inside by(...), on(...), ...: label names
    for i, (kind, text, _, _) in enumerate(toks):
        if kind == "op" and text in OPEN:
            stack.append((text, skip_group))
            skip_group = False
            continue
        if kind == "op" and text in (")", "}", "]"):
            if stack:
                stack.pop()
            continue
        if kind != "ident":
            continue
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text in GROUPING:
            skip_group = nxt == "("
            continue
        inside = stack[-1][0] if stack else ""
        in_label_list = bool(stack) and stack[-1][1]
        # Functions and aggregations (`sum(`, `sum by (x) (`) are followed by ( or by/without.
        if inside in ("{", "[") or in_label_list or text in KEYWORDS or nxt in ("(", "by", "without"):
            continue
        names.add(text)
    return names


def operands(expr):
    """The expression's operands at its top-level comparison and set operators, as text."""
    toks = tokens(expr)
    parts, depth, start, i = [], 0, 0, 0
    while i < len(toks):
        kind, text, s, e = toks[i]
        if text in OPEN:
            depth += 1
        elif text in (")", "}", "]"):
            depth -= 1
        elif depth == 0 and (text in COMPARISONS or (kind == "ident" and text in SET_OPS)):
            parts.append(expr[start:s])
            i += 1
            # Modifiers after the operator belong to neither operand.
            while i < len(toks) and toks[i][0] == "ident" and (toks[i][1] == "bool" or toks[i][1] in MODIFIERS):
                i += 1
                if i < len(toks) and toks[i][1] == "(":
                    d = 0
                    while i < len(toks):
                        if toks[i][1] == "(":
                            d += 1
                        elif toks[i][1] == ")":
                            d -= 1
                            if d == 0:
                                i += 1
                                break
                        i += 1
            start = toks[i][2] if i < len(toks) else len(expr)
            continue
        i += 1
    parts.append(expr[start:])
    out = []
    for p in parts:
        p = p.strip()
        m = re.fullmatch(r"absent\s*\((.*)\)", p, re.S)
        if m:
            p = m.group(1).strip()
        if metric_names(p):
            out.append(p)
    return out


# --- the sources ---------------------------------------------------------------------------

def substitute(expr, variables):
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in variables:
            return variables[name]
        return m.group(0)

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


def dashboard_variables(dash):
    """Each template variable's value for the check: its All value, else its current value."""
    out = {}
    for v in dash.get("templating", {}).get("list", []):
        name = v.get("name")
        if v.get("includeAll") and v.get("allValue"):
            out[name] = v["allValue"]
            continue
        cur = v.get("current", {}).get("value")
        if isinstance(cur, list):
            cur = cur[0] if cur else ""
        if cur in (None, "", "$__all"):
            cur = v.get("query") if v.get("type") in ("constant", "custom", "textbox") else ".*"
        out[name] = cur
    return out


def walk_panels(panels):
    for p in panels:
        yield p
        yield from walk_panels(p.get("panels", []))


def dashboard_exprs(path):
    """(source, expression) for every target and query variable of a Grafana dashboard."""
    dash = json.load(open(path))
    variables = dashboard_variables(dash)
    name = os.path.basename(path)
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
        if m:
            yield f"{name} variable ${v['name']}", substitute(f"count by ({m.group(2)}) ({m.group(1)})", variables)
        elif q.strip().startswith("query_result("):
            yield f"{name} variable ${v['name']}", substitute(q.strip()[len("query_result("):-1], variables)
    for p in walk_panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                yield f"{name} panel {p.get('title', '?')!r} {t.get('refId', '')}".rstrip(), substitute(t["expr"], variables)


def rule_names(paths):
    """Names of the alerts and records in rule files, in file order."""
    out = []
    for path in paths:
        for line in open(path):
            m = re.match(r"\s*-\s*(alert|record):\s*(\S+)", line)
            if m:
                out.append((m.group(1), m.group(2).strip("'\"")))
    return out


# --- Prometheus ----------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        req = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            # A query error answers 400 with a JSON body saying why.
            try:
                return json.load(e)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}"}

    def query(self, expr):
        """(series count or None, error or None)."""
        body = urllib.parse.urlencode({"query": expr}).encode()
        try:
            with urllib.request.urlopen(self.url + "/api/v1/query", data=body, timeout=30) as r:
                ans = json.load(r)
        except urllib.error.HTTPError as e:
            try:
                ans = json.load(e)
            except ValueError:
                return None, f"HTTP {e.code}"
        if ans.get("status") != "success":
            return None, f"{ans.get('errorType', 'error')}: {ans.get('error', '?')}"
        data = ans["data"]
        if data["resultType"] in ("scalar", "string"):
            return 1, None
        return len(data["result"]), None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboards", nargs="*", default=sorted(glob.glob(os.path.join(HERE, "grafana/dashboards/*.json"))))
    ap.add_argument("--rules", nargs="*", default=sorted(
        p for p in glob.glob(os.path.join(HERE, "prometheus/rules/*.yml")) if not p.endswith(".test.yml")))
    ap.add_argument("--kafka", action="store_true", help="paycore runs with Kafka: the Kafka-only metrics are required too")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every expression checked")
    args = ap.parse_args()
    prom = Prometheus(args.prometheus)

    try:
        names_ans = prom.get("/api/v1/label/__name__/values")
        rules_ans = prom.get("/api/v1/rules")
    except (urllib.error.URLError, OSError) as e:
        print(f"check_queries: cannot reach {args.prometheus}: {e}", file=sys.stderr)
        return 2
    present = set(names_ans.get("data", []))
    loaded = {}
    for g in rules_ans.get("data", {}).get("groups", []):
        for r in g["rules"]:
            loaded.setdefault((("alert" if r["type"] == "alerting" else "record"), r["name"]), []).append(r)

    failures, accepted, checked = [], [], 0
    absent_metrics = set()
    kafka_absent = set() if args.kafka else {m for m in KAFKA_ONLY if m not in present}

    def check(source, expr, may_be_empty=False):
        nonlocal checked
        checked += 1
        one_line = " ".join(expr.split())
        missing = sorted(m for m in metric_names(expr) if m not in present)
        absent_metrics.update(missing)
        n, err = prom.query(expr)
        if err:
            failures.append((source, one_line, err))
            return
        kafka_only = bool(missing) and all(m in kafka_absent for m in missing)
        # An alert's own metrics are checked through its operands (reported once, there).
        if missing and not kafka_only and not may_be_empty:
            failures.append((source, one_line, "metric(s) not in Prometheus: " + ", ".join(missing)))
            return
        if n == 0 and not may_be_empty:
            if kafka_only:
                accepted.append((source, one_line, "kafka-only, absent: " + ", ".join(missing)))
                return
            failures.append((source, one_line, "no series"))
            return
        if args.verbose:
            print(f"  ok  {n:>4}  {source}: {one_line}")

    for path in args.dashboards:
        for source, expr in dashboard_exprs(path):
            check(source, expr)

    for kind, name in rule_names(args.rules):
        rules = loaded.get((kind, name))
        if not rules:
            failures.append((f"{kind} {name}", "", "not loaded by Prometheus (/api/v1/rules)"))
            continue
        for r in rules:
            if r.get("health") not in ("ok",):
                failures.append((f"{kind} {name}", " ".join(r["query"].split()),
                                 f"rule health {r.get('health')}: {r.get('lastError', '')}"))
            expr = r["query"]
            if kind == "record":
                check(f"record {name}", expr)
                sel = name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(r.get("labels", {}).items())) + "}"
                check(f"record {name} (recorded series)", sel)
            else:
                check(f"alert {name}", expr, may_be_empty=True)
                for i, part in enumerate(operands(expr), 1):
                    check(f"alert {name} operand {i}", part)

    for source, expr, why in accepted:
        print(f"accepted  {source}: {why}\n          {expr}")
    for source, expr, why in failures:
        print(f"FAILED    {source}: {why}" + (f"\n          {expr}" if expr else ""))
    unexpected = sorted(absent_metrics - kafka_absent)
    if unexpected:
        print("metrics used but not in Prometheus: " + ", ".join(unexpected))
    print(f"check_queries: {checked} expressions checked against {args.prometheus}: "
          f"{len(failures)} failed, {len(accepted)} accepted as Kafka-only"
          + ("" if args.kafka else f" (absent here: {', '.join(sorted(kafka_absent)) or 'none'})"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
