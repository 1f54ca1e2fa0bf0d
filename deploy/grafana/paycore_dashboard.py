#!/usr/bin/env python3
"""Writes deploy/grafana/dashboards/paycore.json, the operator's first dashboard for paycore.

    python3 deploy/grafana/paycore_dashboard.py           # write it
    python3 deploy/grafana/paycore_dashboard.py --check   # exit 1 when the JSON is not what this writes

The panels are listed here as data (title, queries, unit), laid out in rows; editing this file
and running it keeps the JSON consistent (ids, grid positions, the datasource variable). A
dashboard edited in Grafana's UI can be exported over the JSON, but then bring the change here.

Every query reads the raw series paycore exports (no recording rules), so the dashboard works
on any Prometheus that scrapes paycore; deploy/check_queries.py proves each one returns data
from a running paycore.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards", "paycore.json")

DS = {"type": "prometheus", "uid": "${datasource}"}
F = 'job=~"$job", instance=~"$instance"'
# Probes, /metrics and the admin routes are not traffic.
OPS = '/healthz|/readyz|/metrics|/openapi.json|/admin/.*'
RI = "$__rate_interval"


def rate(metric, sel="", by=None):
    s = f"{F}, {sel}" if sel else F
    inner = f"rate({metric}{{{s}}}[{RI}])"
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def ratio(metric, bad, sel, by):
    """Share of `metric`'s rate matching `bad`: 0, not absent, while there is none."""
    all_ = rate(metric, sel, by)
    bad_ = rate(metric, f"{sel}, {bad}" if sel else bad, by)
    return f"({bad_} or {all_} * 0) / {all_}"


def quantile(q, metric, sel="", by="le"):
    s = f"{F}, {sel}" if sel else F
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{s}}}[{RI}])))"


# --- panels ------------------------------------------------------------------------------

def ts(title, targets, unit="short", desc="", w=8, h=8, stack=False):
    return {"kind": "timeseries", "title": title, "targets": targets, "unit": unit, "desc": desc,
            "w": w, "h": h, "stack": stack}


def stat(title, targets, unit="short", desc="", w=3, h=4, thresholds=None, mappings=None, text=False):
    return {"kind": "stat", "title": title, "targets": targets, "unit": unit, "desc": desc, "w": w,
            "h": h, "thresholds": thresholds, "mappings": mappings, "text": text}


def row(title, *panels):
    return {"kind": "row", "title": title, "panels": list(panels)}


GREEN_RED = [("green", None), ("red", 1)]
UP_MAP = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red"}, "1": {"text": "UP", "color": "green"}}}]
OK_MAP = [{"type": "value", "options": {"0": {"text": "REFUSED", "color": "red"}, "1": {"text": "APPLIED", "color": "green"}}}]

ROUTES = f'route!~"{OPS}"'
HTTP = "paycore_http_request_duration_seconds"
MERCH = 'merchant=~"$merchant"'

