//! SQL of merchant notifications: the `notifications` table (migration 3) and the notifier's
//! cursor. Writes are `WriteOp::Notifications` ops applied by the single writer, so they are
//! group-committed and acknowledged after COMMIT like every other write; reads use the pool.

use super::writer::{Refused, WriteOk, WriteOp, backend};
use super::{SqliteStore, be, from_ms, to_ms};
use crate::domain::notification::{DeliveryOutcome, Notification, NotificationStatus};
use crate::domain::{EventId, MerchantId, NotificationId, OrderId};
use crate::storage::{MerchantRoom, NotificationStore, StoreError};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::HashMap;
use time::OffsetDateTime;

/// How many due rows a claim may read for each one it takes: rows of merchants that run out of
/// room within the page are skipped, and this bounds the skipping (what is not reached waits
/// for the next round, when those merchants are saturated and excluded by the index scan).
const CLAIM_SCAN_FACTOR: usize = 8;

/// The columns `decode` reads, in its order.
const COLUMNS: &str = "notification_id, order_id, merchant_id, event_id, event_type, version, url,
     body, status, attempts, schedule_pos, last_status, last_error, next_attempt_ms, created_ms";

/// A notification write, as the writer applies it.
#[derive(Debug)]
pub(crate) enum NotificationOp {
    Enqueue {
        rows: Vec<Notification>,
        cursor: String,
        seq: u64,
    },
    Claim {
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
        per_merchant: usize,
        in_flight: Vec<(String, usize)>,
    },
    Record {
        id: String,
        claimed_attempts: i64,
        outcome: DeliveryOutcome,
        now_ms: i64,
    },
    Redeliver {
        merchant_id: String,
        id: String,
        now_ms: i64,
    },
}

/// What a notification write answered.
#[derive(Debug)]
pub(crate) enum NotificationOk {
    Done,
    Notifications(Vec<Notification>),
    Redelivered(Option<Box<Notification>>),
}

fn corrupt(what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("notification {what} {v:?}").into(),
    )
}

/// Reads a row selected with `COLUMNS`.
fn decode(r: &Row<'_>) -> rusqlite::Result<Notification> {
    let text = |i: usize| r.get::<_, String>(i);
    let (id, order, merchant, event, status) = (text(0)?, text(1)?, text(2)?, text(3)?, text(8)?);
    Ok(Notification {
        notification_id: NotificationId::parse(&id).map_err(|_| corrupt("id", &id))?,
        order_id: OrderId::parse(&order).map_err(|_| corrupt("order id", &order))?,
        merchant_id: MerchantId::parse(&merchant).map_err(|_| corrupt("merchant", &merchant))?,
        event_id: EventId::parse(&event).map_err(|_| corrupt("event id", &event))?,
        event_type: text(4)?,
        version: r.get::<_, i64>(5)? as u64,
        url: text(6)?,
        body: r.get(7)?,
        status: NotificationStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        attempts: u32::try_from(r.get::<_, i64>(9)?).unwrap_or(u32::MAX),
        schedule_pos: u32::try_from(r.get::<_, i64>(10)?).unwrap_or(u32::MAX),
        last_status: r
            .get::<_, Option<i64>>(11)?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(12)?,
        next_attempt_at: from_ms(r.get(13)?),
        created_at: from_ms(r.get(14)?),
    })
}

fn done(ok: NotificationOk) -> Result<WriteOk, Refused> {
    Ok(WriteOk::Notifications(ok))
}

