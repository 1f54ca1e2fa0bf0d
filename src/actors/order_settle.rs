//! What an order actor does by itself, woken by its durable timers: ask the channel about a
//! payment whose callback may be lost (poll), close the order at expiry (asking the channel
//! first when a payment may be open: paid → PAID, not paid → closed there too, no answer →
//! later, never closed blind), and carry refunds to a final state (querying the channel before
//! every retry). Every channel call here is background priority: pay calls go first.

use super::channel::{ChannelRequest, ChannelResponse, Priority};
use super::order::{OrderActor, OrderError, State, unexpected};
use crate::channels::{ChannelError, CloseOutcome, PaymentState, PaymentStatus, RefundCall};
use crate::domain::{Command, Order, OrderStatus, RefundId, RefundOutcome, TimerKind, TimerOp};
use time::OffsetDateTime;

impl OrderActor {
    pub(super) async fn on_timer(&self, state: &mut State, kind: TimerKind, attempt: u32) {
        self.deps
            .metrics
            .timers_fired
            .with_label_values(&[kind.as_str()])
            .inc();
        let order = match self.load(state).await {
            Ok(o) => o,
            Err(OrderError::NotFound) => {
                self.reschedule(state, kind, attempt, None).await;
                return;
            }
            // Storage trouble: the timer's lease makes it fire again later.
            Err(_) => return,
        };
        let next = match kind {
            TimerKind::Poll => self.poll(state, order, attempt).await,
            TimerKind::Expire => self.expire(state, order, attempt).await,
            TimerKind::Refund => self.retry_refunds(state, order, attempt).await,
            TimerKind::Fulfill => self.fulfill_on_timer(state, order, attempt).await,
        };
        self.reschedule(state, kind, attempt, next).await;
    }

    /// Moves the fired timer on (or removes it). If the order change made while handling it
    /// already cleared or replaced it, storage leaves that alone.
    async fn reschedule(
        &self,
        state: &State,
        kind: TimerKind,
        attempt: u32,
        next: Option<TimerOp>,
    ) {
        if let Err(e) = self
            .deps
            .store
            .reschedule_timer(&state.order_id, kind, attempt, next)
            .await
        {
            tracing::warn!(timer = kind.as_str(), error = %e, "timer not rescheduled; its lease fires it again");
        }
    }

    fn awaits_payment(order: &Order) -> bool {
        order.status == OrderStatus::Paying
            || (order.status == OrderStatus::Created && order.payment_opened())
    }

