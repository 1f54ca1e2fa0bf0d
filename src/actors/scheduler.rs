//! The timer scheduler and the stuck-order sweep. Timers live in storage, written in the same
//! transaction as the order change that needs them; the scheduler holds in memory only the
//! page of due timers it is handing out. Every tick it takes (and leases) the earliest due
//! timers, a page at a time, and hands each to its order's actor, at most `max_in_flight` at
//! once: under a backlog the rest wait in storage, not in memory. A lease means a timer whose
//! handling is lost (a crash, a stuck channel) fires again later; firing twice is harmless
//! because the order's state machine decides. Timers due while the process was down are due
//! at start-up and fire on the first tick.
//!
//! The sweep is the safety net, never the normal path: now and then it scans a bounded slice of
//! orders with open work for any without a timer, and has their actor restore the timers
//! (counted in `paycore_sweep_found_total`).

use super::orders::Orders;
use crate::config::TimerSettings;
use crate::domain::OrderId;
use crate::metrics::Metrics;
use crate::storage::OrderStore;
use std::sync::Arc;
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::{Semaphore, watch};

/// Pause after a storage error before the scheduler tries again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// `paycore_timers_pending` counts timers due within this long (the CQL backend counts its
/// due-time index bucket by bucket, so the horizon bounds the work).
const PENDING_HORIZON: time::Duration = time::Duration::hours(1);

/// Runs the scheduler and the sweep until `shutdown` turns true; then waits for the timers it
/// handed out.
pub async fn run(
    store: Arc<dyn OrderStore>,
    orders: Orders,
    settings: TimerSettings,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(settings.max_in_flight));
    let tick = Duration::from_millis(settings.tick_ms);
    let lease = time::Duration::milliseconds(settings.lease_ms as i64);
    let stats_every = Duration::from_millis(settings.stats_interval_ms);
    let sweep_every = Duration::from_millis(settings.sweep_interval_ms);
    let (mut last_stats, mut last_sweep) = (None::<Instant>, Instant::now());
    let mut sweep_cursor: Option<OrderId> = None;
    loop {
        // Hand out due timers, a page at a time, while full pages keep coming.
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = OffsetDateTime::now_utc();
            let page = match store
                .claim_due_timers(now, now + lease, settings.page_size)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read due timers; retrying");
                    tokio::time::sleep(ERROR_PAUSE).await;
                    break;
                }
            };
            let full = page.len() == settings.page_size;
            for timer in page {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let orders = orders.clone();
                tokio::spawn(async move {
                    let kind = timer.kind;
                    if let Err(e) = orders.fire_timer(timer).await {
                        tracing::debug!(timer = kind.as_str(), error = %e, "timer not handled; its lease fires it again");
                    }
                    drop(slot);
                });
            }
            if !full {
                break;
            }
        }
        if last_stats.is_none_or(|t| t.elapsed() >= stats_every) {
            last_stats = Some(Instant::now());
            let overdue_before = OffsetDateTime::now_utc()
                - time::Duration::milliseconds(settings.overdue_after_ms as i64);
            let pending_before = OffsetDateTime::now_utc() + PENDING_HORIZON;
            match store.timer_counts(overdue_before, pending_before).await {
                Ok((pending, overdue)) => {
                    metrics.timers_pending.set(pending);
                    metrics.timers_overdue.set(overdue);
                }
                Err(e) => tracing::warn!(error = %e, "cannot count timers"),
            }
        }
        if last_sweep.elapsed() >= sweep_every {
            last_sweep = Instant::now();
            sweep_cursor = sweep(&*store, &orders, sweep_cursor, settings.sweep_batch).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
    }
    // Let handed-out timers finish (each is bounded by the order call timeout).
    let _ = slots.acquire_many(settings.max_in_flight as u32).await;
}

/// One round of the stuck-order sweep over the next `batch` open orders after `cursor`;
/// answers where the next round starts.
async fn sweep(
    store: &dyn OrderStore,
    orders: &Orders,
    cursor: Option<OrderId>,
    batch: usize,
) -> Option<OrderId> {
    match store.orders_without_timers(cursor.clone(), batch).await {
        Ok((found, next)) => {
            for id in found {
                if let Err(e) = orders.ensure_timers(id.clone()).await {
                    tracing::warn!(order_id = %id, error = %e, "sweep could not restore timers");
                }
            }
            next
        }
        Err(e) => {
            tracing::warn!(error = %e, "stuck-order sweep failed");
            cursor
        }
    }
}
