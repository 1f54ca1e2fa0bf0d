//! Prometheus metrics, one registry per running app (so tests can run several apps in one
//! process). Labels are low-cardinality only: never an order id.

mod kafka;
mod ops;

pub use kafka::KafkaMetrics;
pub use ops::{OpsMetrics, UNKNOWN_MERCHANT};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for request and channel latencies, seconds.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for writes per group commit.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// Every metric paycore exports.
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// `paycore_http_request_duration_seconds{route,method,status}`.
    pub http_request_seconds: HistogramVec,
    /// `paycore_http_requests_shed_total`: requests answered 503 at once because
    /// `server.max_in_flight_requests` were in flight.
    pub http_shed: IntCounter,
    /// `paycore_http_requests_in_flight`: requests holding an in-flight permit (at scrape time).
    pub http_in_flight: IntGauge,
    /// `paycore_orders{status}`: orders per status, refreshed from storage at scrape time.
    pub orders: IntGaugeVec,
    /// `paycore_order_transitions_total{to}`.
    pub order_transitions: IntCounterVec,
    /// `paycore_order_pay_answered_from_cache_total`: repeated pays answered from the committed
    /// state without the order's actor.
    pub pay_answered_from_cache: IntCounter,
    /// `paycore_order_actors_live`.
    pub actors_live: IntGauge,
    /// `paycore_order_actor_events_total{event}`: spawned, passivated, failed.
    pub actor_events: IntCounterVec,
    /// `paycore_storage_batch_writes`: writes per group commit.
    pub storage_batch_writes: Histogram,
    /// `paycore_storage_commit_duration_seconds`.
    pub storage_commit_seconds: Histogram,
    /// `paycore_storage_writes_total{op}`: writes the embedded store's writer applied, by kind.
    pub storage_writes: IntCounterVec,
    /// `paycore_storage_write_duration_seconds{op}`: a write's whole wait, from its caller
    /// handing it over to its answer (queue, commit interval, commit).
    pub storage_write_seconds: HistogramVec,
    /// `paycore_channel_requests_total{channel,op,outcome}`.
    pub channel_requests: IntCounterVec,
    /// `paycore_channel_request_duration_seconds{channel,op}`.
    pub channel_request_seconds: HistogramVec,
    /// `paycore_channel_queue_depth{channel}`.
    pub channel_queue_depth: IntGaugeVec,
    /// `paycore_channel_callbacks_total{channel,outcome}`.
    pub channel_callbacks: IntCounterVec,
    /// `paycore_stream_events_published_total`.
    pub stream_published: IntCounterVec,
    /// `paycore_stream_task_restarts_total{task}`: supervised stream tasks started again after
    /// a failure.
    pub stream_task_restarts: IntCounterVec,
    /// `paycore_stream_consumer_lag_events{consumer}`: events committed that a registered
    /// consumer's cursor has not passed (refreshed on `/metrics` and `/readyz`).
    pub stream_consumer_lag: IntGaugeVec,
    /// `paycore_timers_pending`: durable timers due within the next hour (counted periodically).
    pub timers_pending: IntGauge,
    /// `paycore_timers_overdue`: timers later than `timers.overdue_after_ms`.
    pub timers_overdue: IntGauge,
    /// `paycore_timers_fired_total{kind}`.
    pub timers_fired: IntCounterVec,
    /// `paycore_payment_polls_total{result}`: settled, pending, shed, error.
    pub polls: IntCounterVec,
    /// `paycore_order_closes_total{reason}`: merchant, expired, expiry_deferred.
    pub closes: IntCounterVec,
    /// `paycore_refunds_total{status}`: requested, processing, succeeded, failed, given_up.
    pub refunds: IntCounterVec,
    /// `paycore_extra_payments_total{reason}`: payments recorded and refunded automatically.
    pub extra_payments: IntCounterVec,
    /// `paycore_sweep_found_total`: open orders the stuck-order sweep found without a timer.
    pub sweep_found: IntCounter,
    /// `paycore_fulfillments_total{outcome}`: write-off attempts: succeeded, failed, given_up.
    pub fulfillments: IntCounterVec,
    /// `paycore_fulfillment_reversals_total{outcome}`: reversals before merchant refunds:
    /// reversed, refused, unavailable.
    pub reversals: IntCounterVec,
    /// `paycore_notifications_total{outcome}`: notification attempts by outcome: delivered,
    /// failed (to be retried), dead (the schedule is used up).
    pub notifications: IntCounterVec,
    /// `paycore_notifications_pending`: notifications waiting or being attempted (counted
    /// periodically).
    pub notifications_pending: IntGauge,
    /// `paycore_notification_delivery_seconds`: time of one delivery attempt.
    pub notification_delivery_seconds: Histogram,
    /// The Kafka command consumer's.
    pub kafka: KafkaMetrics,
    /// The operator's: per merchant, storage errors, ledger verify, reloads, build, process.
    pub ops: OpsMetrics,
    /// `paycore_ledger_transactions_total`: ledger transactions stored (replays skipped are not
    /// counted).
    pub ledger_transactions: IntCounter,
    /// `paycore_ledger_postings_total`: postings stored.
    pub ledger_postings: IntCounter,
    /// `paycore_ledger_batches_total`: batches of events booked (each one transaction).
    pub ledger_batches: IntCounter,
    /// `paycore_ledger_rejected_events_total`: events whose booking failed and were passed over
    /// (each logged; `paycore ledger verify` names the order).
    pub ledger_rejected: IntCounter,
    /// `paycore_ledger_cursor`: outbox position the ledger has booked up to.
    pub ledger_cursor: IntGauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error found at start-up.
    r.expect("static metric definition")
}

