//! One actor per live order: every operation on an order passes through its mailbox, one at a
//! time, so no lock is needed and no order is charged twice. The actor loads its order from
//! storage on first use, applies a command with the pure state machine, persists the new state
//! with its events and timer changes in one write, and only then replies. It holds nothing
//! storage does not also hold. Timers and refunds are handled in `order_settle`.

use super::channel::{ChannelHandle, ChannelRequest, ChannelResponse, Priority};
use crate::billers::Biller;
use crate::channels::{ChannelError, CloseOutcome, OpenPayment, PaymentResult};
use crate::config::live::Live;
use crate::domain::timer::{self, Schedule};
use crate::domain::{
    ChangeKind, CloseStep, Command, Event, MerchantId, Order, OrderId, PayMethod, PaySerialNo,
    PayStep, RefundId, RefundRequest, Rejection, ReportedPayment, TimerKind, TimerOp,
};
use crate::metrics::Metrics;
use crate::storage::{CommandReply, OrderStore, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use time::OffsetDateTime;

/// Why an order operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrderError {
    /// No such order for this merchant.
    #[error("order not found")]
    NotFound,
    /// The state machine refused.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The channel failed or refused; the order is unchanged.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// Storage failed; the order is unchanged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The order's channel is not configured.
    #[error("channel {0} is not configured")]
    UnknownChannel(String),
    /// A channel reported a result for an order of another channel; nothing was applied.
    #[error("the order belongs to another channel")]
    ChannelMismatch,
    /// The submit token was used before (by the named order, when known).
    #[error("submit token already used")]
    TokenUsed(Option<OrderId>),
    /// The submit token is unknown, another merchant's, or expired.
    #[error("submit token is unknown or expired")]
    TokenInvalid,
    /// The merchant already has an order with this number.
    #[error("an order with this merchant_order_no exists")]
    Duplicate(OrderId),
    /// A Kafka command's create found a reply stored under its key already (a copy of the
    /// command ran first); nothing was created. The stored reply is the answer.
    #[error("this command was answered already")]
    CommandAnswered,
    /// The order's actor did not answer (timed out or failed); the outcome may be unknown.
    #[error("order actor unavailable: {0}")]
    Unavailable(String),
    /// The business system refused to reverse the write-off; nothing was refunded.
    #[error("the business system refused the reversal: {0}")]
    ReversalRefused(String),
    /// The business system did not answer a reversal; nothing was refunded.
    #[error("the business system did not answer the reversal: {0}")]
    BillerUnavailable(String),
}

/// A pay request, validated at the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct PayRequest {
    /// Method.
    pub pay_method: PayMethod,
    /// Payer's code (barcode payments).
    pub auth_code: Option<String>,
}

/// Reply to order operations.
pub type OrderReply = RpcReplyPort<Result<Order, OrderError>>;

/// A Kafka command's pay, close or refund: its key, and how its answer (status, JSON body) is
/// rendered from the order its change produced. When the message changes the order, that
/// answer is stored in the same write as the change (`OrderStore::update_order_for_command`),
/// so a crash cannot keep the effect and lose the answer. A message that changes nothing
/// stores nothing here (the command consumer stores its answer).
pub struct CommandAnswer {
    /// The command's key.
    pub key: super::orders::CommandKey,
    /// Renders the answer from the changed order.
    pub render: RenderAnswer,
}

/// Renders a command's answer (status, JSON body) from the order its change produced.
pub type RenderAnswer = Box<dyn Fn(&Order) -> (u16, Vec<u8>) + Send + Sync>;

