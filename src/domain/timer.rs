//! Durable timers, as pure rules: which timers an order needs after a change (`plan`), and when
//! a fired timer comes back (`Schedule`). A timer only wakes the order's actor; the order's state
//! machine decides what happens, so a timer that fires twice changes nothing twice. Timers carry
//! the order id: with several nodes, the node that owns an order runs its timers.

use super::ids::OrderId;
use super::order::{Order, OrderStatus};
use std::time::Duration;
use time::OffsetDateTime;

/// What a timer is for. One timer of each kind per order at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Ask the channel how a payment stands (its callback may be lost).
    Poll,
    /// Close the order at its expiry time (asking the channel first if a payment was opened).
    Expire,
    /// Try open refunds again (querying the channel first).
    Refund,
    /// Carry out (or retry) the write-off of a paid order at its business system.
    Fulfill,
}

impl TimerKind {
    /// Every kind.
    pub const ALL: [TimerKind; 4] = [
        TimerKind::Poll,
        TimerKind::Expire,
        TimerKind::Refund,
        TimerKind::Fulfill,
    ];

    /// Stored and labelled spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::Poll => "poll",
            TimerKind::Expire => "expire",
            TimerKind::Refund => "refund",
            TimerKind::Fulfill => "fulfill",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A stored timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    /// The order it wakes.
    pub order_id: OrderId,
    /// What for.
    pub kind: TimerKind,
    /// When.
    pub due_at: OffsetDateTime,
    /// How many times it has fired before (selects the next delay).
    pub attempt: u32,
}

/// A change to an order's timers, written in the same transaction as the order change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerOp {
    /// Create or replace the order's timer of this kind.
    Set {
        /// Kind.
        kind: TimerKind,
        /// When.
        due_at: OffsetDateTime,
        /// Attempt number it carries.
        attempt: u32,
    },
    /// Create it only if the order has none of this kind (the stuck-order sweep).
    Ensure {
        /// Kind.
        kind: TimerKind,
        /// When.
        due_at: OffsetDateTime,
        /// Attempt number it carries.
        attempt: u32,
    },
    /// Remove the order's timer of this kind.
    Clear(TimerKind),
}

/// Delays for one merchant's orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// Delay before each status query of a paying order, by attempt; after the last, the
    /// expiry timer alone follows the order.
    pub poll: Vec<Duration>,
    /// Delay before each retry of open refunds, by attempt; after the last, an open refund is
    /// given up (FAILED) and an operator is needed.
    pub refund_retry: Vec<Duration>,
    /// Delay before retrying an expiry close whose channel answer was missing, by attempt (the
    /// last repeats: the order is never closed blind).
    pub expire_retry: Vec<Duration>,
    /// Delay before each retry of a failed write-off (the seed: every 15 minutes); the first
    /// attempt is made at once after PAID. After the last retry fails, fulfillment is given up
    /// and the order refunded.
    pub fulfillment_retry: Vec<Duration>,
}

/// When the timer that backs up a paid order's first write-off fires, should that attempt
/// (made at once after PAID) never happen (a crash in between).
pub const FULFILLMENT_BACKSTOP: Duration = Duration::from_secs(10);

impl Schedule {
    /// The seed's defaults: polls at 5 s, 10 s, 30 s, 1 min, 2 min, 5 min, 10 min, 30 min, 1 h.
    pub fn standard() -> Self {
        let s = |v: &[u64]| v.iter().map(|&x| Duration::from_secs(x)).collect();
        Self {
            poll: s(&[5, 10, 30, 60, 120, 300, 600, 1800, 3600]),
            refund_retry: s(&[
                10, 30, 60, 120, 300, 600, 1800, 3600, 3600, 3600, 7200, 7200,
            ]),
            expire_retry: s(&[5, 15, 30, 60, 300]),
            fulfillment_retry: s(&[900; 8]),
        }
    }

    /// After write-off attempt number `attempts` failed: the timer of the next one, or `None`
    /// when it was the last (fulfillment is given up).
    pub fn next_fulfillment(&self, now: OffsetDateTime, attempts: u32) -> Option<TimerOp> {
        let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
        let delay = self.fulfillment_retry.get(index)?;
        Some(TimerOp::Set {
            kind: TimerKind::Fulfill,
            due_at: now + *delay,
            attempt: attempts,
        })
    }

