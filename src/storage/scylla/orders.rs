//! An order's own records in CQL. A create is two LWTs and one plain single-partition batch:
//!
//! 1. take the submit token for the order (`IF merchant_id = ? AND expires_at > ? AND order_id
//!    = null`), which records the order it was taken for;
//! 2. take the merchant number for the order (`IF NOT EXISTS`), likewise;
//! 3. write the order's partition: its state (static columns), its events and its timers.
//!
//! A create that finds a reservation held for an order that is stored answers as the contract
//! says (`token_used` or `duplicate_order`, naming it). One held for an order not stored yet is
//! either in flight (the create waits briefly for it) or left by a create that died between the
//! steps: once the holder's lease (`reservation_lease_ms`) is over, the reservation is taken
//! over by an LWT conditioned on the old holder, and a create past its own lease gives up
//! before step 3. So a crash between the steps is undone by the next create that needs the
//! reservation, never left half-done. A create refused at step 2 gives its token back.
//!
//! A change is one conditional batch on the order's partition: the state `IF version = ?`, its
//! events and its timer rows. Plain writes that precede LWTs on the same cells (a token's
//! issue, an order's first write) carry a timestamp a second in the past, so that an LWT right
//! after them always wins even with some clock skew between coordinators.

use super::timers::Entry;
use super::{ScyllaStore, be, ms, now_ms};
use crate::domain::{
    Event, MerchantId, MerchantOrderNo, Order, OrderId, OrderStatus, SubmitToken, TimerKind,
    TimerOp,
};
use crate::storage::{CommandReply, CreateOutcome, OrderRecords, StoreError, TokenRecord};
use async_trait::async_trait;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::value::{CqlTimestamp, CqlValue, Row};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// A token row outlives its expiry by this much, so a retry just after the expiry is still told
/// which order took it.
const TOKEN_GRACE_SECS: i64 = 3_600;
/// The columns a take writes live this long: longer than any token row (tokens live at most a
/// day, `orders.token_ttl_secs`), so a taken token never reads as free again.
const TAKEN_TTL_SECS: i32 = 2 * 86_400 + TOKEN_GRACE_SECS as i32;
/// How far in the past plain writes that LWTs follow are stamped, in microseconds.
const PLAIN_BEFORE_LWT_US: i64 = 1_000_000;
/// Pauses while waiting for a reservation's order that is being stored (about 0.8 s in all).
const WAIT_STEPS_MS: [u64; 8] = [2, 5, 10, 20, 50, 100, 200, 400];

fn past_timestamp_us() -> i64 {
    now_ms() * 1_000 - PLAIN_BEFORE_LWT_US
}

fn event_item(e: &Event) -> String {
    format!("e:{:020}:{}", e.version, e.event_id)
}

fn timer_item(kind: TimerKind) -> String {
    format!("t:{}", kind.as_str())
}

/// An LWT's answer: applied or not, and the columns it returned (the current values of those it
/// was conditioned on, when not applied).
pub(super) struct Lwt {
    pub applied: bool,
    cols: Vec<(String, Option<CqlValue>)>,
}

impl Lwt {
    pub(super) fn read(result: QueryResult) -> Result<Self, StoreError> {
        let rows = result.into_rows_result().map_err(be)?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let row = rows
            .maybe_first_row::<Row>()
            .map_err(be)?
            .ok_or_else(|| be("an LWT answered no row"))?;
        let cols: Vec<_> = names.into_iter().zip(row.columns).collect();
        let applied = matches!(cols.first(), Some((_, Some(CqlValue::Boolean(true)))));
        Ok(Self { applied, cols })
    }

    pub(super) fn get(&self, name: &str) -> Option<&CqlValue> {
        self.cols
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_ref())
    }

    pub(super) fn text(&self, name: &str) -> Option<&str> {
        match self.get(name) {
            Some(CqlValue::Text(s)) | Some(CqlValue::Ascii(s)) => Some(s),
            _ => None,
        }
    }

    pub(super) fn ms(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(CqlValue::Timestamp(CqlTimestamp(ms))) => Some(*ms),
            _ => None,
        }
    }
}

/// Whether an LWT (or a conditional batch) was applied.
pub(super) fn applied(result: QueryResult) -> Result<bool, StoreError> {
    Ok(Lwt::read(result)?.applied)
}