/// Applies one notification write inside the writer's transaction.
pub(crate) fn apply(conn: &Connection, op: &NotificationOp) -> Result<WriteOk, Refused> {
    match op {
        NotificationOp::Enqueue { rows, cursor, seq } => {
            let mut insert = conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO notifications (notification_id, order_id, merchant_id,
                         event_id, event_type, version, url, body, status, attempts, schedule_pos,
                         next_attempt_ms, created_ms, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'PENDING', 0, 0, ?9, ?10, ?10)",
                )
                .map_err(backend)?;
            for n in rows {
                insert
                    .execute(params![
                        n.notification_id.as_str(),
                        n.order_id.as_str(),
                        n.merchant_id.as_str(),
                        n.event_id.as_str(),
                        n.event_type,
                        n.version as i64,
                        n.url,
                        n.body,
                        to_ms(n.next_attempt_at),
                        to_ms(n.created_at),
                    ])
                    .map_err(backend)?;
            }
            super::writer::set_cursor(conn, cursor, *seq)?;
            done(NotificationOk::Done)
        }
        NotificationOp::Claim {
            now_ms,
            lease_until_ms,
            limit,
            per_merchant,
            in_flight,
        } => claim(
            conn,
            *now_ms,
            *lease_until_ms,
            *limit,
            *per_merchant,
            in_flight,
        ),
        NotificationOp::Record {
            id,
            claimed_attempts,
            outcome,
            now_ms,
        } => {
            let (status, next_ms, pos, last_status, last_error) = match outcome {
                DeliveryOutcome::Delivered { status } => {
                    ("DELIVERED", None, None, Some(i64::from(*status)), None)
                }
                DeliveryOutcome::Retry {
                    status,
                    error,
                    next_attempt_at,
                    schedule_pos,
                } => (
                    "PENDING",
                    Some(to_ms(*next_attempt_at)),
                    Some(i64::from(*schedule_pos)),
                    status.map(i64::from),
                    Some(error.as_str()),
                ),
                DeliveryOutcome::Dead { status, error } => (
                    "DEAD",
                    None,
                    None,
                    status.map(i64::from),
                    Some(error.as_str()),
                ),
            };
            conn.prepare_cached(
                "UPDATE notifications SET status = ?1, attempts = attempts + 1,
                        next_attempt_ms = COALESCE(?2, next_attempt_ms),
                        schedule_pos = COALESCE(?3, schedule_pos),
                        last_status = ?4, last_error = ?5, updated_ms = ?6
                 WHERE notification_id = ?7 AND status = 'PENDING' AND attempts = ?8",
            )
            .and_then(|mut s| {
                s.execute(params![
                    status,
                    next_ms,
                    pos,
                    last_status,
                    last_error,
                    now_ms,
                    id,
                    claimed_attempts
                ])
            })
            .map_err(backend)?;
            done(NotificationOk::Done)
        }
        NotificationOp::Redeliver {
            merchant_id,
            id,
            now_ms,
        } => {
            conn.prepare_cached(
                "UPDATE notifications SET status = 'PENDING', next_attempt_ms = ?1,
                        schedule_pos = 0, updated_ms = ?1
                 WHERE notification_id = ?2 AND merchant_id = ?3 AND status <> 'PENDING'",
            )
            .and_then(|mut s| s.execute(params![now_ms, id, merchant_id]))
            .map_err(backend)?;
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM notifications WHERE notification_id = ?1 AND merchant_id = ?2"
                ))
                .and_then(|mut s| s.query_row([id, merchant_id], decode).optional())
                .map_err(backend)?;
            done(NotificationOk::Redelivered(found.map(Box::new)))
        }
    }
}

/// Reads due rows by the partial index on PENDING due times (earliest first, saturated
/// merchants and orders with an earlier PENDING version passed over in the scan), takes those
/// their merchant has room for, and leases them, in the one transaction.
fn claim(
    conn: &Connection,
    now_ms: i64,
    lease_until_ms: i64,
    limit: usize,
    per_merchant: usize,
    in_flight: &[(String, usize)],
) -> Result<WriteOk, Refused> {
    let mut room: HashMap<String, usize> = in_flight
        .iter()
        .map(|(m, n)| (m.clone(), per_merchant.saturating_sub(*n)))
        .collect();
    let saturated: Vec<&str> = room
        .iter()
        .filter(|(_, r)| **r == 0)
        .map(|(m, _)| m.as_str())
        .collect();
    let saturated = serde_json::to_string(&saturated)
        .map_err(|e| Refused::Answer(Err(StoreError::Backend(e.to_string()))))?;
    let scan = limit.saturating_mul(CLAIM_SCAN_FACTOR).max(limit);
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM notifications n INDEXED BY notifications_due
             WHERE n.status = 'PENDING' AND n.next_attempt_ms <= ?1
               AND n.merchant_id NOT IN (SELECT value FROM json_each(?2))
               AND NOT EXISTS (
                   SELECT 1 FROM notifications e INDEXED BY notifications_order
                   WHERE e.order_id = n.order_id AND e.version < n.version
                     AND e.status = 'PENDING')
             ORDER BY n.next_attempt_ms LIMIT ?3"
        ))
        .map_err(backend)?;
    let mut rows = stmt
        .query(params![now_ms, saturated, scan as i64])
        .map_err(backend)?;
    let mut taken = Vec::new();
    while taken.len() < limit {
        let Some(row) = rows.next().map_err(backend)? else {
            break;
        };
        // The merchant first: a row passed over is not decoded (its body is most of it).
        let merchant = row.get_ref(2).map_err(backend)?;
        let merchant = merchant.as_str().map_err(|e| {
            backend(rusqlite::Error::FromSqlConversionFailure(
                2,
                merchant.data_type(),
                Box::new(e),
            ))
        })?;
        let left = match room.get_mut(merchant) {
            Some(left) => left,
            None => room.entry(merchant.to_string()).or_insert(per_merchant),
        };
        if *left == 0 {
            continue;
        }
        *left -= 1;
        taken.push(decode(row).map_err(backend)?);
    }
    drop(rows);
    let mut lease = conn
        .prepare_cached("UPDATE notifications SET next_attempt_ms = ?1 WHERE notification_id = ?2")
        .map_err(backend)?;
    for n in &taken {
        lease
            .execute(params![lease_until_ms, n.notification_id.as_str()])
            .map_err(backend)?;
    }
    Ok(WriteOk::Notifications(NotificationOk::Notifications(taken)))
}

