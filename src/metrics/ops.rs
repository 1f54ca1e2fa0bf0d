//! Metrics an operator's dashboard and alerts need beside the request path's: traffic per
//! merchant (labels bounded by the configured merchants, everything else is `unknown`),
//! storage errors, the periodic ledger verify, settings reloads, the build, and the process
//! itself (CPU, memory, file descriptors, from /proc).

use super::LATENCY_BUCKETS;
use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// The merchant label of requests whose merchant is not configured (or not named).
pub const UNKNOWN_MERCHANT: &str = "unknown";

/// The operator's metrics.
pub struct OpsMetrics {
    /// `paycore_merchant_requests_total{merchant,status}`: merchant-signed requests by status
    /// class (`2xx`, `4xx`, `5xx`).
    pub merchant_requests: IntCounterVec,
    /// `paycore_merchant_request_duration_seconds{merchant}`.
    pub merchant_request_seconds: HistogramVec,
    /// `paycore_storage_errors_total{op}`: `write` (a write the store failed) or `read`.
    pub storage_errors: IntCounterVec,
    /// `paycore_ledger_verify_runs_total{result}`: `passed`, `failed` (it found failures),
    /// `error` (it could not read the ledger).
    pub ledger_verify_runs: IntCounterVec,
    /// `paycore_ledger_verify_failures`: failures the last finished verify found.
    pub ledger_verify_failures: IntGauge,
    /// `paycore_ledger_verify_last_run_timestamp_seconds`.
    pub ledger_verify_last_run: Gauge,
    /// `paycore_ledger_verify_last_success_timestamp_seconds`.
    pub ledger_verify_last_success: Gauge,
    /// `paycore_config_reloads_total{result}`: `applied` or `refused`.
    pub config_reloads: IntCounterVec,
    /// `paycore_config_last_reload_success`: 1 when the last reload applied (or none was
    /// tried), 0 when it was refused.
    pub config_last_reload_success: IntGauge,
    /// `paycore_config_last_reload_timestamp_seconds`: when a reload was last tried.
    pub config_last_reload_at: Gauge,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error found at start-up.
    r.expect("static metric definition")
}

impl OpsMetrics {
    /// Builds the metrics, registers them (with the build and process collectors) in
    /// `registry`, and sets every known label value to 0 so that a dashboard panel and an
    /// alert see a series before the first event.
    pub fn new(registry: &Registry) -> Self {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            must(IntCounterVec::new(Opts::new(name, help), labels))
        };
        let m = Self {
            merchant_requests: counter_vec(
                "paycore_merchant_requests_total",
                "Merchant-signed requests by merchant and status class",
                &["merchant", "status"],
            ),
            merchant_request_seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "paycore_merchant_request_duration_seconds",
                    "Merchant-signed request latency by merchant",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["merchant"],
            )),
            storage_errors: counter_vec(
                "paycore_storage_errors_total",
                "Storage operations that failed, by kind",
                &["op"],
            ),
            ledger_verify_runs: counter_vec(
                "paycore_ledger_verify_runs_total",
                "Periodic ledger verifications by result",
                &["result"],
            ),
            ledger_verify_failures: must(IntGauge::new(
                "paycore_ledger_verify_failures",
                "Failures found by the last ledger verification",
            )),
            ledger_verify_last_run: must(Gauge::new(
                "paycore_ledger_verify_last_run_timestamp_seconds",
                "When the last ledger verification finished (unix seconds)",
            )),
            ledger_verify_last_success: must(Gauge::new(
                "paycore_ledger_verify_last_success_timestamp_seconds",
                "When a ledger verification last passed (unix seconds)",
            )),
            config_reloads: counter_vec(
                "paycore_config_reloads_total",
                "Settings reloads by result",
                &["result"],
            ),
            config_last_reload_success: must(IntGauge::new(
                "paycore_config_last_reload_success",
                "1 when the last settings reload applied (or none was tried), 0 when refused",
            )),
            config_last_reload_at: must(Gauge::new(
                "paycore_config_last_reload_timestamp_seconds",
                "When a settings reload was last tried (unix seconds)",
            )),
        };
        for op in ["write", "read"] {
            m.storage_errors.with_label_values(&[op]);
        }
        for r in ["passed", "failed", "error"] {
            m.ledger_verify_runs.with_label_values(&[r]);
        }
        for r in ["applied", "refused"] {
            m.config_reloads.with_label_values(&[r]);
        }
        m.config_last_reload_success.set(1);
        let build = must(IntGaugeVec::new(
            Opts::new("paycore_build_info", "The running build (always 1)"),
            &["version"],
        ));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        must(registry.register(Box::new(build)));
        must(registry.register(Box::new(m.merchant_requests.clone())));
        must(registry.register(Box::new(m.merchant_request_seconds.clone())));
        must(registry.register(Box::new(m.storage_errors.clone())));
        must(registry.register(Box::new(m.ledger_verify_runs.clone())));
        must(registry.register(Box::new(m.ledger_verify_failures.clone())));
        must(registry.register(Box::new(m.ledger_verify_last_run.clone())));
        must(registry.register(Box::new(m.ledger_verify_last_success.clone())));
        must(registry.register(Box::new(m.config_reloads.clone())));
        must(registry.register(Box::new(m.config_last_reload_success.clone())));
        must(registry.register(Box::new(m.config_last_reload_at.clone())));
        #[cfg(target_os = "linux")]
        must(registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        )));
        m
    }

    /// Counts one merchant-signed request; `merchant` must already be a configured id or
    /// [`UNKNOWN_MERCHANT`].
    pub fn merchant_request(&self, merchant: &str, status: &str, seconds: f64) {
        self.merchant_requests
            .with_label_values(&[merchant, status])
            .inc();
        self.merchant_request_seconds
            .with_label_values(&[merchant])
            .observe(seconds);
    }
}