impl Metrics {
    /// Builds and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| must(registry.register(c));
        let http_request_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "paycore_http_request_duration_seconds",
                "HTTP request latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method", "status"],
        ));
        let http_shed = must(IntCounter::new(
            "paycore_http_requests_shed_total",
            "Requests refused at once because the in-flight bound was reached",
        ));
        let http_in_flight = must(IntGauge::new(
            "paycore_http_requests_in_flight",
            "Requests being handled (operations routes aside)",
        ));
        let orders = must(IntGaugeVec::new(
            Opts::new("paycore_orders", "Orders per status"),
            &["status"],
        ));
        let order_transitions = must(IntCounterVec::new(
            Opts::new(
                "paycore_order_transitions_total",
                "Order status changes committed",
            ),
            &["to"],
        ));
        let pay_answered_from_cache = must(IntCounter::new(
            "paycore_order_pay_answered_from_cache_total",
            "Repeated pays answered from the committed order state, without the order's actor",
        ));
        let actors_live = must(IntGauge::new(
            "paycore_order_actors_live",
            "Live per-order actors",
        ));
        let actor_events = must(IntCounterVec::new(
            Opts::new(
                "paycore_order_actor_events_total",
                "Order actor lifecycle events",
            ),
            &["event"],
        ));
        let storage_batch_writes = must(Histogram::with_opts(
            HistogramOpts::new("paycore_storage_batch_writes", "Writes per group commit")
                .buckets(BATCH_BUCKETS.to_vec()),
        ));
        let storage_commit_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "paycore_storage_commit_duration_seconds",
                "Group commit latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        ));
        let storage_writes = must(IntCounterVec::new(
            Opts::new(
                "paycore_storage_writes_total",
                "Writes the embedded store's writer applied, by kind",
            ),
            &["op"],
        ));
        let storage_write_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "paycore_storage_write_duration_seconds",
                "A write's wait from hand-over to answer: queue, commit interval and commit",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        ));
        let channel_requests = must(IntCounterVec::new(
            Opts::new(
                "paycore_channel_requests_total",
                "Requests to payment channels",
            ),
            &["channel", "op", "outcome"],
        ));
        let channel_request_seconds = must(HistogramVec::new(
            HistogramOpts::new(
                "paycore_channel_request_duration_seconds",
                "Channel request latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["channel", "op"],
        ));
        let channel_queue_depth = must(IntGaugeVec::new(
            Opts::new(
                "paycore_channel_queue_depth",
                "Requests waiting for a channel slot",
            ),
            &["channel"],
        ));
        let channel_callbacks = must(IntCounterVec::new(
            Opts::new(
                "paycore_channel_callbacks_total",
                "Channel callbacks received",
            ),
            &["channel", "outcome"],
        ));
        let stream_published = must(IntCounterVec::new(
            Opts::new(
                "paycore_stream_events_published_total",
                "Events published to the stream",
            ),
            &["type"],
        ));
        let stream_task_restarts = must(IntCounterVec::new(
            Opts::new(
                "paycore_stream_task_restarts_total",
                "Supervised stream tasks started again after a failure",
            ),
            &["task"],
        ));
        let stream_consumer_lag = must(IntGaugeVec::new(
            Opts::new(
                "paycore_stream_consumer_lag_events",
                "Committed events a registered log consumer has not passed",
            ),
            &["consumer"],
        ));
        let counter_vec = |name: &str, help: &str, label: &str| {
            must(IntCounterVec::new(Opts::new(name, help), &[label]))
        };
        let timers_pending = must(IntGauge::new(
            "paycore_timers_pending",
            "Durable timers due within the next hour",
        ));
        let timers_overdue = must(IntGauge::new(
            "paycore_timers_overdue",
            "Durable timers past due by more than timers.overdue_after_ms",
        ));
        let timers_fired = counter_vec("paycore_timers_fired_total", "Timers fired", "kind");
        let polls = counter_vec(
            "paycore_payment_polls_total",
            "Status queries of paying orders by result",
            "result",
        );
        let closes = counter_vec("paycore_order_closes_total", "Order closes", "reason");
        let refunds = counter_vec("paycore_refunds_total", "Refunds by status", "status");
        let extra_payments = counter_vec(
            "paycore_extra_payments_total",
            "Channel payments that could not be applied, recorded and refunded",
            "reason",
        );
        let sweep_found = must(IntCounter::new(
            "paycore_sweep_found_total",
            "Open orders found without a timer by the stuck-order sweep",
        ));
        let notifications = counter_vec(
            "paycore_notifications_total",
            "Merchant notification attempts by outcome",
            "outcome",
        );
        // Series an alert watches exist from the start (an absent series never fires).
        for outcome in ["delivered", "failed", "dead"] {
            notifications.with_label_values(&[outcome]);
        }
        let notifications_pending = must(IntGauge::new(
            "paycore_notifications_pending",
            "Merchant notifications waiting for delivery",
        ));
        let notification_delivery_seconds = must(Histogram::with_opts(
            HistogramOpts::new(
                "paycore_notification_delivery_seconds",
                "Merchant notification attempt latency",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        ));
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            reg(Box::new(c.clone()));
            c
        };
        let ledger_transactions = counter(
            "paycore_ledger_transactions_total",
            "Ledger transactions stored",
        );
        let ledger_postings = counter("paycore_ledger_postings_total", "Ledger postings stored");
        let ledger_batches = counter(
            "paycore_ledger_batches_total",
            "Batches of events booked in the ledger",
        );
        let ledger_rejected = counter(
            "paycore_ledger_rejected_events_total",
            "Events the ledger could not book and passed over",
        );
        let ledger_cursor = must(IntGauge::new(
            "paycore_ledger_cursor",
            "Outbox position the ledger has booked up to",
        ));
        reg(Box::new(ledger_cursor.clone()));
        reg(Box::new(notifications.clone()));
        reg(Box::new(notifications_pending.clone()));
        reg(Box::new(notification_delivery_seconds.clone()));
        reg(Box::new(timers_pending.clone()));
        reg(Box::new(timers_overdue.clone()));
        reg(Box::new(timers_fired.clone()));
        reg(Box::new(polls.clone()));
        reg(Box::new(closes.clone()));
        reg(Box::new(refunds.clone()));
        reg(Box::new(extra_payments.clone()));
        reg(Box::new(sweep_found.clone()));
        let fulfillments = must(IntCounterVec::new(
            Opts::new(
                "paycore_fulfillments_total",
                "Write-off attempts at merchants' business systems",
            ),
            &["outcome"],
        ));
        reg(Box::new(fulfillments.clone()));
        let reversals = must(IntCounterVec::new(
            Opts::new(
                "paycore_fulfillment_reversals_total",
                "Write-off reversals before merchant refunds",
            ),
            &["outcome"],
        ));
        reg(Box::new(reversals.clone()));
        reg(Box::new(http_request_seconds.clone()));
        reg(Box::new(http_shed.clone()));
        reg(Box::new(http_in_flight.clone()));
        reg(Box::new(orders.clone()));
        reg(Box::new(order_transitions.clone()));
        reg(Box::new(pay_answered_from_cache.clone()));
        reg(Box::new(actors_live.clone()));
        reg(Box::new(actor_events.clone()));
        reg(Box::new(storage_batch_writes.clone()));
        reg(Box::new(storage_commit_seconds.clone()));
        reg(Box::new(storage_writes.clone()));
        reg(Box::new(storage_write_seconds.clone()));
        reg(Box::new(channel_requests.clone()));
        reg(Box::new(channel_request_seconds.clone()));
        reg(Box::new(channel_queue_depth.clone()));
        reg(Box::new(channel_callbacks.clone()));
        reg(Box::new(stream_published.clone()));
        reg(Box::new(stream_task_restarts.clone()));
        reg(Box::new(stream_consumer_lag.clone()));
        // Every known label value from the start, so that a panel and an alert see a series
        // (at 0) before the first event.
        let known: [(&IntCounterVec, &[&str]); 7] = [
            (&timers_fired, &["poll", "expire", "refund", "fulfill"]),
            (&polls, &["settled", "pending", "shed", "error"]),
            (&closes, &["merchant", "expired", "expiry_deferred"]),
            (
                &refunds,
                &["requested", "processing", "succeeded", "failed", "given_up"],
            ),
            (
                &extra_payments,
                &[
                    "order_not_payable",
                    "duplicate_charge",
                    "amount_mismatch",
                    "currency_mismatch",
                ],
            ),
            (&fulfillments, &["succeeded", "failed", "given_up"]),
            (&reversals, &["reversed", "refused", "unavailable"]),
        ];
        for (metric, values) in known {
            for v in values {
                metric.with_label_values(&[v]);
            }
        }
        let kafka = KafkaMetrics::new(&registry);
        let ops = OpsMetrics::new(&registry);
        Self {
            registry,
            http_request_seconds,
            http_shed,
            http_in_flight,
            orders,
            order_transitions,
            pay_answered_from_cache,
            actors_live,
            actor_events,
            storage_batch_writes,
            storage_commit_seconds,
            storage_writes,
            storage_write_seconds,
            channel_requests,
            channel_request_seconds,
            channel_queue_depth,
            channel_callbacks,
            stream_published,
            stream_task_restarts,
            stream_consumer_lag,
            timers_pending,
            timers_overdue,
            timers_fired,
            polls,
            closes,
            refunds,
            extra_payments,
            sweep_found,
            fulfillments,
            reversals,
            notifications,
            notifications_pending,
            notification_delivery_seconds,
            kafka,
            ops,
            ledger_transactions,
            ledger_postings,
            ledger_batches,
            ledger_rejected,
            ledger_cursor,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