    async fn query(&self, order: &Order) -> Result<PaymentStatus, OrderError> {
        match self
            .channel(order)?
            .submit(
                ChannelRequest::Query(order.order_id.clone()),
                Priority::Background,
            )
            .await?
        {
            ChannelResponse::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Applies what a status query found, through the same state machine as a callback.
    /// Answers whether the payment reached a final state.
    async fn apply_status(
        &self,
        state: &mut State,
        status: PaymentStatus,
    ) -> Result<bool, OrderError> {
        match status.state {
            PaymentState::Paid => {
                let order = self.apply_charges(state, status.charges).await?;
                if Self::awaits_payment(&order) {
                    // The channel's payment is spent, and none of its charges could pay the
                    // order (each is recorded and refunded): this attempt cannot succeed.
                    let reason = "the channel's payment could not be applied".to_string();
                    self.persist(state, order, Command::MarkFailed { reason }, Vec::new())
                        .await?;
                }
                Ok(true)
            }
            PaymentState::Failed { reason } => {
                let order = self.load(state).await?;
                self.persist(state, order, Command::MarkFailed { reason }, Vec::new())
                    .await?;
                // A charge may still be listed: record it (and refund it).
                self.apply_charges(state, status.charges).await?;
                Ok(true)
            }
            PaymentState::Closed => {
                let order = self.load(state).await?;
                self.persist(state, order, Command::MarkChannelClosed, Vec::new())
                    .await?;
                self.apply_charges(state, status.charges).await?;
                Ok(true)
            }
            PaymentState::Open | PaymentState::NotFound => Ok(false),
        }
    }

    async fn poll(&self, state: &mut State, order: Order, attempt: u32) -> Option<TimerOp> {
        if !Self::awaits_payment(&order) {
            return None;
        }
        let now = OffsetDateTime::now_utc();
        let next = self
            .deps
            .schedule_for(&order.merchant_id)
            .next_poll(now, attempt);
        let result = match self.query(&order).await {
            Ok(status) => match self.apply_status(state, status).await {
                Ok(true) => "settled",
                Ok(false) => "pending",
                Err(e) => {
                    tracing::warn!(error = %e, "poll answer not applied");
                    "error"
                }
            },
            Err(OrderError::Channel(ChannelError::Busy { .. })) => "shed",
            Err(e) => {
                tracing::debug!(error = %e, "poll failed; next poll per schedule");
                "error"
            }
        };
        self.deps.metrics.polls.with_label_values(&[result]).inc();
        next
    }

    async fn expire(&self, state: &mut State, order: Order, attempt: u32) -> Option<TimerOp> {
        let now = OffsetDateTime::now_utc();
        if !matches!(order.status, OrderStatus::Created | OrderStatus::Paying) {
            return None;
        }
        if now < order.expires_at {
            // Fired early (a duplicate, or a clock step): wait for the real time.
            return Some(TimerOp::Set {
                kind: TimerKind::Expire,
                due_at: order.expires_at,
                attempt,
            });
        }
        let retry = self
            .deps
            .schedule_for(&order.merchant_id)
            .next_expire(now, attempt);
        if !order.payment_opened() {
            return match self.persist(state, order, Command::Close, Vec::new()).await {
                Ok(_) => {
                    self.deps
                        .metrics
                        .closes
                        .with_label_values(&["expired"])
                        .inc();
                    None
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiry close failed; retrying later");
                    Some(retry)
                }
            };
        }
        // A payment may be open at the channel: ask first, close there, never blind.
        match self.close_at_channel(state, &order).await {
            Ok(()) => None,
            Err(e) => {
                tracing::info!(error = %e, "expiry close of a paying order must wait for the channel");
                self.deps
                    .metrics
                    .closes
                    .with_label_values(&["expiry_deferred"])
                    .inc();
                Some(retry)
            }
        }
    }

    async fn close_at_channel(&self, state: &mut State, order: &Order) -> Result<(), OrderError> {
        let status = self.query(order).await?;
        if self.apply_status(state, status).await? {
            return Ok(());
        }
        let outcome = match self
            .channel(order)?
            .submit(
                ChannelRequest::Close(order.order_id.clone()),
                Priority::Background,
            )
            .await?
        {
            ChannelResponse::Closed(c) => c,
            other => return Err(unexpected(other)),
        };
        match outcome {
            CloseOutcome::Closed => {
                let order = self.load(state).await?;
                self.persist(state, order, Command::MarkChannelClosed, Vec::new())
                    .await?;
                self.deps
                    .metrics
                    .closes
                    .with_label_values(&["expired"])
                    .inc();
            }
            CloseOutcome::AlreadyPaid(charges) => {
                self.apply_charges(state, charges).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn try_fresh_refunds(&self, state: &mut State) {
        let fresh = std::mem::take(&mut state.fresh_refunds);
        for id in fresh {
            // First attempt: nothing was sent before, so no query is needed.
            self.carry_refund(state, &id, false).await;
        }
        state.fresh_refunds.clear();
    }

    async fn retry_refunds(
        &self,
        state: &mut State,
        order: Order,
        attempt: u32,
    ) -> Option<TimerOp> {
        let open: Vec<RefundId> = order
            .refunds
            .iter()
            .filter(|r| r.status.is_open())
            .map(|r| r.refund_id.clone())
            .collect();
        if open.is_empty() {
            return None;
        }
        for id in &open {
            self.carry_refund(state, id, true).await;
        }
        let Ok(order) = self.load(state).await else {
            return None; // the lease fires the timer again
        };
        if order.open_refunds() == 0 {
            return None;
        }
        let now = OffsetDateTime::now_utc();
        if let Some(next) = self
            .deps
            .schedule_for(&order.merchant_id)
            .next_refund(now, attempt)
        {
            return Some(next);
        }
        // Out of retries: give the open refunds up; an operator takes it from here.
        for refund in order.refunds.iter().filter(|r| r.status.is_open()) {
            tracing::error!(refund_id = %refund.refund_id, amount = refund.amount, automatic = refund.automatic, "refund given up after every retry; an operator is needed");
            self.deps
                .metrics
                .refunds
                .with_label_values(&["given_up"])
                .inc();
            let outcome = RefundOutcome::Failed(format!(
                "given up after {attempt} retries; an operator is needed"
            ));
            self.settle_refund(state, &refund.refund_id, outcome).await;
        }
        None
    }

    /// One step of a refund at the channel: on a retry, ask about it first (it may have gone
    /// through while our answer was lost), then send it if the channel never saw it.
    async fn carry_refund(&self, state: &mut State, id: &RefundId, query_first: bool) {
        let Ok(order) = self.load(state).await else {
            return;
        };
        let Some(refund) = order.refund(id).filter(|r| r.status.is_open()).cloned() else {
            return;
        };
        let Ok(channel) = self.channel(&order) else {
            return;
        };
        if query_first {
            match channel
                .submit(
                    ChannelRequest::QueryRefund(id.clone()),
                    Priority::Background,
                )
                .await
            {
                Ok(ChannelResponse::Refund(Some(outcome))) => {
                    self.settle_refund(state, id, outcome).await;
                    return;
                }
                Ok(ChannelResponse::Refund(None)) => {}
                Ok(other) => {
                    tracing::warn!(answer = ?other, "unexpected refund query answer");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "refund query failed; the timer retries");
                    return;
                }
            }
        }
        let call = RefundCall {
            order_id: order.order_id.clone(),
            refund_id: id.clone(),
            channel_trade_no: refund.channel_trade_no.clone(),
            amount: refund.amount,
        };
        match channel
            .submit(ChannelRequest::Refund(call), Priority::Background)
            .await
        {
            Ok(ChannelResponse::Refund(Some(outcome))) => {
                self.settle_refund(state, id, outcome).await
            }
            Ok(other) => tracing::warn!(answer = ?other, "unexpected refund answer"),
            Err(ChannelError::Rejected { code, message }) => {
                // A definite refusal: retrying cannot change it.
                let why = format!("the channel refused the refund: {code}: {message}");
                if refund.automatic {
                    tracing::error!(refund_id = %id, %why, "automatic refund refused; an operator is needed");
                }
                self.settle_refund(state, id, RefundOutcome::Failed(why))
                    .await;
            }
            Err(e) => tracing::debug!(error = %e, "refund attempt failed; the timer retries"),
        }
    }

    async fn settle_refund(&self, state: &mut State, id: &RefundId, outcome: RefundOutcome) {
        let Ok(order) = self.load(state).await else {
            return;
        };
        let cmd = Command::SettleRefund {
            refund_id: id.clone(),
            outcome,
        };
        if let Err(e) = self.persist(state, order, cmd, Vec::new()).await {
            tracing::warn!(refund_id = %id, error = %e, "refund result not recorded yet; the timer asks again");
        }
    }
}
