//! One actor per live order: every operation on an order passes through its mailbox, one at a
//! time, so no lock is needed and no order is charged twice. The actor loads its order from
//! storage on first use, applies a command with the pure state machine, persists the new state
//! with its events, and only then replies. It holds nothing storage does not also hold.

use super::channel::{ChannelHandle, ChannelRequest, ChannelResponse};
use crate::channels::{ChannelError, CloseOutcome, OpenPayment, PaymentResult};
use crate::domain::{
    CloseStep, Command, Event, MerchantId, Order, OrderId, PayMethod, PaySerialNo, PayStep,
    Rejection,
};
use crate::metrics::Metrics;
use crate::storage::{OrderStore, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::Arc;
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
    /// The submit token was used before (by the named order, when known).
    #[error("submit token already used")]
    TokenUsed(Option<OrderId>),
    /// The submit token is unknown, another merchant's, or expired.
    #[error("submit token is unknown or expired")]
    TokenInvalid,
    /// The merchant already has an order with this number.
    #[error("an order with this merchant_order_no exists")]
    Duplicate(OrderId),
    /// The order's actor did not answer (timed out or failed); the outcome may be unknown.
    #[error("order actor unavailable: {0}")]
    Unavailable(String),
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

/// Messages of an order actor.
pub enum Msg {
    /// Start (or repeat) payment.
    Pay {
        /// Who asks; another merchant's order answers `NotFound`.
        merchant: MerchantId,
        /// What to pay with.
        request: PayRequest,
        /// Answer.
        reply: OrderReply,
    },
    /// Close the unpaid order.
    Close {
        /// Who asks.
        merchant: MerchantId,
        /// Answer.
        reply: OrderReply,
    },
    /// A verified payment result from the order's channel.
    ChannelResult {
        /// The result.
        result: PaymentResult,
        /// Answer (whether the result was recorded).
        reply: OrderReply,
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
}

/// The order actor.
pub struct OrderActor {
    /// Dependencies.
    pub deps: Arc<OrderDeps>,
}

/// Start-up arguments: which order.
pub struct Args {
    /// The order this actor owns.
    pub order_id: OrderId,
}

/// The actor's state: its order, loaded lazily.
pub struct State {
    order_id: OrderId,
    order: Option<Order>,
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
        })
    }

    async fn handle(
        &self,
        _myself: OrderRef,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        // Errors are answered to the caller; returning Err here would stop the actor.
        match msg {
            Msg::Pay {
                merchant,
                request,
                reply,
            } => {
                let r = self.pay(state, &merchant, request).await;
                let _ = reply.send(r);
            }
            Msg::Close { merchant, reply } => {
                let r = self.close(state, &merchant).await;
                let _ = reply.send(r);
            }
            Msg::ChannelResult { result, reply } => {
                let r = self.channel_result(state, result).await;
                let late_refund_due =
                    matches!(&r, Ok(o) if o.late_payment.as_ref().is_some_and(|lp| !lp.refunded));
                let _ = reply.send(r);
                if late_refund_due {
                    self.refund_late_payment(state).await;
                }
            }
            #[cfg(test)]
            Msg::Panic => panic!("injected panic in order actor {}", state.order_id),
        }
        Ok(())
    }
}