/// Messages of an order actor.
pub enum Msg {
    /// Start (or repeat) payment.
    Pay {
        /// Who asks; another merchant's order answers `NotFound`.
        merchant: MerchantId,
        /// What to pay with.
        request: PayRequest,
        /// A Kafka command's key and answer, stored with the change.
        command: Option<CommandAnswer>,
        /// Answer.
        reply: OrderReply,
    },
    /// Close the unpaid order.
    Close {
        /// Who asks.
        merchant: MerchantId,
        /// A Kafka command's key and answer, stored with the change.
        command: Option<CommandAnswer>,
        /// Answer.
        reply: OrderReply,
    },
    /// A verified payment result from a channel.
    ChannelResult {
        /// The channel whose signature verified (it must be the order's channel).
        channel: String,
        /// The result.
        result: PaymentResult,
        /// Answer (whether the result was recorded).
        reply: OrderReply,
    },
    /// Refund (part of) the paid order.
    Refund {
        /// Who asks.
        merchant: MerchantId,
        /// What.
        request: RefundRequest,
        /// A Kafka command's key and answer, stored with the change.
        command: Option<CommandAnswer>,
        /// Answer: the order and the refund's id.
        reply: RpcReplyPort<Result<(Order, RefundId), OrderError>>,
    },
    /// A durable timer of this order fired.
    Timer {
        /// Which.
        kind: TimerKind,
        /// Its attempt number.
        attempt: u32,
        /// Answered once handled (the scheduler bounds timers in flight by it).
        reply: RpcReplyPort<()>,
    },
    /// The stuck-order sweep found the order with open work and no timer.
    EnsureTimers {
        /// Answered once the timers are written.
        reply: RpcReplyPort<()>,
    },
    /// Test hook: panic inside the handler, to exercise supervision.
    #[cfg(test)]
    Panic,
}

/// Reference to an order actor.
pub type OrderRef = ActorRef<Msg>;

/// What every order actor needs; shared, never mutated.
pub struct OrderDeps {
    /// Storage.
    pub store: Arc<dyn OrderStore>,
    /// Channels by name.
    pub channels: HashMap<String, ChannelHandle>,
    /// Base URL channels call back on (`{base}/v1/callbacks/{channel}`).
    pub callback_base_url: String,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Committed order states, shared with the read path.
    pub cache: super::order_cache::OrderCache,
    /// Timer delays for merchants without their own.
    pub schedule: Arc<Schedule>,
    /// Merchants' settings, replaced whole by a reload.
    pub merchants: Arc<Live<MerchantRules>>,
}

/// What the order actors know of each merchant; a reload replaces it whole.
#[derive(Default)]
pub struct MerchantRules {
    /// Merchants' own timer delays.
    pub schedules: HashMap<MerchantId, Arc<Schedule>>,
    /// Merchants' business systems, where paid orders are fulfilled, each with its settings
    /// as text: a reload that leaves them as they are keeps the running client (and its bound
    /// of requests in flight).
    pub billers: HashMap<MerchantId, (String, Arc<dyn Biller>)>,
}

impl OrderDeps {
    /// The timer delays for a merchant's orders.
    pub fn schedule_for(&self, merchant: &MerchantId) -> Arc<Schedule> {
        self.merchants
            .get()
            .schedules
            .get(merchant)
            .unwrap_or(&self.schedule)
            .clone()
    }

    /// The business system a merchant's paid orders are fulfilled at, if it has one.
    pub fn biller_for(&self, merchant: &MerchantId) -> Option<Arc<dyn Biller>> {
        self.merchants
            .get()
            .billers
            .get(merchant)
            .map(|(_, b)| b.clone())
    }
}

/// The order actor.
pub struct OrderActor {
    /// Dependencies.
    pub deps: Arc<OrderDeps>,
}

/// Start-up arguments.
pub struct Args {
    /// The order this actor owns.
    pub order_id: OrderId,
    /// Messages dispatched to this actor and not yet handled; the registry counts up when it
    /// sends, the actor counts down when a message is done. Zero means idle: only then may the
    /// actor be passivated.
    pub busy: Arc<AtomicUsize>,
}

/// The actor's state: its order, loaded lazily.
pub struct State {
    pub(super) order_id: OrderId,
    pub(super) order: Option<Order>,
    busy: Arc<AtomicUsize>,
    /// Refunds opened by the message being handled, tried once it is answered.
    pub(super) fresh_refunds: Vec<RefundId>,
    /// The message being handled paid an order that paycore fulfils: its first write-off is
    /// tried once the message is answered.
    pub(super) fresh_fulfillment: bool,
}

impl Actor for OrderActor {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(&self, _myself: OrderRef, args: Args) -> Result<State, ActorProcessingErr> {
        // Loading waits for the first message, so spawning is cheap and cannot fail on I/O.
        Ok(State {
            order_id: args.order_id,
            order: None,
            busy: args.busy,
            fresh_refunds: Vec::new(),
            fresh_fulfillment: false,
        })
    }

    async fn handle(
        &self,
        _myself: OrderRef,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // Errors are answered to the caller; returning Err here would stop the actor.
        self.handle_msg(msg, state).await;
        state.busy.fetch_sub(1, Ordering::AcqRel);
        Ok(())
    }
}