/// Who holds a reservation, as read back. A missing `taken_at` reads as now: a holder is never
/// taken over on missing evidence.
pub(super) struct Holder {
    pub order_id: String,
    pub taken_at_ms: i64,
}

/// When a reservation's holder counts as done.
#[derive(Clone, Copy)]
pub(super) enum Resolve<'a> {
    /// Its order is stored (a token, a merchant number).
    OrderStored,
    /// Its order's partition has this row (a command reply's marker).
    ReplyMarker(&'a str),
}

/// What a create found holding one of its reservations.
pub(super) enum Held {
    /// An order that is stored.
    Stored(OrderId),
    /// Taken over (or freed) meanwhile: try the reservation again.
    Moved,
    /// Still held for an order not stored, within its lease.
    InFlight(String),
    /// Held for an order not stored, past its lease: take it over from that holder.
    Abandoned(String),
}

impl ScyllaStore {
    fn lease(&self) -> Duration {
        Duration::from_millis(self.settings.reservation_lease_ms)
    }

    /// Decides about a reservation held by `holder`: waits a little for a holder in flight to
    /// be resolved (`resolve`), and re-reads the reservation (`reread`) between waits.
    pub(super) async fn judge<F, Fut>(
        &self,
        mut holder: Holder,
        resolve: Resolve<'_>,
        reread: F,
    ) -> Result<Held, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Option<Holder>, StoreError>>,
    {
        let lease_ms = self.settings.reservation_lease_ms as i64;
        for pause in WAIT_STEPS_MS.into_iter().map(Some).chain([None]) {
            let id = OrderId::parse(&holder.order_id).map_err(|_| {
                StoreError::Corrupt(format!("reservation names {:?}", holder.order_id))
            })?;
            let resolved = match resolve {
                Resolve::OrderStored => self.load_order(&id).await?.is_some(),
                Resolve::ReplyMarker(item) => self.has_item(id.as_str(), item).await?,
            };
            if resolved {
                return Ok(Held::Stored(id));
            }
            if holder.taken_at_ms.saturating_add(lease_ms) <= now_ms() {
                return Ok(Held::Abandoned(holder.order_id));
            }
            let Some(pause) = pause else {
                return Ok(Held::InFlight(holder.order_id));
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            match reread().await? {
                Some(h) if h.order_id == holder.order_id => holder = h,
                _ => return Ok(Held::Moved),
            }
        }
        unreachable!("the loop returns on its last step")
    }

    async fn token_holder(&self, token: &SubmitToken) -> Result<Option<Holder>, StoreError> {
        let rows = self
            .exec(&self.st.read_token, (token.as_str(),))
            .await?
            .into_rows_result()
            .map_err(be)?;
        let row = rows
            .maybe_first_row::<(
                Option<String>,
                Option<CqlTimestamp>,
                Option<String>,
                Option<CqlTimestamp>,
            )>()
            .map_err(be)?;
        Ok(row.and_then(|(_, _, order_id, taken_at)| {
            Some(Holder {
                order_id: order_id?,
                taken_at_ms: taken_at.map_or_else(now_ms, |t| t.0),
            })
        }))
    }

    async fn number_holder(
        &self,
        merchant: &str,
        number: &str,
    ) -> Result<Option<Holder>, StoreError> {
        let rows = self
            .exec(&self.st.read_no, (merchant, number))
            .await?
            .into_rows_result()
            .map_err(be)?;
        let row = rows
            .maybe_first_row::<(Option<String>, Option<CqlTimestamp>)>()
            .map_err(be)?;
        Ok(row.and_then(|(order_id, taken_at)| {
            Some(Holder {
                order_id: order_id?,
                taken_at_ms: taken_at.map_or_else(now_ms, |t| t.0),
            })
        }))
    }

    /// Step 1: takes `token` for `order`. `Err(outcome)` when the create ends here.
    pub(super) async fn take_token(
        &self,
        token: &SubmitToken,
        order: &Order,
        now: OffsetDateTime,
    ) -> Result<Result<(), CreateOutcome>, StoreError> {
        let (id, merchant) = (order.order_id.as_str(), order.merchant_id.as_str());
        for _ in 0..self.settings.max_lwt_rounds {
            let taken = Lwt::read(
                self.exec(
                    &self.st.take_token,
                    (
                        TAKEN_TTL_SECS,
                        id,
                        CqlTimestamp(now_ms()),
                        token.as_str(),
                        merchant,
                        CqlTimestamp(ms(now)),
                    ),
                )
                .await?,
            )?;
            if taken.applied {
                return Ok(Ok(()));
            }
            if taken.text("merchant_id") != Some(merchant) {
                return Ok(Err(CreateOutcome::TokenInvalid));
            }
            let Some(holder) = taken.text("order_id").map(str::to_string) else {
                // Not taken, so refused for its expiry.
                return Ok(Err(CreateOutcome::TokenInvalid));
            };
            if holder == id {
                return Ok(Ok(()));
            }
            let held = Holder {
                order_id: holder,
                taken_at_ms: taken.ms("taken_at").unwrap_or_else(now_ms),
            };
            match self
                .judge(held, Resolve::OrderStored, || self.token_holder(token))
                .await?
            {
                Held::Stored(other) => return Ok(Err(CreateOutcome::TokenUsed(Some(other)))),
                Held::Moved => continue,
                Held::InFlight(other) => return Err(StoreError::VersionConflict(other)),
                Held::Abandoned(other) => {
                    if taken.ms("expires_at").is_some_and(|e| e <= ms(now)) {
                        return Ok(Err(CreateOutcome::TokenInvalid));
                    }
                    let stolen = Lwt::read(
                        self.exec(
                            &self.st.steal_token,
                            (
                                TAKEN_TTL_SECS,
                                id,
                                CqlTimestamp(now_ms()),
                                token.as_str(),
                                other.as_str(),
                            ),
                        )
                        .await?,
                    )?;
                    if stolen.applied {
                        tracing::warn!(token = %token.as_str(), abandoned_by = %other, order_id = %id,
                            "submit token taken over from a create that never stored its order");
                        return Ok(Ok(()));
                    }
                }
            }
        }
        Err(StoreError::Backend(format!(
            "submit token still contended after {} rounds",
            self.settings.max_lwt_rounds
        )))
    }

    /// Step 2: takes the merchant number for `order`. `Err(outcome)` when the create ends here.
    pub(super) async fn take_number(
        &self,
        order: &Order,
    ) -> Result<Result<(), CreateOutcome>, StoreError> {
        let (id, merchant, number) = (
            order.order_id.as_str(),
            order.merchant_id.as_str(),
            order.merchant_order_no.as_str(),
        );
        for _ in 0..self.settings.max_lwt_rounds {
            let taken = Lwt::read(
                self.exec(
                    &self.st.take_no,
                    (merchant, number, id, CqlTimestamp(now_ms())),
                )
                .await?,
            )?;
            if taken.applied {
                return Ok(Ok(()));
            }
            let Some(holder) = taken.text("order_id").map(str::to_string) else {
                continue;
            };
            if holder == id {
                return Ok(Ok(()));
            }
            let held = Holder {
                order_id: holder,
                taken_at_ms: taken.ms("taken_at").unwrap_or_else(now_ms),
            };
            match self
                .judge(held, Resolve::OrderStored, || {
                    self.number_holder(merchant, number)
                })
                .await?
            {
                Held::Stored(other) => return Ok(Err(CreateOutcome::Duplicate(other))),
                Held::Moved => continue,
                Held::InFlight(other) => return Err(StoreError::VersionConflict(other)),
                Held::Abandoned(other) => {
                    let stolen = Lwt::read(
                        self.exec(
                            &self.st.steal_no,
                            (id, CqlTimestamp(now_ms()), merchant, number, other.as_str()),
                        )
                        .await?,
                    )?;
                    if stolen.applied {
                        tracing::warn!(merchant_id = %merchant, merchant_order_no = %number,
                            abandoned_by = %other, order_id = %id,
                            "merchant number taken over from a create that never stored its order");
                        return Ok(Ok(()));
                    }
                }
            }
        }
        Err(StoreError::Backend(format!(
            "merchant number still contended after {} rounds",
            self.settings.max_lwt_rounds
        )))
    }

    /// Gives a token back after the create it was taken for was refused (only if it is still
    /// held for that order).
    async fn release_token(
        &self,
        token: &SubmitToken,
        order_id: &OrderId,
    ) -> Result<(), StoreError> {
        self.exec(&self.st.release_token, (token.as_str(), order_id.as_str()))
            .await?;
        Ok(())
    }

    /// The batch's statements and values for an order's events and timer changes.
    fn append_rows(
        &self,
        batch: &mut Batch,
        values: &mut Vec<Vec<Option<CqlValue>>>,
        order_id: &str,
        events: &[Event],
        timers: &[TimerOp],
        existing_timers: &[TimerKind],
    ) {
        let text = |s: &str| Some(CqlValue::Text(s.to_string()));
        for e in events {
            batch.append_statement(self.st.insert_event.clone());
            values.push(vec![
                text(order_id),
                text(&event_item(e)),
                text(e.event_id.as_str()),
                text(&e.event_type),
                Some(CqlValue::Int(i32::from(
                    crate::streams::codec::SCHEMA_VERSION,
                ))),
                text(&crate::streams::codec::encode_text(e)),
            ]);
        }
        for op in timers {
            let set = |batch: &mut Batch, values: &mut Vec<_>, kind, due_at, attempt: u32| {
                batch.append_statement(self.st.set_timer.clone());
                values.push(vec![
                    text(order_id),
                    text(&timer_item(kind)),
                    Some(CqlValue::Timestamp(CqlTimestamp(ms(due_at)))),
                    Some(CqlValue::Int(i32::try_from(attempt).unwrap_or(i32::MAX))),
                ]);
            };
            match *op {
                TimerOp::Set {
                    kind,
                    due_at,
                    attempt,
                } => set(batch, values, kind, due_at, attempt),
                TimerOp::Ensure {
                    kind,
                    due_at,
                    attempt,
                } => {
                    if !existing_timers.contains(&kind) {
                        set(batch, values, kind, due_at, attempt);
                    }
                }
                TimerOp::Clear(kind) => {
                    batch.append_statement(self.st.clear_timer.clone());
                    values.push(vec![text(order_id), text(&timer_item(kind))]);
                }
            }
        }
    }

    /// The kinds of timer an order has.
    pub(super) async fn timer_kinds(&self, order_id: &str) -> Result<Vec<TimerKind>, StoreError> {
        let rows = self
            .exec(&self.st.order_timers, (order_id,))
            .await?
            .into_rows_result()
            .map_err(be)?;
        rows.rows::<(String, Option<CqlTimestamp>, Option<i32>)>()
            .map_err(be)?
            .map(|r| {
                let (item, _, _) = r.map_err(be)?;
                item.strip_prefix("t:")
                    .and_then(TimerKind::parse)
                    .ok_or_else(|| StoreError::Corrupt(format!("timer row {item:?}")))
            })
            .collect()
    }
}

impl ScyllaStore {
    /// A create: the admission's reservation (a submit token, or a command's reply), the
    /// merchant number, then the order's partition (with the reply's marker for a command).
    pub(super) async fn create(
        &self,
        admission: Admission,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<CreateOutcome, StoreError> {
        let started = Instant::now();
        let taken = match &admission {
            Admission::Token(token, now) => self.take_token(token, &order, *now).await?,
            Admission::Command(reply) => self.take_reply(reply, &order.order_id).await?,
        };
        if let Err(outcome) = taken {
            return Ok(outcome);
        }
        match self.take_number(&order).await {
            Ok(Ok(())) => {}
            Ok(Err(outcome)) => {
                self.release_admission(&admission, &order.order_id).await?;
                return Ok(outcome);
            }
            Err(e) => {
                // Best effort: a reservation left held is taken over after the lease anyway.
                let _ = self.release_admission(&admission, &order.order_id).await;
                return Err(e);
            }
        }
        if started.elapsed() >= self.lease() {
            // Another create may take over either reservation from now on: storing the order
            // could make two orders of one token or number.
            return Err(StoreError::Backend(format!(
                "create of {} outlived its reservations' lease",
                order.order_id
            )));
        }
        let id = order.order_id.as_str();
        let mut batch = Batch::new(BatchType::Unlogged);
        batch.set_is_idempotent(true);
        batch.set_timestamp(Some(past_timestamp_us()));
        batch.append_statement(self.st.insert_state.clone());
        let text = |s: &str| Some(CqlValue::Text(s.to_string()));
        let mut values = vec![vec![
            text(id),
            text(order.merchant_id.as_str()),
            text(order.merchant_order_no.as_str()),
            text(order.status.as_str()),
            Some(CqlValue::BigInt(order.version as i64)),
            text(&encode_order(&order)?),
            Some(CqlValue::Boolean(order.has_open_work())),
            Some(CqlValue::Timestamp(CqlTimestamp(ms(order.created_at)))),
            Some(CqlValue::Timestamp(CqlTimestamp(ms(order.updated_at)))),
        ]];
        self.append_rows(&mut batch, &mut values, id, &events, &timers, &[]);
        if let Admission::Command(reply) = &admission {
            batch.append_statement(self.st.insert_marker.clone());
            values.push(vec![text(id), text(&reply_item(reply))]);
        }
        // The due-time index first: an entry whose timer is never written is stale, and
        // dropped when it comes due; a timer without its entry would never fire.
        self.index(&Entry::for_ops(id, &timers)).await?;
        // Likewise the log's intent: one whose change never happened finds no events.
        let ticket = self.log_intent(id, &events).await?;
        // On an error the batch may or may not have been applied: settled in the background.
        if let Err(e) = self.exec_batch(&batch, values).await {
            self.log_unknown(ticket, events, false);
            return Err(e);
        }
        self.log_committed(ticket, events).await;
        Ok(CreateOutcome::Created)
    }

    /// A change: one conditional batch on the order's partition, with `marker` (a command
    /// reply's) when given.
    pub(super) async fn update(
        &self,
        order: Order,
        expected_version: u64,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
        marker: Option<String>,
    ) -> Result<(), StoreError> {
        let id = order.order_id.as_str();
        let existing = if timers.iter().any(|t| matches!(t, TimerOp::Ensure { .. })) {
            self.timer_kinds(id).await?
        } else {
            Vec::new()
        };
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_is_idempotent(false);
        batch.set_serial_consistency(Some(self.serial));
        batch.append_statement(self.st.update_state.clone());
        let text = |s: &str| Some(CqlValue::Text(s.to_string()));
        let mut values = vec![vec![
            text(order.status.as_str()),
            Some(CqlValue::BigInt(order.version as i64)),
            text(&encode_order(&order)?),
            Some(CqlValue::Boolean(order.has_open_work())),
            Some(CqlValue::Timestamp(CqlTimestamp(ms(order.updated_at)))),
            text(id),
            Some(CqlValue::BigInt(expected_version as i64)),
        ]];
        self.append_rows(&mut batch, &mut values, id, &events, &timers, &existing);
        if let Some(item) = marker {
            batch.append_statement(self.st.insert_marker.clone());
            values.push(vec![text(id), text(&item)]);
        }
        self.index(&Entry::for_ops(id, &timers)).await?;
        let ticket = self.log_intent(id, &events).await?;
        let result = match self.exec_batch(&batch, values).await {
            Ok(result) => result,
            Err(e) => {
                // Applied or not, the error does not say: settled in the background.
                self.log_unknown(ticket, events, true);
                return Err(e);
            }
        };
        #[cfg(test)]
        if self
            .lose_outcome
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            self.log_unknown(ticket, events, true);
            return Err(StoreError::Backend(
                "test: the change's answer was lost".into(),
            ));
        }
        if Lwt::read(result)?.applied {
            self.log_committed(ticket, events).await;
            Ok(())
        } else {
            self.log_abandon(ticket).await;
            Err(StoreError::VersionConflict(id.to_string()))
        }
    }

