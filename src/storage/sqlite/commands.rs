//! SQL of Kafka command replies: the `command_replies` table (migration 5, a rowid table since 8). A reply is put by
//! the writer (`WriteOp::Commands`), or inside a command create's own write (`Admission::Command`),
//! so an order a command created and its stored answer commit together. The first reply
//! stored under a key wins; later puts answer it.

use super::writer::Admission;
use super::writer::{Refused, WriteOk, WriteOp, backend};
use super::{SqliteStore, be, from_ms, to_ms};
use crate::domain::{Event, MerchantId, Order, OrderId, OrderStatus, RequestId, TimerOp};
use crate::storage::{CommandReply, CommandStore, CreateOutcome, StoreError};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};

/// A reply encoded for storage.
#[derive(Debug)]
pub(crate) struct ReplyRow {
    merchant_id: String,
    request_id: String,
    command_hash: String,
    status: i64,
    body: Vec<u8>,
    order_id: Option<String>,
    created_at_ms: i64,
}

impl ReplyRow {
    pub fn encode(r: &CommandReply) -> Self {
        Self {
            merchant_id: r.merchant_id.to_string(),
            request_id: r.request_id.to_string(),
            command_hash: r.command_hash.clone(),
            status: i64::from(r.status),
            body: r.body.clone(),
            order_id: r.order_id.as_ref().map(|o| o.to_string()),
            created_at_ms: to_ms(r.created_at),
        }
    }
}

/// A command-reply write, as the writer applies it.
#[derive(Debug)]
pub(crate) enum CommandOp {
    /// Store unless stored; answer what is stored.
    Put(ReplyRow),
}

const COLUMNS: &str =
    "merchant_id, request_id, command_hash, status, body, order_id, created_at_ms";

fn corrupt(what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("command reply {what} {v:?}").into(),
    )
}

fn decode(r: &Row<'_>) -> rusqlite::Result<CommandReply> {
    let text = |i: usize| r.get::<_, String>(i);
    let (merchant, request) = (text(0)?, text(1)?);
    let order: Option<String> = r.get(5)?;
    Ok(CommandReply {
        merchant_id: MerchantId::parse(&merchant).map_err(|_| corrupt("merchant", &merchant))?,
        request_id: RequestId::parse(&request).map_err(|_| corrupt("request id", &request))?,
        command_hash: text(2)?,
        status: u16::try_from(r.get::<_, i64>(3)?).map_err(|_| corrupt("status", "?"))?,
        body: r.get(4)?,
        order_id: order
            .map(|o| OrderId::parse(&o).map_err(|_| corrupt("order id", &o)))
            .transpose()?,
        created_at: from_ms(r.get(6)?),
    })
}

fn select(
    conn: &Connection,
    merchant: &str,
    request: &str,
) -> rusqlite::Result<Option<CommandReply>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM command_replies WHERE merchant_id = ?1 AND request_id = ?2"
    ))?
    .query_row([merchant, request], decode)
    .optional()
}

/// Inserts the reply unless its key has one; answers whether it was inserted.
pub(crate) fn insert_reply(conn: &Connection, r: &ReplyRow) -> rusqlite::Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT INTO command_replies (merchant_id, request_id, command_hash, status, body, order_id, created_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (merchant_id, request_id) DO NOTHING",
        )?
        .execute(params![
            r.merchant_id,
            r.request_id,
            r.command_hash,
            r.status,
            r.body,
            r.order_id,
            r.created_at_ms
        ])?;
    Ok(n == 1)
}

/// Whether a reply is stored under `r`'s key (read only).
pub(crate) fn reply_stored(conn: &Connection, r: &ReplyRow) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM command_replies WHERE merchant_id = ?1 AND request_id = ?2")?
        .exists([r.merchant_id.as_str(), r.request_id.as_str()])
}

/// Deletes replies stored before `before_ms` among the `limit` oldest (rows are appended as
/// they are stored, so the oldest are the first by rowid; the query never scans the table).
pub(crate) fn purge_replies(
    conn: &Connection,
    before_ms: i64,
    limit: usize,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "DELETE FROM command_replies WHERE rowid IN
           (SELECT rowid FROM command_replies ORDER BY rowid LIMIT ?2)
         AND created_at_ms < ?1",
    )?
    .execute(params![before_ms, limit as i64])
}

/// Applies one command-reply write inside the writer's transaction.
pub(crate) fn apply(conn: &Connection, op: &CommandOp) -> Result<WriteOk, Refused> {
    match op {
        CommandOp::Put(row) => {
            insert_reply(conn, row).map_err(backend)?;
            let stored = select(conn, &row.merchant_id, &row.request_id)
                .map_err(backend)?
                .ok_or_else(|| {
                    Refused::Answer(Err(StoreError::Backend("stored reply vanished".into())))
                })?;
            Ok(WriteOk::Reply(Box::new(stored)))
        }
    }
}

#[async_trait]
impl CommandStore for SqliteStore {
    async fn command_reply(
        &self,
        merchant: &MerchantId,
        request_id: &RequestId,
    ) -> Result<Option<CommandReply>, StoreError> {
        let (m, r) = (merchant.to_string(), request_id.to_string());
        self.read(move |c| select(c, &m, &r).map_err(be)).await
    }

    async fn store_command_reply(&self, reply: CommandReply) -> Result<CommandReply, StoreError> {
        match self
            .write(WriteOp::Commands(CommandOp::Put(ReplyRow::encode(&reply))))
            .await?
        {
            WriteOk::Reply(stored) => Ok(*stored),
            other => Err(StoreError::Backend(format!(
                "unexpected writer answer {other:?}"
            ))),
        }
    }

    async fn create_order_for_command(
        &self,
        reply: crate::storage::CommandReply,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<CreateOutcome, StoreError> {
        let admission = Admission::Command(ReplyRow::encode(&reply));
        self.create(admission, order, events, timers, reply.created_at)
            .await
    }

    async fn update_order_for_command(
        &self,
        reply: crate::storage::CommandReply,
        order: Order,
        expected_version: u64,
        previous_status: OrderStatus,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<(), StoreError> {
        let reply = Some(ReplyRow::encode(&reply));
        self.update(
            reply,
            order,
            expected_version,
            previous_status,
            events,
            timers,
        )
        .await
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;