impl OrderActor {
    async fn handle_msg(&self, msg: Msg, state: &mut State) {
        let span = tracing::debug_span!("order", order_id = %state.order_id);
        let _entered = span.enter();
        match msg {
            Msg::Pay {
                merchant,
                request,
                command,
                reply,
            } => {
                let r = self.pay(state, &merchant, request, command.as_ref()).await;
                let _ = reply.send(r);
            }
            Msg::Close {
                merchant,
                command,
                reply,
            } => {
                let r = self.close(state, &merchant, command.as_ref()).await;
                let _ = reply.send(r);
            }
            Msg::ChannelResult {
                channel,
                result,
                reply,
            } => {
                let r = self.channel_result(state, &channel, result).await;
                let _ = reply.send(r);
            }
            Msg::Refund {
                merchant,
                request,
                command,
                reply,
            } => {
                let r = self
                    .request_refund(state, &merchant, request, command.as_ref())
                    .await;
                let _ = reply.send(r);
            }
            Msg::Timer {
                kind,
                attempt,
                reply,
            } => {
                self.on_timer(state, kind, attempt).await;
                let _ = reply.send(());
            }
            Msg::EnsureTimers { reply } => {
                self.ensure_timers(state).await;
                let _ = reply.send(());
            }
            #[cfg(test)]
            Msg::Panic => panic!("injected panic in order actor {}", state.order_id),
        }
        // A write-off for an order this message paid, and refunds it opened (a merchant's, an
        // extra payment's, fulfillment given up) are tried at once, after the answer; their
        // timers retry them if this attempt does not finish.
        self.try_fresh_fulfillment(state).await;
        self.try_fresh_refunds(state).await;
    }

    pub(super) async fn load(&self, state: &mut State) -> Result<Order, OrderError> {
        if let Some(o) = &state.order {
            return Ok(o.clone());
        }
        let order = match self.deps.cache.get(&state.order_id) {
            Some(cached) => (*cached).clone(),
            None => {
                let ticket = self.deps.cache.ticket(&state.order_id);
                let order = self
                    .deps
                    .store
                    .load_order(&state.order_id)
                    .await?
                    .ok_or(OrderError::NotFound)?;
                self.deps.cache.fill(&order, ticket);
                order
            }
        };
        state.order = Some(order.clone());
        Ok(order)
    }

    async fn load_for(
        &self,
        state: &mut State,
        merchant: &MerchantId,
    ) -> Result<Order, OrderError> {
        let order = self.load(state).await?;
        if &order.merchant_id != merchant {
            return Err(OrderError::NotFound);
        }
        Ok(order)
    }

    /// Applies `cmd`, stores the result with its events and the timer changes it needs (plus
    /// `extra_timers`) in one write, and updates the cached order. The cache is dropped whenever
    /// the store's answer leaves the stored state in doubt.
    pub(super) async fn persist(
        &self,
        state: &mut State,
        order: Order,
        cmd: Command,
        extra_timers: Vec<TimerOp>,
    ) -> Result<Order, OrderError> {
        self.persist_answering(state, order, cmd, extra_timers, None)
            .await
    }

    /// `persist`, and when `command` is given and the order changes, the command's answer
    /// rendered from the new state is stored in the same write.
    pub(super) async fn persist_answering(
        &self,
        state: &mut State,
        order: Order,
        cmd: Command,
        extra_timers: Vec<TimerOp>,
        command: Option<&CommandAnswer>,
    ) -> Result<Order, OrderError> {
        let now = OffsetDateTime::now_utc();
        let changes = order.apply(&cmd, now)?;
        if changes.is_empty() {
            return Ok(order);
        }
        let mut next = order.clone();
        let mut events = Vec::with_capacity(changes.len());
        for change in &changes {
            next.on(change);
            events.extend(Event::for_change(&next, change));
        }
        let mut timers = timer::plan(
            &order,
            &next,
            now,
            &self.deps.schedule_for(&order.merchant_id),
        );
        timers.extend(extra_timers);
        let store = &self.deps.store;
        let written = match command {
            None => {
                store
                    .update_order(next.clone(), order.version, order.status, events, timers)
                    .await
            }
            Some(c) => {
                let (status, body) = (c.render)(&next);
                let reply = CommandReply {
                    merchant_id: next.merchant_id.clone(),
                    request_id: c.key.request_id.clone(),
                    command_hash: c.key.command_hash.clone(),
                    status,
                    body,
                    order_id: Some(next.order_id.clone()),
                    created_at: now,
                };
                store
                    .update_order_for_command(
                        reply,
                        next.clone(),
                        order.version,
                        order.status,
                        events,
                        timers,
                    )
                    .await
            }
        };
        match written {
            Ok(()) => {
                self.count(&order, &next, &changes);
                for change in &changes {
                    match &change.kind {
                        ChangeKind::RefundRequested { refund }
                        | ChangeKind::ExtraPaymentRecorded { refund, .. }
                        | ChangeKind::FulfillmentGivenUp {
                            refund: Some(refund),
                        } => state.fresh_refunds.push(refund.refund_id.clone()),
                        _ => {}
                    }
                }
                if next.fulfillment_open() && !order.fulfillment_open() {
                    state.fresh_fulfillment = true;
                }
                tracing::debug!(
                    status = next.status.as_str(),
                    version = next.version,
                    "order changed"
                );
                self.deps.cache.committed(&next);
                state.order = Some(next.clone());
                Ok(next)
            }
            Err(e) => {
                // Whether anything committed is in doubt: reload from storage next time.
                state.order = None;
                self.deps.cache.forget(&state.order_id);
                Err(e.into())
            }
        }
    }