ROWS = [
    row("Overview",
        stat("paycore up", [(f'min(up{{{F}}})', "")], desc="Every scraped paycore answers /metrics.",
             thresholds=[("red", None), ("green", 1)], mappings=UP_MAP),
        stat("Requests/s", [(rate(f"{HTTP}_count", ROUTES), "")], unit="reqps",
             desc="Merchant and callback requests (probes and /metrics left out)."),
        stat("5xx ratio", [(ratio(f"{HTTP}_count", 'status="5xx"', ROUTES, None), "")],
             unit="percentunit", thresholds=[("green", None), ("orange", 0.01), ("red", 0.05)]),
        stat("p99 latency", [(quantile(0.99, HTTP, ROUTES), "")], unit="s",
             thresholds=[("green", None), ("orange", 0.025), ("red", 0.25)],
             desc="All merchant routes; pay and close include the channel's time."),
        stat("PAYING backlog", [(f'max(paycore_orders{{{F}, status="PAYING"}})', "")],
             desc="Orders waiting for their payment result."),
        stat("Worst consumer lag", [(f"max(paycore_stream_consumer_lag_events{{{F}}})", "")],
             thresholds=[("green", None), ("orange", 50000), ("red", 250000)],
             desc="Events the furthest-behind log consumer has not passed; /readyz fails at stream.max_consumer_lag."),
        stat("Ledger verify failures", [(f"max(paycore_ledger_verify_failures{{{F}}})", "")],
             thresholds=GREEN_RED, desc="Failures the last periodic ledger verify found (0 = the ledger reconciles)."),
        stat("Version", [(f"max by (version) (paycore_build_info{{{F}}})", "{{version}}")], text=True),
        ),
    row("Traffic",
        ts("Requests/s by route", [(rate(f"{HTTP}_count", ROUTES, "route"), "{{route}}")], "reqps"),
        ts("Requests/s by status class", [(rate(f"{HTTP}_count", ROUTES, "status"), "{{status}}")], "reqps", stack=True),
        ts("Shed and in flight", [(rate("paycore_http_requests_shed_total"), "shed/s (503 overloaded)"),
                                  (f"sum(paycore_http_requests_in_flight{{{F}}})", "in flight")],
           desc="Requests refused at once at server.max_in_flight_requests, and requests being handled."),
        ts("5xx ratio by route", [(ratio(f"{HTTP}_count", 'status="5xx"', ROUTES, "route"), "{{route}}")], "percentunit"),
        ts("4xx ratio by route", [(ratio(f"{HTTP}_count", 'status="4xx"', ROUTES, "route"), "{{route}}")], "percentunit",
           desc="Merchant-side refusals: signatures, replays, rate limits (429), conflicts (409)."),
        ts("p50 latency by route", [(quantile(0.5, HTTP, ROUTES, "route, le"), "{{route}}")], "s"),
        ts("p99 latency by route", [(quantile(0.99, HTTP, ROUTES, "route, le"), "{{route}}")], "s",
           desc="Paging budget 250 ms for the routes paycore answers alone, 2.5 s for pay and close (RUNBOOK.md)."),
        ts("Requests/s by merchant", [(rate("paycore_merchant_requests_total", MERCH, "merchant, status"), "{{merchant}} {{status}}")], "reqps"),
        ts("5xx ratio by merchant", [(ratio("paycore_merchant_requests_total", 'status="5xx"', MERCH, "merchant"), "{{merchant}}")], "percentunit"),
        ts("Latency by merchant", [(quantile(0.5, "paycore_merchant_request_duration_seconds", MERCH, "merchant, le"), "p50 {{merchant}}"),
                                   (quantile(0.99, "paycore_merchant_request_duration_seconds", MERCH, "merchant, le"), "p99 {{merchant}}")], "s"),
        ),
    row("Orders",
        ts("Orders by status", [(f"max by (status) (paycore_orders{{{F}}})", "{{status}}")],
           desc="Orders in storage per status (refreshed at each scrape)."),
        ts("Transitions/s", [(rate("paycore_order_transitions_total", "", "to"), "to {{to}}")], "ops", stack=True),
        ts("PAYING backlog", [(f'max(paycore_orders{{{F}, status="PAYING"}})', "PAYING")],
           desc="Growing for 30 minutes pages (PaycorePayingBacklogGrowing)."),
        ts("Timers pending and overdue", [(f"max(paycore_timers_pending{{{F}}})", "pending (due within an hour)"),
                                          (f"max(paycore_timers_overdue{{{F}}})", "overdue")]),
        ts("Timers fired/s by kind", [(rate("paycore_timers_fired_total", "", "kind"), "{{kind}}")], "ops"),
        ts("Settlement", [(rate("paycore_payment_polls_total", "", "result"), "poll {{result}}"),
                          (rate("paycore_order_closes_total", "", "reason"), "close {{reason}}"),
                          (rate("paycore_refunds_total", "", "status"), "refund {{status}}"),
                          (rate("paycore_extra_payments_total", "", "reason"), "extra payment {{reason}}"),
                          (rate("paycore_sweep_found_total"), "sweep found (should be 0)")], "ops"),
        ts("Fulfillment", [(rate("paycore_fulfillments_total", "", "outcome"), "write-off {{outcome}}"),
                           (rate("paycore_fulfillment_reversals_total", "", "outcome"), "reversal {{outcome}}")], "ops",
           desc="Write-offs at the merchants' business systems, and reversals before refunds."),
        ),
    row("Channels",
        ts("Channel requests/s by outcome", [(rate("paycore_channel_requests_total", "", "channel, outcome"), "{{channel}} {{outcome}}")], "reqps",
           desc='outcome "busy" is a request shed by paycore (503 channel_busy) without reaching the channel.'),
        ts("Shed (busy) ratio by channel", [(ratio("paycore_channel_requests_total", 'outcome="busy"', "", "channel"), "{{channel}}")], "percentunit"),
        ts("Channel queue depth", [(f"max by (channel) (paycore_channel_queue_depth{{{F}}})", "{{channel}}")],
           desc="Requests waiting for a channel slot; queue_capacity is the bound."),
        ts("Channel latency p50", [(quantile(0.5, "paycore_channel_request_duration_seconds", "", "channel, op, le"), "{{channel}} {{op}}")], "s"),
        ts("Channel latency p99", [(quantile(0.99, "paycore_channel_request_duration_seconds", "", "channel, op, le"), "{{channel}} {{op}}")], "s"),
        ts("Channel callbacks/s by outcome", [(rate("paycore_channel_callbacks_total", "", "channel, outcome"), "{{channel}} {{outcome}}")], "reqps"),
        ),
    row("Storage",
        ts("Commit latency", [(quantile(0.5, "paycore_storage_commit_duration_seconds"), "p50"),
                              (quantile(0.99, "paycore_storage_commit_duration_seconds"), "p99")], "s",
           desc="One group commit (with synchronous = full, its fsync)."),
        ts("Commits/s", [(rate("paycore_storage_commit_duration_seconds_count"), "commits")], "ops"),
        ts("Write wait p99 by kind", [(quantile(0.99, "paycore_storage_write_duration_seconds", "", "op, le"), "{{op}}")], "s",
           desc="A write's wait from hand-over to answer: the writer's queue, the commit interval and the commit. A request waits this once per write it makes (a pay: two)."),
        ts("Writes per commit", [(quantile(0.5, "paycore_storage_batch_writes"), "p50"),
                                 (quantile(0.99, "paycore_storage_batch_writes"), "p99"),
                                 (f"{rate('paycore_storage_batch_writes_sum')} / {rate('paycore_storage_batch_writes_count')}", "mean")]),
        ts("Storage errors/s", [(rate("paycore_storage_errors_total", "", "op"), "{{op}}")], "ops",
           desc="Failed storage writes and reads; any for 5 minutes pages (PaycoreStorageErrors)."),
        ),
    row("Actors",
        ts("Live order actors", [(f"sum by (instance) (paycore_order_actors_live{{{F}}})", "{{instance}}")],
           desc="actors.max_live_orders is the cap; idle ones are passivated."),
        ts("Actor events/s", [(rate("paycore_order_actor_events_total", "", "event"), "{{event}}")], "ops"),
        ts("Pays answered from cache/s", [(rate("paycore_order_pay_answered_from_cache_total"), "from cache")], "ops"),
        ),
    row("Streams and Kafka",
        ts("Log consumer lag", [(f"max by (consumer) (paycore_stream_consumer_lag_events{{{F}}})", "{{consumer}}")],
           desc="Events each consumer of the outbox (notifier, ledger, relay) has not passed."),
        ts("Events published/s (Kafka)", [(rate("paycore_stream_events_published_total", "", "type"), "{{type}}")], "ops",
           desc='Events relayed to the Kafka events topic; only with stream.kind = "kafka".'),
        ts("Stream task restarts/s", [(rate("paycore_stream_task_restarts_total", "", "task"), "{{task}}")], "ops"),
        ts("Kafka commands/s", [(rate("paycore_kafka_commands_total", "", "command, outcome"), "{{command}} {{outcome}}")], "ops",
           desc="Only with stream.kafka.commands.enabled."),
        ts("Kafka commands in flight, paused partitions", [(f"sum(paycore_kafka_commands_in_flight{{{F}}})", "in flight"),
                                                           (f"sum(paycore_kafka_paused_partitions{{{F}}})", "paused partitions"),
                                                           (rate("paycore_kafka_partition_pauses_total"), "pauses/s")]),
        ts("Kafka replies/s", [(rate("paycore_kafka_replies_total", "", "status"), "{{status}}")], "ops"),
        ts("Kafka dead letters/s", [(rate("paycore_kafka_dead_letters_total", "", "reason"), "{{reason}}")], "ops"),
        ts("Kafka command consumer lag", [(f"sum(paycore_kafka_consumer_lag_messages{{{F}}})", "messages not consumed")]),
        ),
    row("Notifications",
        ts("Notifications pending", [(f"max(paycore_notifications_pending{{{F}}})", "pending")],
           desc="Merchant notifications waiting or being attempted."),
        ts("Notification attempts/s", [(rate("paycore_notifications_total", "", "outcome"), "{{outcome}}")], "ops", stack=True),
        stat("Dead letters (24 h)", [(f'sum(increase(paycore_notifications_total{{{F}, outcome="dead"}}[24h]))', "")],
             thresholds=GREEN_RED, w=4, h=8, desc="Notifications that used their whole retry schedule; redeliver with POST /v1/notifications/{id}/redeliver."),
        ts("Delivery latency", [(quantile(0.5, "paycore_notification_delivery_seconds"), "p50"),
                                (quantile(0.99, "paycore_notification_delivery_seconds"), "p99")], "s", w=4),
        ),
    row("Ledger",
        ts("Ledger bookings/s", [(rate("paycore_ledger_postings_total"), "postings"),
                                 (rate("paycore_ledger_transactions_total"), "transactions"),
                                 (rate("paycore_ledger_batches_total"), "batches")], "ops"),
        ts("Rejected events/s", [(rate("paycore_ledger_rejected_events_total"), "rejected")], "ops",
           desc="Events the ledger could not book and passed over (each logged); any pages."),
        stat("Last verify: failures", [(f"max(paycore_ledger_verify_failures{{{F}}})", "")], thresholds=GREEN_RED, w=2, h=8),
        stat("Since last verify run", [(f"time() - max(paycore_ledger_verify_last_run_timestamp_seconds{{{F}}})", "")], unit="s", w=2, h=8),
        stat("Since last verify success", [(f"time() - max(paycore_ledger_verify_last_success_timestamp_seconds{{{F}}})", "")], unit="s", w=2, h=8,
             thresholds=[("green", None), ("red", 3 * 3600)]),
        stat("Verify runs in range", [(f"sum by (result) (increase(paycore_ledger_verify_runs_total{{{F}}}[$__range]))", "{{result}}")], w=2, h=8),
        ),
    row("Process",
        ts("CPU", [(f"sum by (instance) (rate(process_cpu_seconds_total{{{F}}}[{RI}]))", "{{instance}}")], "short",
           desc="Cores used."),
        ts("Resident memory", [(f"sum by (instance) (process_resident_memory_bytes{{{F}}})", "{{instance}}")], "bytes"),
        stat("Uptime", [(f"time() - max(process_start_time_seconds{{{F}}})", "")], unit="s", w=2, h=8),
        stat("Last config reload", [(f"min(paycore_config_last_reload_success{{{F}}})", "")], mappings=OK_MAP,
             thresholds=[("red", None), ("green", 1)], w=2, h=8),
        stat("Since last reload", [(f"time() - max(paycore_config_last_reload_timestamp_seconds{{{F}}})", "")], unit="s", w=2, h=8),
        stat("Reloads in range", [(f"sum by (result) (increase(paycore_config_reloads_total{{{F}}}[$__range]))", "{{result}}")], w=2, h=8),
        ),
]