    async fn release_admission(
        &self,
        admission: &Admission,
        order_id: &OrderId,
    ) -> Result<(), StoreError> {
        match admission {
            Admission::Token(token, _) => self.release_token(token, order_id).await,
            Admission::Command(reply) => self.release_reply(reply, order_id).await,
        }
    }

    /// Whether the order's partition has the clustering row `item`.
    pub(super) async fn has_item(&self, order_id: &str, item: &str) -> Result<bool, StoreError> {
        let rows = self
            .exec(&self.st.read_item, (order_id, item))
            .await?
            .into_rows_result()
            .map_err(be)?;
        Ok(rows.rows_num() > 0)
    }
}

/// What admits a create.
pub(super) enum Admission {
    /// A submit token, judged at this time.
    Token(SubmitToken, OffsetDateTime),
    /// A command's reply, stored with the order.
    Command(CommandReply),
}

/// The clustering row that marks a command's reply as stored with its effect.
pub(super) fn reply_item(reply: &CommandReply) -> String {
    format!(
        "r:{}:{}",
        reply.merchant_id.as_str(),
        reply.request_id.as_str()
    )
}

fn encode_order(order: &Order) -> Result<String, StoreError> {
    serde_json::to_string(order).map_err(be)
}

#[async_trait]
impl OrderRecords for ScyllaStore {
    fn submit_token_key(&self) -> crate::domain::TokenKey {
        self.token_key.clone()
    }

