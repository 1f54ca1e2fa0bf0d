//! Kafka command replies in CQL. A reply is keyed by (merchant, request id) in
//! `command_replies`, the reservation a command's write takes first (an LWT), and it counts as
//! stored once its effect is: a command's create or change writes a marker row
//! (`r:<merchant>:<request id>`) into the order's partition in the same batch as the order, so
//! the reply and its effect are one write as the contract says. A reservation whose marker is
//! missing is *pending*: in flight, or left by a write that died. It answers nothing; after its
//! lease it is taken over like a token. Replies that answer no order change (refusals) are
//! stored as they are, not pending.

use super::orders::{Admission, Held, Holder, Lwt, Resolve, reply_item};
use super::{ScyllaStore, be, from_ms, ms, now_ms};
use crate::domain::{Event, MerchantId, Order, OrderId, OrderStatus, RequestId, TimerOp};
use crate::storage::{CommandReply, CommandStore, CreateOutcome, StoreError};
use async_trait::async_trait;
use scylla::value::CqlTimestamp;

/// A `command_replies` row as read.
type ReplyRow = (
    Option<String>,
    Option<CqlTimestamp>,
    Option<bool>,
    Option<String>,
    Option<i32>,
    Option<Vec<u8>>,
    Option<CqlTimestamp>,
);

impl ScyllaStore {
    fn reply_ttl(&self) -> i32 {
        i32::try_from(self.settings.reply_retention_hours.saturating_mul(3_600))
            .unwrap_or(i32::MAX)
            .max(1)
    }

    async fn read_reply(
        &self,
        merchant: &str,
        request: &str,
    ) -> Result<Option<ReplyRow>, StoreError> {
        let rows = self
            .exec(&self.st.read_reply, (merchant, request))
            .await?
            .into_rows_result()
            .map_err(be)?;
        rows.maybe_first_row::<ReplyRow>().map_err(be)
    }

    async fn reply_holder(
        &self,
        merchant: &str,
        request: &str,
    ) -> Result<Option<Holder>, StoreError> {
        Ok(self.read_reply(merchant, request).await?.and_then(
            |(order_id, taken_at, pending, ..)| {
                pending.filter(|p| *p)?;
                Some(Holder {
                    order_id: order_id?,
                    taken_at_ms: taken_at.map_or_else(now_ms, |t| t.0),
                })
            },
        ))
    }

    /// The reservation LWT for `reply`, held for `order_id` and pending when given.
    async fn reserve_reply(
        &self,
        reply: &CommandReply,
        order_id: Option<&OrderId>,
    ) -> Result<Lwt, StoreError> {
        Lwt::read(
            self.exec(
                &self.st.reserve_reply,
                (
                    reply.merchant_id.as_str(),
                    reply.request_id.as_str(),
                    order_id
                        .or(reply.order_id.as_ref())
                        .map(|o| o.as_str().to_string()),
                    CqlTimestamp(now_ms()),
                    order_id.is_some(),
                    reply.command_hash.as_str(),
                    i32::from(reply.status),
                    reply.body.clone(),
                    CqlTimestamp(ms(reply.created_at)),
                    self.reply_ttl(),
                ),
            )
            .await?,
        )
    }

    /// Takes the reply's key over from an abandoned holder; `pending` for a write to follow.
    async fn steal_reply(
        &self,
        reply: &CommandReply,
        order_id: Option<&OrderId>,
        from: &str,
    ) -> Result<bool, StoreError> {
        let stolen = self
            .exec(
                &self.st.steal_reply,
                (
                    self.reply_ttl(),
                    order_id
                        .or(reply.order_id.as_ref())
                        .map(|o| o.as_str().to_string()),
                    CqlTimestamp(now_ms()),
                    order_id.is_some(),
                    reply.command_hash.as_str(),
                    i32::from(reply.status),
                    reply.body.clone(),
                    CqlTimestamp(ms(reply.created_at)),
                    reply.merchant_id.as_str(),
                    reply.request_id.as_str(),
                    from,
                ),
            )
            .await?;
        super::orders::applied(stolen)
    }

    /// Takes the reply's key for a write of `order_id` (pending until the write's marker is
    /// stored). `Err(Answered)` when a reply is stored under the key already.
    pub(super) async fn take_reply(
        &self,
        reply: &CommandReply,
        order_id: &OrderId,
    ) -> Result<Result<(), CreateOutcome>, StoreError> {
        let (merchant, request) = (reply.merchant_id.as_str(), reply.request_id.as_str());
        let item = reply_item(reply);
        for _ in 0..self.settings.max_lwt_rounds {
            let taken = self.reserve_reply(reply, Some(order_id)).await?;
            if taken.applied {
                return Ok(Ok(()));
            }
            if !matches!(
                taken.get("pending"),
                Some(scylla::value::CqlValue::Boolean(true))
            ) {
                return Ok(Err(CreateOutcome::Answered));
            }
            let Some(holder) = taken.text("order_id").map(str::to_string) else {
                continue;
            };
            if holder == order_id.as_str() {
                // This write's own reservation, from an attempt that did not finish.
                return Ok(Ok(()));
            }
            let held = Holder {
                order_id: holder,
                taken_at_ms: taken.ms("taken_at").unwrap_or_else(now_ms),
            };
            match self
                .judge(held, Resolve::ReplyMarker(&item), || {
                    self.reply_holder(merchant, request)
                })
                .await?
            {
                Held::Stored(_) => return Ok(Err(CreateOutcome::Answered)),
                Held::Moved => continue,
                Held::InFlight(other) => return Err(StoreError::VersionConflict(other)),
                Held::Abandoned(other) => {
                    if self.steal_reply(reply, Some(order_id), &other).await? {
                        return Ok(Ok(()));
                    }
                }
            }
        }
        Err(StoreError::Backend(format!(
            "command reply key still contended after {} rounds",
            self.settings.max_lwt_rounds
        )))
    }

