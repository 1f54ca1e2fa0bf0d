//! The front door of the actor system for the HTTP layer: submit tokens and creates go straight
//! to storage (a fresh order has no actor yet and nobody else can address it); every operation
//! on an existing order goes through the registry to that order's actor; reads come from
//! storage, which holds exactly what was acknowledged.

use super::order::{self, CommandAnswer, OrderError, PayRequest};
use super::registry::{self, RegistryRef};
use crate::channels::CallbackEvent;
use crate::domain::{
    Event, MerchantId, MerchantOrderNo, NewOrder, Order, OrderId, OrderStatus, PayStep, Refund,
    RefundId, RefundRequest, RequestId, SubmitToken, Timer,
};
use crate::metrics::Metrics;
use crate::storage::{CommandReply, CreateOutcome, OrderStore, TokenRecord};
use ractor::rpc::CallResult;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use time::OffsetDateTime;

/// The idempotency key of a Kafka command and the hash of what it asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandKey {
    /// The gateway's id for the command (with the merchant, the key).
    pub request_id: RequestId,
    /// Hex SHA-256 of the command's canonical form.
    pub command_hash: String,
}

/// Order operations for the edge.
#[derive(Clone)]
pub struct Orders {
    store: Arc<dyn OrderStore>,
    registry: Arc<RwLock<Option<RegistryRef>>>,
    call_timeout: Duration,
    token_ttl: time::Duration,
    metrics: Arc<Metrics>,
    cache: super::order_cache::OrderCache,
    token_key: crate::domain::TokenKey,
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
            token_key: store.submit_token_key(),
            store,
            registry,
            call_timeout,
            token_ttl: time::Duration::seconds(token_ttl_secs as i64),
            metrics,
            cache,
        }
    }

    /// Issues a one-time submit token: signed with the store's key, so nothing is written
    /// until a create uses it (and records it as used, in the order's own write).
    pub async fn issue_token(&self, merchant_id: MerchantId) -> Result<TokenRecord, OrderError> {
        // Whole seconds: the token names its expiry in seconds, and the answer says the same.
        let expires_at = OffsetDateTime::now_utc() + self.token_ttl;
        let expires_at = expires_at.replace_nanosecond(0).unwrap_or(expires_at);
        Ok(TokenRecord {
            token: self.token_key.issue(&merchant_id, expires_at),
            merchant_id,
            expires_at,
        })
    }

    /// Creates an order, consuming the token.
    pub async fn create(&self, token: SubmitToken, new: NewOrder) -> Result<Order, OrderError> {
        self.create_with_view(token, new)
            .await
            .map(|(order, _)| order)
    }

    /// `create`, with the new order's view as JSON text (its created event's data, rendered
    /// once): the body of the create's answer.
    pub async fn create_with_view(
        &self,
        token: SubmitToken,
        new: NewOrder,
    ) -> Result<(Order, String), OrderError> {
        let now = OffsetDateTime::now_utc();
        // A signed token is checked here, against the order's merchant (the store records it
        // as used); one of the stored form is judged by the store.
        if self.token_key.check(&token, &new.merchant_id, now) == crate::domain::TokenCheck::Invalid
        {
            return Err(OrderError::TokenInvalid);
        }
        let (order, change) = Order::create(OrderId::generate(), new, now);
        let events: Vec<Event> = Event::for_change(&order, &change).into_iter().collect();
        let view = created_view(&order, &events).into_owned();
        let timers = crate::domain::timer::on_create(&order);
        let outcome = self
            .store
            .create_order(token, order.clone(), events, timers, now)
            .await?;
        Ok((self.created(order, outcome)?, view))
    }

    /// Creates an order for a Kafka command, admitted by the command's key instead of a token:
    /// `answer` renders the reply to a successful create (status, body) from the new order and
    /// its view's JSON text (the created event's data, so that it is rendered once), and that
    /// reply is stored in the same write as the order, so the effect and its stored answer
    /// cannot be separated by a crash.
    pub async fn create_for_command(
        &self,
        key: CommandKey,
        new: NewOrder,
        answer: impl FnOnce(&Order, &str) -> (u16, Vec<u8>),
    ) -> Result<Order, OrderError> {
        let now = OffsetDateTime::now_utc();
        let (order, change) = Order::create(OrderId::generate(), new, now);
        let events: Vec<Event> = Event::for_change(&order, &change).into_iter().collect();
        let timers = crate::domain::timer::on_create(&order);
        let (status, body) = answer(&order, &created_view(&order, &events));
        let reply = CommandReply {
            merchant_id: order.merchant_id.clone(),
            request_id: key.request_id,
            command_hash: key.command_hash,
            status,
            body,
            order_id: Some(order.order_id.clone()),
            created_at: now,
        };
        let outcome = self
            .store
            .create_order_for_command(reply, order.clone(), events, timers)
            .await?;
        self.created(order, outcome)
    }

    fn created(&self, order: Order, outcome: CreateOutcome) -> Result<Order, OrderError> {
        match outcome {
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
            CreateOutcome::Answered => Err(OrderError::CommandAnswered),
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
                let ticket = self.cache.ticket(order_id);
                let o = self
                    .store
                    .load_order(order_id)
                    .await?
                    .ok_or(OrderError::NotFound)?;
                self.cache.fill(&o, ticket);
                o
            }
        };
        if &order.merchant_id != merchant {
            return Err(OrderError::NotFound);
        }
        Ok(order)
    }

    /// Reads a merchant's refund (its id names its order).
    pub async fn refund(
        &self,
        merchant: &MerchantId,
        refund_id: &RefundId,
    ) -> Result<(Order, Refund), OrderError> {
        let order = self.get(merchant, &refund_id.order_id()).await?;
        let refund = order
            .refund(refund_id)
            .cloned()
            .ok_or(OrderError::NotFound)?;
        Ok((order, refund))
    }

    /// Refunds (part of) a paid order; a repeat with the same `refund_no` answers the same
    /// refund.
    pub async fn request_refund(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        request: RefundRequest,
    ) -> Result<(Order, Refund), OrderError> {
        self.request_refund_answering(merchant, order_id, request, None)
            .await
    }

    /// `request_refund` for a Kafka command: when the refund is opened, `command`'s answer is
    /// stored in the same write.
    pub async fn request_refund_answering(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        request: RefundRequest,
        command: Option<CommandAnswer>,
    ) -> Result<(Order, Refund), OrderError> {
        let (order, id) = self
            .call(order_id, |reply| order::Msg::Refund {
                merchant,
                request,
                command,
                reply,
            })
            .await??;
        let refund = order.refund(&id).cloned().ok_or(OrderError::Rejected(
            crate::domain::Rejection::UnknownRefund,
        ))?;
        Ok((order, refund))
    }

    /// Hands a fired timer to its order's actor and waits until it is handled.
    pub async fn fire_timer(&self, timer: Timer) -> Result<(), OrderError> {
        self.call(timer.order_id, |reply| order::Msg::Timer {
            kind: timer.kind,
            attempt: timer.attempt,
            reply,
        })
        .await
    }

    /// Asks an order's actor to restore the timers its open work needs (the stuck-order sweep).
    pub async fn ensure_timers(&self, order_id: OrderId) -> Result<(), OrderError> {
        self.call(order_id, |reply| order::Msg::EnsureTimers { reply })
            .await
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
    ///
    /// A repeat on an order whose acknowledged state already decides the answer (PAYING answers
    /// the stored attempt; PAID, REFUNDED, CLOSED and FAILED refuse) is answered from the
    /// committed-order cache, as the order's actor would answer it, without a mailbox hop. A
    /// CREATED order, or one not in the cache, goes to its actor: only the actor changes orders.
    pub async fn pay(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        request: PayRequest,
    ) -> Result<Order, OrderError> {
        self.pay_answering(merchant, order_id, request, None).await
    }

    /// `pay` for a Kafka command: when the payment is opened, `command`'s answer is stored in
    /// the same write as the PAYING state.
    pub async fn pay_answering(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        request: PayRequest,
        command: Option<CommandAnswer>,
    ) -> Result<Order, OrderError> {
        if let Some(answer) = self.settled_pay_answer(&merchant, &order_id) {
            self.metrics.pay_answered_from_cache.inc();
            return answer;
        }
        self.ask(order_id, |reply| order::Msg::Pay {
            merchant,
            request,
            command,
            reply,
        })
        .await
    }

    /// The answer to a pay that the cached committed state decides, if it does.
    fn settled_pay_answer(
        &self,
        merchant: &MerchantId,
        order_id: &OrderId,
    ) -> Option<Result<Order, OrderError>> {
        let cached = self.cache.get(order_id)?;
        if cached.status == OrderStatus::Created {
            return None;
        }
        if &cached.merchant_id != merchant {
            return Some(Err(OrderError::NotFound));
        }
        // Past CREATED the answer does not depend on the clock or on the request.
        Some(match cached.pay_step(OffsetDateTime::now_utc()) {
            Ok(PayStep::AlreadyPaying) => Ok((*cached).clone()),
            Ok(PayStep::OpenAtChannel) => return None,
            Err(rejection) => Err(rejection.into()),
        })
    }

    /// Closes an unpaid order.
    pub async fn close(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
    ) -> Result<Order, OrderError> {
        self.close_answering(merchant, order_id, None).await
    }

    /// `close` for a Kafka command: when the order closes, `command`'s answer is stored in the
    /// same write.
    pub async fn close_answering(
        &self,
        merchant: MerchantId,
        order_id: OrderId,
        command: Option<CommandAnswer>,
    ) -> Result<Order, OrderError> {
        self.ask(order_id, |reply| order::Msg::Close {
            merchant,
            command,
            reply,
        })
        .await
    }

    /// Applies a result verified with `channel`'s key (the order must be that channel's).
    pub async fn channel_result(
        &self,
        channel: &str,
        event: CallbackEvent,
    ) -> Result<Order, OrderError> {
        let order_id = OrderId::parse(&event.order_id).map_err(|_| OrderError::NotFound)?;
        let channel = channel.to_string();
        self.ask(order_id, |reply| order::Msg::ChannelResult {
            channel,
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
        self.call(order_id, build).await?
    }

    /// Sends a message to an order's actor and waits for its answer.
    async fn call<T: Send + 'static>(
        &self,
        order_id: OrderId,
        build: impl FnOnce(ractor::RpcReplyPort<T>) -> order::Msg,
    ) -> Result<T, OrderError> {
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
            Ok(CallResult::Success(r)) => Ok(r),
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

/// A new order's view as JSON text, the body of its create's answer: its created event's data
/// (rendered once, for the event), or rendered here should the create have no event.
fn created_view<'a>(order: &Order, events: &'a [Event]) -> std::borrow::Cow<'a, str> {
    match events.first() {
        Some(created) => created.data.get().into(),
        // The view is plain data: serializing cannot fail.
        None => serde_json::to_string(&crate::domain::view::OrderView::from(order))
            .unwrap_or_default()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SqliteSettings;
    use crate::domain::{Command, PayMethod, PaySerialNo, Rejection};
    use crate::storage::sqlite::SqliteStore;

    fn step(order: &Order, cmd: Command) -> Order {
        let mut next = order.clone();
        for change in order.apply(&cmd, OffsetDateTime::now_utc()).unwrap() {
            next.on(&change);
        }
        next
    }

    fn open_orders(dir: &tempfile::TempDir, metrics: Arc<Metrics>) -> (Orders, Arc<SqliteStore>) {
        let settings = SqliteSettings {
            path: dir.path().join("o.db").to_string_lossy().into_owned(),
            ..SqliteSettings::default()
        };
        let store = Arc::new(SqliteStore::open(&settings, metrics.clone()).unwrap());
        let orders = Orders::new(
            store.clone(),
            Arc::new(RwLock::new(None)),
            Duration::from_secs(5),
            60,
            metrics,
            super::super::order_cache::OrderCache::new(100),
        );
        (orders, store)
    }

    /// Issuing a token writes nothing; the token admits one order of its merchant, also after
    /// a restart (the key is the store's), and nothing altered or another merchant's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signed_tokens_write_nothing_until_used_and_outlive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let (orders, store) = open_orders(&dir, metrics.clone());
        let m1 = MerchantId::parse("m1").unwrap();
        let issued = orders.issue_token(m1.clone()).await.unwrap();
        let spare = orders.issue_token(m1.clone()).await.unwrap();
        let foreign = orders
            .issue_token(MerchantId::parse("m2").unwrap())
            .await
            .unwrap();
        assert_eq!(issued.merchant_id, m1);
        assert_eq!(
            issued.expires_at.nanosecond(),
            0,
            "whole seconds, as the token names"
        );
        assert_eq!(
            metrics.storage_batch_writes.get_sample_count(),
            0,
            "issuing tokens committed nothing"
        );

        let created = orders
            .create(issued.token.clone(), NewOrder::for_test("m1", "SIG-1", 100))
            .await
            .unwrap();
        let again = orders
            .create(issued.token.clone(), NewOrder::for_test("m1", "SIG-2", 100))
            .await;
        assert!(
            matches!(&again, Err(OrderError::TokenUsed(Some(by))) if *by == created.order_id),
            "{again:?}"
        );
        let r = orders
            .create(foreign.token, NewOrder::for_test("m1", "SIG-3", 100))
            .await;
        assert!(
            matches!(r, Err(OrderError::TokenInvalid)),
            "another merchant's: {r:?}"
        );
        let mut altered = spare.token.as_str().to_string();
        let last = altered.pop().unwrap();
        altered.push(if last == '0' { '1' } else { '0' });
        let r = orders
            .create(
                SubmitToken::parse(&altered).unwrap(),
                NewOrder::for_test("m1", "SIG-4", 100),
            )
            .await;
        assert!(matches!(r, Err(OrderError::TokenInvalid)), "altered: {r:?}");

        // A restart: the token issued before it is still good, and still one-time.
        store.close().await;
        drop((orders, store));
        let (orders, _store) = open_orders(&dir, Arc::new(Metrics::new()));
        let after = orders
            .create(spare.token.clone(), NewOrder::for_test("m1", "SIG-5", 100))
            .await
            .unwrap();
        let r = orders
            .create(spare.token, NewOrder::for_test("m1", "SIG-6", 100))
            .await;
        assert!(
            matches!(&r, Err(OrderError::TokenUsed(Some(by))) if *by == after.order_id),
            "{r:?}"
        );
    }

    /// With no registry running, only answers decided by the committed state can succeed: a
    /// CREATED order must reach its actor, a settled one must not need it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_pays_on_settled_orders_are_answered_without_the_actor() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let settings = SqliteSettings {
            path: dir.path().join("o.db").to_string_lossy().into_owned(),
            ..SqliteSettings::default()
        };
        let store = Arc::new(SqliteStore::open(&settings, metrics.clone()).unwrap());
        let cache = super::super::order_cache::OrderCache::new(100);
        let no_registry = Arc::new(RwLock::new(None));
        let orders = Orders::new(
            store,
            no_registry,
            Duration::from_secs(5),
            60,
            metrics.clone(),
            cache.clone(),
        );
        let merchant = MerchantId::parse("m1").unwrap();
        let token = orders.issue_token(merchant.clone()).await.unwrap().token;
        let created = orders
            .create(token, NewOrder::for_test("m1", "FAST-1", 100))
            .await
            .unwrap();
        let id = created.order_id.clone();
        let pay = || PayRequest {
            pay_method: PayMethod::Native,
            auth_code: None,
        };

        let r = orders.pay(merchant.clone(), id.clone(), pay()).await;
        assert!(
            matches!(r, Err(OrderError::Unavailable(_))),
            "a CREATED order goes to its actor: {r:?}"
        );

        let paying = step(
            &created,
            Command::MarkPaying {
                pay_serial_no: PaySerialNo::generate(),
                pay_method: PayMethod::Native,
                channel_payload: serde_json::json!({"code_url": "sim://x"}),
                channel_trade_no: Some("T1".into()),
            },
        );
        cache.committed(&paying);
        let again = orders
            .pay(merchant.clone(), id.clone(), pay())
            .await
            .unwrap();
        assert_eq!(again, paying, "a repeat answers the stored attempt");
        let other = orders
            .pay(MerchantId::parse("m2").unwrap(), id.clone(), pay())
            .await;
        assert!(matches!(other, Err(OrderError::NotFound)), "{other:?}");

        let paid = step(
            &paying,
            Command::MarkPaid(crate::domain::ReportedPayment {
                channel_trade_no: "T1".into(),
                amount: paying.amount.into(),
                currency: "CNY".into(),
                paid_at: OffsetDateTime::now_utc(),
            }),
        );
        cache.committed(&paid);
        let r = orders.pay(merchant.clone(), id.clone(), pay()).await;
        assert!(
            matches!(r, Err(OrderError::Rejected(Rejection::AlreadyPaid))),
            "{r:?}"
        );
        assert_eq!(metrics.pay_answered_from_cache.get(), 3);

        // Evicted (or never cached): back to the actor.
        cache.forget(&id);
        let r = orders.pay(merchant, id, pay()).await;
        assert!(matches!(r, Err(OrderError::Unavailable(_))), "{r:?}");
    }
}