impl SqliteStore {
    async fn notification_write(&self, op: NotificationOp) -> Result<NotificationOk, StoreError> {
        match self.write(WriteOp::Notifications(op)).await? {
            WriteOk::Notifications(ok) => Ok(ok),
            other => Err(StoreError::Backend(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }
}

fn unexpected(ok: NotificationOk) -> StoreError {
    StoreError::Backend(format!("unexpected writer answer {ok:?}"))
}

#[async_trait]
impl NotificationStore for SqliteStore {
    async fn enqueue_notifications(
        &self,
        rows: Vec<Notification>,
        cursor_name: &str,
        partition: u32,
        seq: u64,
    ) -> Result<(), StoreError> {
        super::one_partition(partition)?;
        self.notification_write(NotificationOp::Enqueue {
            rows,
            cursor: cursor_name.to_string(),
            seq,
        })
        .await
        .map(|_| ())
    }

    async fn claim_due_notifications(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: usize,
        room: &MerchantRoom,
    ) -> Result<Vec<Notification>, StoreError> {
        let op = NotificationOp::Claim {
            now_ms: to_ms(now),
            lease_until_ms: to_ms(lease_until),
            limit,
            per_merchant: room.per_merchant,
            in_flight: room
                .in_flight
                .iter()
                .map(|(m, n)| (m.to_string(), *n))
                .collect(),
        };
        match self.notification_write(op).await? {
            NotificationOk::Notifications(rows) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    async fn record_delivery(
        &self,
        id: &NotificationId,
        claimed_attempts: u32,
        outcome: DeliveryOutcome,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.notification_write(NotificationOp::Record {
            id: id.to_string(),
            claimed_attempts: i64::from(claimed_attempts),
            outcome,
            now_ms: to_ms(now),
        })
        .await
        .map(|_| ())
    }

    async fn redeliver(
        &self,
        merchant: &MerchantId,
        id: &NotificationId,
        now: OffsetDateTime,
    ) -> Result<Option<Notification>, StoreError> {
        let op = NotificationOp::Redeliver {
            merchant_id: merchant.to_string(),
            id: id.to_string(),
            now_ms: to_ms(now),
        };
        match self.notification_write(op).await? {
            NotificationOk::Redelivered(found) => Ok(found.map(|n| *n)),
            other => Err(unexpected(other)),
        }
    }

    async fn notifications_for_order(
        &self,
        merchant: &MerchantId,
        order_id: &OrderId,
    ) -> Result<Vec<Notification>, StoreError> {
        let (merchant, order) = (merchant.to_string(), order_id.to_string());
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM notifications INDEXED BY notifications_order
                     WHERE order_id = ?1 AND merchant_id = ?2 ORDER BY version"
                ))
                .map_err(be)?;
            let rows = stmt.query_map([&order, &merchant], decode).map_err(be)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| StoreError::Corrupt(e.to_string()))
        })
        .await
    }

    async fn pending_notifications(&self) -> Result<i64, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT COUNT(*) FROM notifications INDEXED BY notifications_due
                 WHERE status = 'PENDING'",
            )
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(be)
        })
        .await
    }
}

#[cfg(test)]
#[path = "notification_tests.rs"]
mod tests;
