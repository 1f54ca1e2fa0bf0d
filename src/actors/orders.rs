//! The front door of the actor system for the HTTP layer: submit tokens and creates go straight
//! to storage (a fresh order has no actor yet and nobody else can address it); every operation
//! on an existing order goes through the registry to that order's actor; reads come from
//! storage, which holds exactly what was acknowledged.

use super::order::{self, OrderError, PayRequest};
use super::registry::{self, RegistryRef};
use crate::channels::CallbackEvent;
use crate::domain::{Event, MerchantId, MerchantOrderNo, NewOrder, Order, OrderId, SubmitToken};
use crate::metrics::Metrics;
use crate::storage::{CreateOutcome, OrderStore, TokenRecord};
use ractor::rpc::CallResult;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;

/// Order operations for the edge.
#[derive(Clone)]
pub struct Orders {
    store: Arc<dyn OrderStore>,
    registry: Arc<RwLock<Option<RegistryRef>>>,
    call_timeout: Duration,
    token_ttl: time::Duration,
    metrics: Arc<Metrics>,
    cache: super::order_cache::OrderCache,
}

impl Orders {
    /// Builds the front door.
    pub fn new(
        store: Arc<dyn OrderStore>,
        registry: Arc<RwLock<Option<RegistryRef>>>,
        call_timeout: Duration,
        token_ttl_secs: u64,
        metrics: Arc<Metrics>,
        cache: super::order_cache::OrderCache,
    ) -> Self {
        Self {
            store,
            registry,
            call_timeout,
            token_ttl: time::Duration::seconds(token_ttl_secs as i64),
            metrics,
            cache,
        }
    }

    /// Issues a one-time submit token.
    pub async fn issue_token(&self, merchant_id: MerchantId) -> Result<TokenRecord, OrderError> {
        let record = TokenRecord {
            token: SubmitToken::generate(),
            merchant_id,
            expires_at: OffsetDateTime::now_utc() + self.token_ttl,
        };
        self.store.issue_token(record.clone()).await?;
        Ok(record)
    }

    /// Creates an order, consuming the token.
    pub async fn create(&self, token: SubmitToken, new: NewOrder) -> Result<Order, OrderError> {
        let now = OffsetDateTime::now_utc();
        let (order, change) = Order::create(OrderId::generate(), new, now);
        let events: Vec<Event> = Event::for_change(&order, &change).into_iter().collect();
        match self
            .store
            .create_order(token, order.clone(), events, now)
            .await?
        {
            CreateOutcome::Created => {
                self.cache.committed(&order);
                self.metrics
                    .order_transitions
                    .with_label_values(&[order.status.as_str()])
                    .inc();
                tracing::debug!(order_id = %order.order_id, merchant_id = %order.merchant_id, "order created");
                Ok(order)
            }
            CreateOutcome::TokenUsed(by) => Err(OrderError::TokenUsed(by)),
            CreateOutcome::TokenInvalid => Err(OrderError::TokenInvalid),
            CreateOutcome::Duplicate(id) => Err(OrderError::Duplicate(id)),
        }
    }

    /// Reads a merchant's order: the newest acknowledged state.
    pub async fn get(
        &self,
        merchant: &MerchantId,
        order_id: &OrderId,
    ) -> Result<Order, OrderError> {
        let order = match self.cache.get(order_id) {
            Some(o) => (*o).clone(),
            None => {
                let o = self
                    .store
                    .load_order(order_id)
                    .await?
                    .ok_or(OrderError::NotFound)?;
                self.cache.committed(&o);
                o
            }
        };
        if &order.merchant_id != merchant {
            return Err(OrderError::NotFound);
        }
        Ok(order)
    }

    /// Finds a merchant's order by its number.
    pub async fn find(
        &self,
        merchant: &MerchantId,
        no: &MerchantOrderNo,
    ) -> Result<Order, OrderError> {
        self.store
            .find_by_merchant_order_no(merchant, no)
            .await?
            .ok_or(OrderError::NotFound)
    }

    /// Starts (or repeats) payment.
    pub async fn pay(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        request: PayRequest,
    ) -> Result<Order, OrderError> {
        self.ask(order_id, |reply| order::Msg::Pay {
            merchant,
            request,
            reply,
        })
        .await
    }

    /// Closes an unpaid order.
    pub async fn close(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
    ) -> Result<Order, OrderError> {
        self.ask(order_id, |reply| order::Msg::Close { merchant, reply })
            .await
    }

    /// Applies a verified channel result.
    pub async fn channel_result(&self, event: CallbackEvent) -> Result<Order, OrderError> {
        let order_id = OrderId::parse(&event.order_id).map_err(|_| OrderError::NotFound)?;
        self.ask(order_id, |reply| order::Msg::ChannelResult {
            result: event.result,
            reply,
        })
        .await
    }

    /// Live order actors (for tests and diagnostics).
    pub async fn live_actors(&self) -> Option<usize> {
        let registry = self.registry.read().ok()?.clone()?;
        match registry
            .call(registry::Msg::LiveCount, Some(self.call_timeout))
            .await
        {
            Ok(CallResult::Success(n)) => Some(n),
            _ => None,
        }
    }

    async fn ask(
        &self,
        order_id: OrderId,
        build: impl FnOnce(order::OrderReply) -> order::Msg,
    ) -> Result<Order, OrderError> {
        let registry = self
            .registry
            .read()
            .ok()
            .and_then(|r| r.clone())
            .ok_or_else(|| OrderError::Unavailable("order registry is not running".into()))?;
        let sent = registry
            .call(
                |reply| registry::Msg::Dispatch {
                    order_id,
                    msg: build(reply),
                },
                Some(self.call_timeout),
            )
            .await;
        match sent {
            Ok(CallResult::Success(r)) => r,
            Ok(CallResult::Timeout) => Err(OrderError::Unavailable(
                "the order did not answer in time".into(),
            )),
            Ok(CallResult::SenderError) => Err(OrderError::Unavailable(
                "the order actor failed; it was restarted".into(),
            )),
            Err(e) => Err(OrderError::Unavailable(format!(
                "order registry unreachable: {e}"
            ))),
        }
    }

    #[cfg(test)]
    pub(crate) async fn inject_panic(&self, order_id: OrderId) {
        if let Some(r) = self.registry.read().ok().and_then(|r| r.clone()) {
            let _ = r.cast(registry::Msg::Dispatch {
                order_id,
                msg: order::Msg::Panic,
            });
        }
    }
}