    fn count(&self, before: &Order, after: &Order, changes: &[crate::domain::Change]) {
        let m = &self.deps.metrics;
        if after.status != before.status {
            m.order_transitions
                .with_label_values(&[after.status.as_str()])
                .inc();
        }
        for change in changes {
            match &change.kind {
                ChangeKind::ExtraPaymentRecorded { payment, .. } => {
                    let reason = payment.reason.map(|r| r.as_str()).unwrap_or("unknown");
                    tracing::warn!(
                        channel_trade_no = %payment.channel_trade_no,
                        amount = payment.amount,
                        reason,
                        "extra payment recorded; refunding it by the original route"
                    );
                    m.extra_payments.with_label_values(&[reason]).inc();
                }
                ChangeKind::RefundRequested { .. } => {
                    m.refunds.with_label_values(&["requested"]).inc();
                }
                ChangeKind::RefundSettled { status, .. } => {
                    m.refunds
                        .with_label_values(&[&status.as_str().to_ascii_lowercase()])
                        .inc();
                }
                _ => {}
            }
        }
    }

    pub(super) fn channel(&self, order: &Order) -> Result<&ChannelHandle, OrderError> {
        self.deps
            .channels
            .get(&order.channel)
            .ok_or_else(|| OrderError::UnknownChannel(order.channel.clone()))
    }

    async fn pay(
        &self,
        state: &mut State,
        merchant: &MerchantId,
        req: PayRequest,
        command: Option<&CommandAnswer>,
    ) -> Result<Order, OrderError> {
        let order = self.load_for(state, merchant).await?;
        match order.pay_step(OffsetDateTime::now_utc())? {
            PayStep::AlreadyPaying => Ok(order),
            PayStep::OpenAtChannel => {
                // A slot first: a pay refused as channel_busy changes nothing. Then the intent,
                // durable before the channel hears of the payment: an answer lost on the way
                // back can no longer leave an open payment that nobody closes.
                let slot = self.channel(&order)?.admit(Priority::Caller).await?;
                let order = if order.payment_opened() {
                    order
                } else {
                    let intent = Command::RecordPayIntent {
                        pay_serial_no: PaySerialNo::generate(),
                        pay_method: req.pay_method,
                    };
                    self.persist(state, order, intent, Vec::new()).await?
                };
                let open = OpenPayment {
                    order_id: order.order_id.clone(),
                    amount: order.amount,
                    currency: order.currency.code(),
                    pay_method: req.pay_method,
                    auth_code: req.auth_code,
                    subject: order.subject.clone(),
                    notify_url: format!(
                        "{}/v1/callbacks/{}",
                        self.deps.callback_base_url, order.channel
                    ),
                };
                let opened = match slot.run(ChannelRequest::Open(open)).await? {
                    ChannelResponse::Opened(o) => o,
                    other => return Err(unexpected(other)),
                };
                let cmd = Command::MarkPaying {
                    pay_serial_no: order
                        .pay_serial_no
                        .clone()
                        .unwrap_or_else(PaySerialNo::generate),
                    pay_method: req.pay_method,
                    channel_payload: opened.payload,
                    channel_trade_no: opened.channel_trade_no,
                };
                // The answered write: the command's reply goes with it.
                self.persist_answering(state, order, cmd, Vec::new(), command)
                    .await
            }
        }
    }