    /// Gives the key back after the create it was taken for was refused (only while it is
    /// still pending for that order).
    pub(super) async fn release_reply(
        &self,
        reply: &CommandReply,
        order_id: &OrderId,
    ) -> Result<(), StoreError> {
        self.exec(
            &self.st.release_reply,
            (
                reply.merchant_id.as_str(),
                reply.request_id.as_str(),
                order_id.as_str(),
            ),
        )
        .await?;
        Ok(())
    }

    fn decode_reply(
        merchant: &MerchantId,
        request: &RequestId,
        row: ReplyRow,
    ) -> Result<CommandReply, StoreError> {
        let (order_id, _, _, hash, status, body, created_at) = row;
        let corrupt = |what: &str| StoreError::Corrupt(format!("command reply {request}: {what}"));
        Ok(CommandReply {
            merchant_id: merchant.clone(),
            request_id: request.clone(),
            command_hash: hash.ok_or_else(|| corrupt("no hash"))?,
            status: status
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| corrupt("no status"))?,
            body: body.unwrap_or_default(),
            order_id: order_id
                .map(|o| OrderId::parse(&o).map_err(|_| corrupt("order id")))
                .transpose()?,
            created_at: from_ms(created_at.map_or(0, |t| t.0)),
        })
    }
}

#[async_trait]
impl CommandStore for ScyllaStore {
    async fn command_reply(
        &self,
        merchant: &MerchantId,
        request_id: &RequestId,
    ) -> Result<Option<CommandReply>, StoreError> {
        let Some(row) = self
            .read_reply(merchant.as_str(), request_id.as_str())
            .await?
        else {
            return Ok(None);
        };
        if row.2 == Some(true) {
            // Pending: stored only once its write's marker is.
            let Some(order_id) = row.0.clone() else {
                return Ok(None);
            };
            let item = format!("r:{}:{}", merchant.as_str(), request_id.as_str());
            if !self.has_item(&order_id, &item).await? {
                return Ok(None);
            }
        }
        Self::decode_reply(merchant, request_id, row).map(Some)
    }

    async fn store_command_reply(&self, reply: CommandReply) -> Result<CommandReply, StoreError> {
        let (merchant, request) = (reply.merchant_id.as_str(), reply.request_id.as_str());
        let item = reply_item(&reply);
        for _ in 0..self.settings.max_lwt_rounds {
            let taken = self.reserve_reply(&reply, None).await?;
            if taken.applied {
                return Ok(reply);
            }
            let pending = matches!(
                taken.get("pending"),
                Some(scylla::value::CqlValue::Boolean(true))
            );
            if pending && let Some(holder) = taken.text("order_id").map(str::to_string) {
                let held = Holder {
                    order_id: holder,
                    taken_at_ms: taken.ms("taken_at").unwrap_or_else(now_ms),
                };
                match self
                    .judge(held, Resolve::ReplyMarker(&item), || {
                        self.reply_holder(merchant, request)
                    })
                    .await?
                {
                    Held::Stored(_) => {}
                    Held::Moved => continue,
                    Held::InFlight(other) => return Err(StoreError::VersionConflict(other)),
                    Held::Abandoned(other) => {
                        if self.steal_reply(&reply, None, &other).await? {
                            return Ok(reply);
                        }
                        continue;
                    }
                }
            }
            if let Some(stored) = self
                .command_reply(&reply.merchant_id, &reply.request_id)
                .await?
            {
                return Ok(stored);
            }
        }
        Err(StoreError::Backend(format!(
            "command reply key still contended after {} rounds",
            self.settings.max_lwt_rounds
        )))
    }

    async fn create_order_for_command(
        &self,
        reply: CommandReply,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<CreateOutcome, StoreError> {
        self.create(Admission::Command(reply), order, events, timers)
            .await
    }

    async fn update_order_for_command(
        &self,
        reply: CommandReply,
        order: Order,
        expected_version: u64,
        _previous_status: OrderStatus,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<(), StoreError> {
        // A reply stored under the key first wins; the change is still stored. A refused
        // change leaves the key pending (no reply is stored), and a copy of the command that
        // comes again takes it as its own: the order is the same.
        let marker = match self.take_reply(&reply, &order.order_id).await? {
            Ok(()) => Some(reply_item(&reply)),
            Err(_) => None,
        };
        self.update(order, expected_version, events, timers, marker)
            .await
    }
}
