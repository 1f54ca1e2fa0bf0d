//! `paycore ledger verify`: reconciles the whole ledger, for operators and tests. The
//! whole-ledger checks run in storage (`LedgerStore::scan_ledger`: balanced transactions, no
//! orphans, holds resolved at most once, snapshots equal to their postings); then every order is
//! read, a page at a time, and its postings checked against its own state
//! (`domain::ledger_audit::check_order`). The ledger lags the outbox by design: an order whose
//! last event is after the `ledger` cursor is reported as not yet booked, never as a failure.
//!
//! Where the log is not indexed by order (the CQL backend: only the order's log partition is
//! known), an order is not yet booked when it has events in the partition's tail after the
//! cursor (up to `TAIL_LIMIT` of them read), or a change still being logged (an intent), or was
//! changed after the run started (less `CLOCK_MARGIN`, for the clocks of two machines). A
//! partition whose tail is longer than the limit is judged by time instead: an order changed
//! since `UNBOOKED_MARGIN` before the tail's first event is not yet booked.

use super::ledger::CURSOR;
use crate::domain::Order;
use crate::domain::ledger_audit::check_order;
use crate::storage::{LastEvent, LedgerStore, OrderStore, StoreError};
use time::OffsetDateTime;

/// See the module's doc: how long before the ledger's first unbooked event an order changed
/// in an unindexed log still counts as possibly not yet booked, past the tail's limit.
const UNBOOKED_MARGIN: time::Duration = time::Duration::minutes(1);
/// Events read per partition after the ledger cursor, for an unindexed log.
const TAIL_LIMIT: usize = 100_000;
/// Orders changed this long before the run started may still be committing their change.
const CLOCK_MARGIN: time::Duration = time::Duration::seconds(2);

/// What is not booked yet, for an unindexed log.
struct Unbooked {
    /// Orders with events after the cursor, or being logged.
    orders: std::collections::HashSet<String>,
    /// Per partition: an order changed at or after this is not yet booked.
    since: Vec<OffsetDateTime>,
}

impl Unbooked {
    async fn read(orders: &dyn OrderStore, cursors: &[u64]) -> Result<Self, StoreError> {
        let started = OffsetDateTime::now_utc();
        let mut out = Self {
            orders: orders.orders_being_logged().await?.into_iter().collect(),
            since: Vec::with_capacity(cursors.len()),
        };
        for (partition, &cursor) in cursors.iter().enumerate() {
            let mut since = started - CLOCK_MARGIN;
            let (mut at, mut read) = (cursor, 0);
            loop {
                let page = orders
                    .events_after(partition as u32, at, 1_000.min(TAIL_LIMIT - read))
                    .await?;
                let Some(last) = page.last() else { break };
                at = last.seq;
                if read == 0 {
                    let first = page[0].event.occurred_at - UNBOOKED_MARGIN;
                    // Judged by time only if the tail runs past the limit (below).
                    since = since.min(first);
                }
                read += page.len();
                out.orders
                    .extend(page.iter().map(|e| e.event.order_id.clone()));
                if read >= TAIL_LIMIT {
                    break;
                }
            }
            if read < TAIL_LIMIT {
                // The whole tail was read: time judges only what changed during the run.
                since = started - CLOCK_MARGIN;
            }
            out.since.push(since);
        }
        Ok(out)
    }

    fn booked(&self, o: &crate::storage::AuditOrder, partition: u32) -> bool {
        !self.orders.contains(o.order.order_id.as_str())
            && self
                .since
                .get(partition as usize)
                .is_some_and(|&since| o.order.updated_at < since)
    }
}

/// Bounds of one verify run.
#[derive(Debug, Clone, Copy)]
pub struct VerifyLimits {
    /// Orders read per page.
    pub page: usize,
    /// Most failures (and most not-yet-booked order ids) listed; all are counted.
    pub max_listed: usize,
}

impl Default for VerifyLimits {
    fn default() -> Self {
        Self {
            page: 1_000,
            max_listed: 1_000,
        }
    }
}

/// What a verify run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The ledger cursors the lag was judged by, by log partition.
    pub cursors: Vec<u64>,
    /// Ledger transactions stored.
    pub transactions: u64,
    /// Postings stored.
    pub postings: u64,
    /// Orders whose ledger was checked.
    pub orders_checked: u64,
    /// Orders with events after the cursor.
    pub not_yet_booked: u64,
    /// Up to `max_listed` of them.
    pub not_yet_booked_listed: Vec<String>,
    /// Failures found.
    pub failures: u64,
    /// Up to `max_listed` of them, each one line.
    pub failures_listed: Vec<String>,
}