    async fn close(
        &self,
        state: &mut State,
        merchant: &MerchantId,
        command: Option<&CommandAnswer>,
    ) -> Result<Order, OrderError> {
        let order = self.load_for(state, merchant).await?;
        match order.close_step()? {
            CloseStep::AlreadyClosed => Ok(order),
            CloseStep::Local => {
                let closed = self
                    .persist_answering(state, order, Command::Close, Vec::new(), command)
                    .await?;
                self.deps
                    .metrics
                    .closes
                    .with_label_values(&["merchant"])
                    .inc();
                Ok(closed)
            }
            CloseStep::AtChannel => {
                let outcome = match self
                    .channel(&order)?
                    .request(ChannelRequest::Close(order.order_id.clone()))
                    .await?
                {
                    ChannelResponse::Closed(c) => c,
                    other => return Err(unexpected(other)),
                };
                match outcome {
                    CloseOutcome::Closed => {
                        let closed = self
                            .persist_answering(
                                state,
                                order,
                                Command::MarkChannelClosed,
                                Vec::new(),
                                command,
                            )
                            .await?;
                        self.deps
                            .metrics
                            .closes
                            .with_label_values(&["merchant"])
                            .inc();
                        Ok(closed)
                    }
                    CloseOutcome::AlreadyPaid(charges) => {
                        // The money was taken: record it, and refuse the close.
                        self.apply_charges(state, charges).await?;
                        Err(Rejection::AlreadyPaid.into())
                    }
                }
            }
        }
    }

    async fn channel_result(
        &self,
        state: &mut State,
        channel: &str,
        result: PaymentResult,
    ) -> Result<Order, OrderError> {
        let order = self.load(state).await?;
        if order.channel != channel {
            // Signed by one channel about an order of another: never applied.
            tracing::error!(callback_channel = channel, order_channel = %order.channel, "callback from a channel that is not the order's; ignored");
            return Err(OrderError::ChannelMismatch);
        }
        match result {
            PaymentResult::Paid(p) => {
                self.persist(state, order, Command::MarkPaid(p), Vec::new())
                    .await
            }
            PaymentResult::Failed { reason } => {
                self.persist(state, order, Command::MarkFailed { reason }, Vec::new())
                    .await
            }
        }
    }

    /// Applies every charge a channel reported, the payment's own first.
    pub(super) async fn apply_charges(
        &self,
        state: &mut State,
        charges: Vec<ReportedPayment>,
    ) -> Result<Order, OrderError> {
        let mut order = self.load(state).await?;
        for charge in charges {
            order = self
                .persist(state, order, Command::MarkPaid(charge), Vec::new())
                .await?;
        }
        Ok(order)
    }

    async fn request_refund(
        &self,
        state: &mut State,
        merchant: &MerchantId,
        request: RefundRequest,
        command: Option<&CommandAnswer>,
    ) -> Result<(Order, RefundId), OrderError> {
        let order = self.load_for(state, merchant).await?;
        self.reverse_before_refund(&order, &request).await?;
        let no = request.refund_no.clone();
        let order = self
            .persist_answering(
                state,
                order,
                Command::RequestRefund(request),
                Vec::new(),
                command,
            )
            .await?;
        let id = order
            .refunds
            .iter()
            .find(|r| r.refund_no.as_ref() == Some(&no))
            .map(|r| r.refund_id.clone())
            .ok_or(OrderError::Rejected(Rejection::UnknownRefund))?;
        Ok((order, id))
    }

    async fn ensure_timers(&self, state: &mut State) {
        let Ok(order) = self.load(state).await else {
            return;
        };
        let ops = timer::ensure(&order, OffsetDateTime::now_utc());
        if ops.is_empty() {
            return;
        }
        self.deps.metrics.sweep_found.inc();
        tracing::warn!("stuck-order sweep: open order had no timer; timers restored");
        if let Err(e) = self.deps.store.write_timers(&order.order_id, ops).await {
            tracing::warn!(error = %e, "sweep could not write timers; the next sweep retries");
        }
    }
}

pub(super) fn unexpected(r: ChannelResponse) -> OrderError {
    OrderError::Channel(ChannelError::Unavailable(format!(
        "unexpected channel answer {r:?}"
    )))
}