impl OrderActor {
    async fn load(&self, state: &mut State) -> Result<Order, OrderError> {
        if let Some(o) = &state.order {
            return Ok(o.clone());
        }
        let order = match self.deps.cache.get(&state.order_id) {
            Some(cached) => (*cached).clone(),
            None => {
                let order = self
                    .deps
                    .store
                    .load_order(&state.order_id)
                    .await?
                    .ok_or(OrderError::NotFound)?;
                self.deps.cache.committed(&order);
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

    /// Applies `cmd`, stores the result with its events, and updates the cached order. The cache
    /// is dropped whenever the store's answer leaves the stored state in doubt.
    async fn persist(
        &self,
        state: &mut State,
        order: Order,
        cmd: Command,
    ) -> Result<Order, OrderError> {
        let changes = order.apply(&cmd, OffsetDateTime::now_utc())?;
        if changes.is_empty() {
            return Ok(order);
        }
        let mut next = order.clone();
        let mut events = Vec::with_capacity(changes.len());
        for change in &changes {
            next.on(change);
            events.extend(Event::for_change(&next, change));
        }
        match self
            .deps
            .store
            .update_order(next.clone(), order.version, order.status, events)
            .await
        {
            Ok(()) => {
                if next.status != order.status {
                    self.deps
                        .metrics
                        .order_transitions
                        .with_label_values(&[next.status.as_str()])
                        .inc();
                }
                tracing::debug!(order_id = %next.order_id, status = next.status.as_str(), version = next.version, "order changed");
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

    fn channel(&self, order: &Order) -> Result<&ChannelHandle, OrderError> {
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
    ) -> Result<Order, OrderError> {
        let order = self.load_for(state, merchant).await?;
        match order.pay_step(OffsetDateTime::now_utc())? {
            PayStep::AlreadyPaying => Ok(order),
            PayStep::OpenAtChannel => {
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
                let opened = match self
                    .channel(&order)?
                    .request(ChannelRequest::Open(open))
                    .await?
                {
                    ChannelResponse::Opened(o) => o,
                    other => return Err(unexpected(other)),
                };
                let cmd = Command::MarkPaying {
                    pay_serial_no: PaySerialNo::generate(),
                    pay_method: req.pay_method,
                    channel_payload: opened.payload,
                    channel_trade_no: opened.channel_trade_no,
                };
                self.persist(state, order, cmd).await
            }
        }
    }

    async fn close(&self, state: &mut State, merchant: &MerchantId) -> Result<Order, OrderError> {
        let order = self.load_for(state, merchant).await?;
        match order.close_step()? {
            CloseStep::AlreadyClosed => Ok(order),
            CloseStep::Local => self.persist(state, order, Command::Close).await,
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
                        self.persist(state, order, Command::MarkChannelClosed).await
                    }
                    CloseOutcome::AlreadyPaid(result) => {
                        // The money was taken: record it, and refuse the close.
                        self.persist(state, order, command_for(result)).await?;
                        Err(Rejection::AlreadyPaid.into())
                    }
                }
            }
        }
    }

    async fn channel_result(
        &self,
        state: &mut State,
        result: PaymentResult,
    ) -> Result<Order, OrderError> {
        let order = self.load(state).await?;
        let r = self.persist(state, order, command_for(result)).await;
        if let Err(OrderError::Rejected(Rejection::AmountMismatch { expected, reported })) = &r {
            tracing::error!(order_id = %state.order_id, expected, reported, "channel reported a different amount; not marked paid");
        }
        r
    }

    /// Refunds a payment that arrived after the order closed, by the original route. A failure
    /// leaves the refund pending; the channel's next callback for it tries again.
    async fn refund_late_payment(&self, state: &mut State) {
        let Ok(order) = self.load(state).await else {
            return;
        };
        let Some(lp) = order.late_payment.clone() else {
            return;
        };
        let Ok(channel) = self.channel(&order) else {
            return;
        };
        let refund_no = format!("late-{}", order.order_id);
        let req = ChannelRequest::Refund {
            order_id: order.order_id.clone(),
            refund_no,
            amount: lp.amount,
        };
        match channel.request(req).await {
            Ok(_) => {
                if let Err(e) = self
                    .persist(state, order, Command::MarkLatePaymentRefunded)
                    .await
                {
                    tracing::warn!(order_id = %state.order_id, error = %e, "late payment refunded but not recorded yet");
                }
            }
            Err(e) => {
                tracing::warn!(order_id = %state.order_id, error = %e, "late payment refund failed; will retry")
            }
        }
    }
}

fn command_for(result: PaymentResult) -> Command {
    match result {
        PaymentResult::Paid {
            channel_trade_no,
            amount,
            paid_at,
        } => Command::MarkPaid {
            channel_trade_no,
            amount,
            paid_at,
        },
        PaymentResult::Failed { reason } => Command::MarkFailed { reason },
    }
}

fn unexpected(r: ChannelResponse) -> OrderError {
    OrderError::Channel(ChannelError::Unavailable(format!(
        "unexpected channel answer {r:?}"
    )))
}
