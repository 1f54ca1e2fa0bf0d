//! `paycore ledger verify`: reconciles the whole ledger, for operators and tests. The
//! whole-ledger checks run in storage (`LedgerStore::scan_ledger`: balanced transactions, no
//! orphans, holds resolved at most once, snapshots equal to their postings); then every order is
//! read, a page at a time, and its postings checked against its own state
//! (`domain::ledger_audit::check_order`). The ledger lags the outbox by design: an order whose
//! last event is after the `ledger` cursor is reported as not yet booked, never as a failure.

use super::ledger::CURSOR;
use crate::domain::ledger_audit::check_order;
use crate::storage::{LedgerStore, OrderStore, StoreError};

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
        let (booked, lagging): (Vec<_>, Vec<_>) = page.into_iter().partition(|o| {
            o.last_event.is_none_or(|at| {
                cursors
                    .get(at.partition as usize)
                    .is_some_and(|&c| at.seq <= c)
            })
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
            report.orders_checked += 1;
            let rows = postings
                .remove(o.order.order_id.as_str())
                .unwrap_or_default();
            for line in check_order(&o.order, &rows) {
                report.fail(max, line);
            }
        }
        if !full {
            break;
        }
    }
    Ok(report)
}