impl VerifyReport {
    /// Whether the ledger reconciles.
    pub fn passed(&self) -> bool {
        self.failures == 0
    }

    fn fail(&mut self, max: usize, line: String) {
        self.failures += 1;
        if self.failures_listed.len() < max {
            self.failures_listed.push(line);
        }
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "ledger: {} transactions, {} postings; {} orders checked; ledger cursor {}",
            self.transactions,
            self.postings,
            self.orders_checked,
            self.cursors
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )?;
        if self.not_yet_booked > 0 {
            writeln!(
                f,
                "not yet booked (events after the ledger cursor): {} orders",
                self.not_yet_booked
            )?;
            for id in &self.not_yet_booked_listed {
                writeln!(f, "  {id}")?;
            }
        }
        if self.passed() {
            writeln!(f, "PASSED")
        } else {
            writeln!(f, "FAILED: {} failures", self.failures)?;
            for line in &self.failures_listed {
                writeln!(f, "  {line}")?;
            }
            let unlisted = self.failures - self.failures_listed.len() as u64;
            if unlisted > 0 {
                writeln!(f, "  ... and {unlisted} more")?;
            }
            Ok(())
        }
    }
}

/// Runs every check over the whole store.
pub async fn verify(
    orders: &dyn OrderStore,
    ledger: &dyn LedgerStore,
    limits: VerifyLimits,
) -> Result<VerifyReport, StoreError> {
    let max = limits.max_listed;
    // The cursors first: every order checked below was booked up to them at least.
    let mut cursors = Vec::new();
    for partition in 0..orders.log_partitions() {
        cursors.push(orders.cursor(CURSOR, partition).await?);
    }
    let unbooked = Unbooked::read(orders, &cursors).await?;
    let scan = ledger.scan_ledger(max).await?;
    let mut report = VerifyReport {
        cursors: cursors.clone(),
        transactions: scan.transactions,
        postings: scan.postings,
        ..VerifyReport::default()
    };
    for f in scan.findings {
        report.fail(max, format!("{}: {}", f.check, f.detail));
    }
    let mut after: Option<String> = None;
    loop {
        let page = ledger
            .audit_orders(after.clone(), limits.page.max(1))
            .await?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.order.order_id.to_string());
        let full = page.len() >= limits.page.max(1);
        // Purged events passed every cursor, the ledger's included.
        let (booked, lagging): (Vec<_>, Vec<_>) =
            page.into_iter().partition(|o| match o.last_event {
                LastEvent::Purged => true,
                LastEvent::At(at) => cursors
                    .get(at.partition as usize)
                    .is_some_and(|&c| at.seq <= c),
                LastEvent::InPartition(p) => unbooked.booked(o, p),
            });
        for o in lagging {
            report.not_yet_booked += 1;
            if report.not_yet_booked_listed.len() < max {
                report
                    .not_yet_booked_listed
                    .push(o.order.order_id.to_string());
            }
        }
        let ids = booked
            .iter()
            .map(|o| o.order.order_id.to_string())
            .collect();
        let mut postings = ledger.raw_postings_for_orders(ids).await?;
        for o in &booked {
            let rows = postings
                .remove(o.order.order_id.as_str())
                .unwrap_or_default();
            let lines = check_order(&o.order, &rows);
            // Beside a running paycore the order may have changed after its page was read
            // and the ledger booked the change before its postings were read: the postings
            // are then newer than the order. Read again after the postings, an order at the
            // same version had no event after the cursors (its last one is behind them), so
            // its postings were complete and a finding stands; a newer one is not booked yet.
            if !lines.is_empty() && changed_since(orders, &o.order).await? {
                report.not_yet_booked += 1;
                if report.not_yet_booked_listed.len() < max {
                    report
                        .not_yet_booked_listed
                        .push(o.order.order_id.to_string());
                }
                continue;
            }
            report.orders_checked += 1;
            for line in lines {
                report.fail(max, line);
            }
        }
        if !full {
            break;
        }
    }
    Ok(report)
}

/// Whether the stored order is no longer at `seen`'s version.
async fn changed_since(orders: &dyn OrderStore, seen: &Order) -> Result<bool, StoreError> {
    let now = orders.load_order(&seen.order_id).await?;
    Ok(now.is_none_or(|o| o.version != seen.version))
}