    async fn issue_token(&self, token: TokenRecord) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let ttl = (token.expires_at - now).whole_seconds() + TOKEN_GRACE_SECS;
        let ttl = i32::try_from(ttl.clamp(1, i64::from(TAKEN_TTL_SECS))).unwrap_or(1);
        self.exec(
            &self.st.insert_token,
            (
                token.token.as_str(),
                token.merchant_id.as_str(),
                CqlTimestamp(ms(token.expires_at)),
                ttl,
                past_timestamp_us(),
            ),
        )
        .await?;
        Ok(())
    }

    async fn create_order(
        &self,
        token: SubmitToken,
        order: Order,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
        now: OffsetDateTime,
    ) -> Result<CreateOutcome, StoreError> {
        if let Some(expires_at) = crate::domain::submit_token::signed_expiry(&token) {
            // A signed token (checked by the caller) gets its row at its first use, as an
            // issued one had; then it is taken like one. Stamped in the past like an issue,
            // the row never overwrites what a take wrote.
            if expires_at <= now {
                return Ok(CreateOutcome::TokenInvalid);
            }
            self.issue_token(TokenRecord {
                token: token.clone(),
                merchant_id: order.merchant_id.clone(),
                expires_at,
            })
            .await?;
        }
        self.create(Admission::Token(token, now), order, events, timers)
            .await
    }