# --- JSON ------------------------------------------------------------------------------

def thresholds(steps):
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def targets(ts_):
    refs = "ABCDEFGHIJ"
    return [{"datasource": DS, "expr": e, "legendFormat": lf or "__auto", "range": True, "refId": refs[i]}
            for i, (e, lf) in enumerate(ts_)]


def panel_json(p, pid, x, y):
    base = {"id": pid, "type": p["kind"], "title": p["title"], "datasource": DS,
            "gridPos": {"h": p["h"], "w": p["w"], "x": x, "y": y}, "targets": targets(p["targets"])}
    if p["desc"]:
        base["description"] = p["desc"]
    if p["kind"] == "timeseries":
        base["fieldConfig"] = {"defaults": {"unit": p["unit"], "custom": {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": False,
            "stacking": {"mode": "normal" if p["stack"] else "none", "group": "A"}}}, "overrides": []}
        base["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                           "tooltip": {"mode": "multi", "sort": "desc"}}
    else:
        defaults = {"unit": p["unit"], "thresholds": thresholds(p["thresholds"] or [("green", None)])}
        if p["mappings"]:
            defaults["mappings"] = p["mappings"]
        base["fieldConfig"] = {"defaults": defaults, "overrides": []}
        base["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "/.*/" if p["text"] else "", "values": False},
                           "colorMode": "value", "graphMode": "none" if p["text"] else "area",
                           "textMode": "name" if p["text"] else "auto", "justifyMode": "auto", "orientation": "auto"}
    return base


def layout():
    panels, pid, y = [], 1, 0
    for r in ROWS:
        panels.append({"id": pid, "type": "row", "title": r["title"], "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        x, line_h = 0, 0
        for p in r["panels"]:
            if x + p["w"] > 24:
                x, y, line_h = 0, y + line_h, 0
            panels.append(panel_json(p, pid, x, y))
            pid += 1
            x += p["w"]
            line_h = max(line_h, p["h"])
        y += line_h
    return panels


def variable(name, label, query, include_all, current=None, multi=False):
    v = {"name": name, "label": label, "type": "query", "datasource": DS,
         "definition": query, "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
         "refresh": 2, "sort": 1, "hide": 0, "regex": "", "multi": multi, "includeAll": include_all, "options": []}
    if include_all:
        v["allValue"] = ".*"
        v["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    else:
        v["current"] = {"selected": True, "text": current, "value": current}
    return v


def dashboard():
    return {
        "uid": "paycore",
        "title": "paycore",
        "description": "paycore's operator view: traffic, orders, channels, storage, actors, streams and Kafka, notifications, ledger, process. Alerts and runbook: deploy/prometheus/.",
        "tags": ["paycore"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [],
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1, "regex": "", "includeAll": False, "multi": False, "options": []},
            variable("job", "Job", "label_values(paycore_http_requests_in_flight, job)", False, current="paycore"),
            variable("instance", "Instance", 'label_values(paycore_http_requests_in_flight{job=~"$job"}, instance)', True, multi=True),
            variable("merchant", "Merchant", 'label_values(paycore_merchant_requests_total{job=~"$job", instance=~"$instance"}, merchant)', True, multi=True),
        ]},
        "panels": layout(),
    }


def main():
    text = json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"
    if "--check" in sys.argv[1:]:
        if open(OUT).read() != text:
            print(f"{OUT} is not what {os.path.basename(__file__)} writes: run it", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    open(OUT, "w").write(text)
    n = sum(1 for p in dashboard()["panels"] if p["type"] != "row")
    print(f"wrote {OUT}: {len(ROWS)} rows, {n} panels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