    /// After poll number `attempt` fired: the next poll, if the schedule goes on.
    pub fn next_poll(&self, now: OffsetDateTime, attempt: u32) -> Option<TimerOp> {
        let next = attempt.saturating_add(1);
        let delay = self.poll.get(next as usize)?;
        Some(TimerOp::Set {
            kind: TimerKind::Poll,
            due_at: now + *delay,
            attempt: next,
        })
    }

    /// After refund retry number `attempt` fired and refunds are still open: the next retry,
    /// or `None` when they are to be given up.
    pub fn next_refund(&self, now: OffsetDateTime, attempt: u32) -> Option<TimerOp> {
        let delay = self.refund_retry.get(attempt as usize)?;
        Some(TimerOp::Set {
            kind: TimerKind::Refund,
            due_at: now + *delay,
            attempt: attempt.saturating_add(1),
        })
    }

    /// After an expiry close attempt `attempt` could not finish: try again later.
    pub fn next_expire(&self, now: OffsetDateTime, attempt: u32) -> TimerOp {
        let delay = self
            .expire_retry
            .get(attempt as usize)
            .or(self.expire_retry.last())
            .copied()
            .unwrap_or(Duration::from_secs(60));
        TimerOp::Set {
            kind: TimerKind::Expire,
            due_at: now + delay,
            attempt: attempt.saturating_add(1),
        }
    }
}

fn is_final(status: OrderStatus) -> bool {
    !matches!(status, OrderStatus::Created | OrderStatus::Paying)
}

/// The timers a new order starts with: its expiry.
pub fn on_create(order: &Order) -> Vec<TimerOp> {
    vec![TimerOp::Set {
        kind: TimerKind::Expire,
        due_at: order.expires_at,
        attempt: 0,
    }]
}

/// The timer changes an order change needs.
pub fn plan(
    before: &Order,
    after: &Order,
    now: OffsetDateTime,
    schedule: &Schedule,
) -> Vec<TimerOp> {
    let mut ops = Vec::new();
    if is_final(after.status) && !is_final(before.status) {
        ops.push(TimerOp::Clear(TimerKind::Poll));
        ops.push(TimerOp::Clear(TimerKind::Expire));
    }
    if !before.payment_opened()
        && after.payment_opened()
        && !is_final(after.status)
        && let Some(first) = schedule.poll.first()
    {
        ops.push(TimerOp::Set {
            kind: TimerKind::Poll,
            due_at: now + *first,
            attempt: 0,
        });
    }
    if after.fulfillment_open() && !before.fulfillment_open() {
        // Just paid: the first write-off is tried at once; this backs it up.
        ops.push(TimerOp::Set {
            kind: TimerKind::Fulfill,
            due_at: now + FULFILLMENT_BACKSTOP,
            attempt: 0,
        });
    } else if before.fulfillment_open() && !after.fulfillment_open() {
        ops.push(TimerOp::Clear(TimerKind::Fulfill));
    }
    let (open_before, open_after) = (before.open_refunds(), after.open_refunds());
    let opened = open_after > 0 && after.refunds.len() > before.refunds.len();
    if opened {
        if let Some(first) = schedule.refund_retry.first() {
            ops.push(TimerOp::Set {
                kind: TimerKind::Refund,
                due_at: now + *first,
                attempt: 1,
            });
        }
    } else if open_after == 0 && open_before > 0 {
        ops.push(TimerOp::Clear(TimerKind::Refund));
    }
    ops
}

/// The timers an order should have now, created only where missing: what the stuck-order sweep
/// gives an order that has open work and no timer.
pub fn ensure(order: &Order, now: OffsetDateTime) -> Vec<TimerOp> {
    let mut ops = Vec::new();
    if !is_final(order.status) {
        ops.push(TimerOp::Ensure {
            kind: TimerKind::Expire,
            due_at: order.expires_at.max(now),
            attempt: 0,
        });
        if order.payment_opened() {
            ops.push(TimerOp::Ensure {
                kind: TimerKind::Poll,
                due_at: now,
                attempt: 0,
            });
        }
    }
    if order.fulfillment_open() {
        ops.push(TimerOp::Ensure {
            kind: TimerKind::Fulfill,
            due_at: now,
            attempt: order.fulfillment.attempts,
        });
    }
    if order.open_refunds() > 0 {
        ops.push(TimerOp::Ensure {
            kind: TimerKind::Refund,
            due_at: now,
            // A refund found by the sweep may have been sent: query before sending again.
            attempt: 1,
        });
    }
    ops
}