    async fn update_order(
        &self,
        order: Order,
        expected_version: u64,
        _previous_status: OrderStatus,
        events: Vec<Event>,
        timers: Vec<TimerOp>,
    ) -> Result<(), StoreError> {
        self.update(order, expected_version, events, timers, None)
            .await
    }

    async fn load_order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError> {
        let rows = self
            .exec(&self.st.load_order, (order_id.as_str(),))
            .await?
            .into_rows_result()
            .map_err(be)?;
        match rows.maybe_first_row::<(Option<String>,)>().map_err(be)? {
            Some((Some(body),)) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("order body: {e}"))),
            _ => Ok(None),
        }
    }

    async fn find_by_merchant_order_no(
        &self,
        merchant_id: &MerchantId,
        merchant_order_no: &MerchantOrderNo,
    ) -> Result<Option<Order>, StoreError> {
        let Some(holder) = self
            .number_holder(merchant_id.as_str(), merchant_order_no.as_str())
            .await?
        else {
            return Ok(None);
        };
        let Ok(id) = OrderId::parse(&holder.order_id) else {
            return Err(StoreError::Corrupt(format!(
                "merchant number names {:?}",
                holder.order_id
            )));
        };
        // A number held for an order not stored (a create in flight, or one that died) finds
        // nothing.
        Ok(self
            .load_order(&id)
            .await?
            .filter(|o| o.merchant_id == *merchant_id && o.merchant_order_no == *merchant_order_no))
    }

    async fn order_events(&self, order_id: &OrderId) -> Result<Vec<Event>, StoreError> {
        let rows = self
            .exec(&self.st.order_events, (order_id.as_str(),))
            .await?
            .into_rows_result()
            .map_err(be)?;
        rows.rows::<(Option<i32>, Option<String>)>()
            .map_err(be)?
            .map(|r| {
                let (schema, body) = r.map_err(be)?;
                let (Some(schema), Some(body)) = (schema, body) else {
                    return Err(StoreError::Corrupt("event row without its event".into()));
                };
                let schema = u16::try_from(schema)
                    .map_err(|_| StoreError::Corrupt(format!("event schema {schema}")))?;
                crate::streams::codec::decode(schema, body.as_bytes())
                    .map_err(|e| StoreError::Corrupt(format!("event body: {e}")))
            })
            .collect()
    }
}
