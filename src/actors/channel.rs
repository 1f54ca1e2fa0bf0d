//! One channel actor per configured payment channel. It owns the channel's rate limit
//! (governor) and its queue: requests wait in the mailbox in arrival order for a rate slot, and
//! a request that cannot get one before its deadline, or that finds the queue full, is answered
//! `Busy` at once. Once it has a slot, the HTTP call runs in its own task (bounded by
//! `max_in_flight`) so a slow channel never stalls the queue behind it. Background requests
//! (status queries, refunds, expiry closes: the timers retry them) never wait for a slot and
//! are refused once the queue is half full, so they cannot starve a payer's pay call.

use crate::channels::{
    ChannelError, CloseOutcome, OpenPayment, OpenedPayment, PaymentChannel, PaymentStatus,
    RefundCall,
};
use crate::config::ChannelSettings;
use crate::config::live::Live;
use crate::domain::{OrderId, RefundId, RefundOutcome};
use crate::metrics::Metrics;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Extra time a caller waits beyond the queue deadline before it gives up on the actor itself.
const CALL_MARGIN: Duration = Duration::from_secs(1);

/// A request to a channel.
#[derive(Debug, Clone)]
pub enum ChannelRequest {
    /// Open a payment.
    Open(OpenPayment),
    /// Ask how a payment stands.
    Query(OrderId),
    /// Close a payment.
    Close(OrderId),
    /// Refund a charge.
    Refund(RefundCall),
    /// Ask how a refund stands.
    QueryRefund(RefundId),
}

impl ChannelRequest {
    fn op(&self) -> &'static str {
        match self {
            ChannelRequest::Open(_) => "open",
            ChannelRequest::Query(_) => "query",
            ChannelRequest::Close(_) => "close",
            ChannelRequest::Refund(_) => "refund",
            ChannelRequest::QueryRefund(_) => "query_refund",
        }
    }
}

/// Who waits for a request: a caller (a payer, a merchant) or a timer that will retry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A caller waits: queue for a slot until the queue deadline.
    Caller,
    /// A timer retries it: take a free slot now or be refused at once.
    Background,
}

/// A channel's answer.
#[derive(Debug, Clone)]
pub enum ChannelResponse {
    /// Payment opened.
    Opened(OpenedPayment),
    /// Payment status.
    Status(PaymentStatus),
    /// Close result.
    Closed(CloseOutcome),
    /// Refund result (of a refund or a refund query; `None`: the channel never received it).
    Refund(Option<RefundOutcome>),
}

/// Messages of the channel actor.
pub enum Msg {
    /// Hand out a slot (a rate-limit cell and an in-flight permit) once one is free, unless
    /// `deadline` passes first.
    Admit {
        /// Latest time to hand the slot out.
        deadline: Instant,
        /// Background requests never wait for a rate slot.
        priority: Priority,
        /// Where the slot goes.
        reply: RpcReplyPort<Result<Slot, ChannelError>>,
    },
}

/// The right to send one request to the channel now: the rate-limit cell is taken and the
/// in-flight permit is held until the request is done. The caller makes the HTTP call itself,
/// so a slow channel never stalls the queue, and a caller can record what it is about to do
/// between getting the slot and using it.
pub struct Slot {
    name: String,
    adapter: Arc<dyn PaymentChannel>,
    metrics: Arc<Metrics>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("channel", &self.name).finish()
    }
}

impl Slot {
    /// Sends `request` and waits for the channel's answer.
    pub async fn run(self, request: ChannelRequest) -> Result<ChannelResponse, ChannelError> {
        let started = Instant::now();
        let op = request.op();
        let result = run(self.adapter.as_ref(), request).await;
        self.metrics
            .channel_request_seconds
            .with_label_values(&[&self.name, op])
            .observe(started.elapsed().as_secs_f64());
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ChannelError::RateLimited(_)) => "rate_limited",
            Err(ChannelError::Rejected { .. }) => "rejected",
            Err(_) => "error",
        };
        self.metrics
            .channel_requests
            .with_label_values(&[&self.name, op, outcome])
            .inc();
        result
    }
}

/// Reference to a channel actor.
pub type ChannelRef = ActorRef<Msg>;

/// The channel actor's dependencies.
pub struct ChannelActor;

/// Start-up arguments.
pub struct Args {
    /// Channel name.
    pub name: String,
    /// The adapter.
    pub adapter: Arc<dyn PaymentChannel>,
    /// Settings.
    pub settings: ChannelSettings,
    /// Shared with every [`ChannelHandle`]: requests waiting for a slot.
    pub queued: Arc<AtomicUsize>,
    /// Shared with every [`ChannelHandle`]: the rate limit, replaced by a reload.
    pub limiter: Arc<Live<DefaultDirectRateLimiter>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// A rate limiter of `qps` with `burst`.
fn limiter(qps: u32, burst: u32) -> Result<DefaultDirectRateLimiter, &'static str> {
    let qps = NonZeroU32::new(qps).ok_or("qps must be positive")?;
    let burst = NonZeroU32::new(burst).ok_or("burst must be positive")?;
    Ok(RateLimiter::direct(
        Quota::per_second(qps).allow_burst(burst),
    ))
}

/// The actor's state.
pub struct State {
    name: String,
    adapter: Arc<dyn PaymentChannel>,
    limiter: Arc<Live<DefaultDirectRateLimiter>>,
    in_flight: Arc<Semaphore>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Actor for ChannelActor {
    type Msg = Msg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        _myself: ChannelRef,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        Ok(State {
            name: args.name,
            adapter: args.adapter,
            limiter: args.limiter,
            in_flight: Arc::new(Semaphore::new(args.settings.max_in_flight)),
            queued: args.queued,
            metrics: args.metrics,
        })
    }

    async fn handle(
        &self,
        _myself: ChannelRef,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let Msg::Admit {
            deadline,
            priority,
            reply,
        } = msg;
        let deadline = match priority {
            Priority::Caller => deadline,
            Priority::Background => Instant::now(),
        };
        let slot = take_slot(state, deadline).await;
        state.queued.fetch_sub(1, Ordering::AcqRel);
        state
            .metrics
            .channel_queue_depth
            .with_label_values(&[&state.name])
            .set(state.queued.load(Ordering::Acquire) as i64);
        let slot = match slot {
            Ok(()) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let permit = state.in_flight.clone();
                let acquired = match priority {
                    Priority::Caller => tokio::time::timeout(remaining, permit.acquire_owned())
                        .await
                        .ok()
                        .and_then(Result::ok),
                    Priority::Background => permit.try_acquire_owned().ok(),
                };
                acquired.ok_or(1)
            }
            Err(retry_after_secs) => Err(retry_after_secs),
        };
        let answer = match slot {
            Ok(permit) => Ok(Slot {
                name: state.name.clone(),
                adapter: state.adapter.clone(),
                metrics: state.metrics.clone(),
                _permit: permit,
            }),
            Err(retry_after_secs) => {
                let op = match priority {
                    Priority::Caller => "caller",
                    Priority::Background => "background",
                };
                state
                    .metrics
                    .channel_requests
                    .with_label_values(&[&state.name, op, "busy"])
                    .inc();
                Err(ChannelError::Busy {
                    channel: state.name.clone(),
                    retry_after_secs,
                })
            }
        };
        let _ = reply.send(answer);
        Ok(())
    }
}

/// Waits for a rate slot until `deadline`; `Err(retry_after_secs)` when none comes in time.
async fn take_slot(state: &State, deadline: Instant) -> Result<(), u64> {
    loop {
        // Read on every try: a reload's new rate applies to the requests already waiting.
        match state.limiter.get().check() {
            Ok(()) => return Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                if Instant::now() + wait > deadline {
                    return Err(wait.as_secs().max(1));
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn run(
    adapter: &dyn PaymentChannel,
    request: ChannelRequest,
) -> Result<ChannelResponse, ChannelError> {
    match request {
        ChannelRequest::Open(req) => adapter
            .open_payment(&req)
            .await
            .map(ChannelResponse::Opened),
        ChannelRequest::Query(id) => adapter
            .query_payment(&id)
            .await
            .map(ChannelResponse::Status),
        ChannelRequest::Close(id) => adapter
            .close_payment(&id)
            .await
            .map(ChannelResponse::Closed),
        ChannelRequest::Refund(call) => adapter
            .refund(&call)
            .await
            .map(|o| ChannelResponse::Refund(Some(o))),
        ChannelRequest::QueryRefund(id) => {
            adapter.query_refund(&id).await.map(ChannelResponse::Refund)
        }
    }
}

impl ChannelHandle {
    /// The running actor.
    pub fn current(&self) -> ChannelRef {
        match self.actor.read() {
            Ok(a) => a.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Restarts the actor after a failure (called by the supervisor) and swaps it in. Requests
    /// that were queued in the failed actor were answered with an error when it dropped them.
    pub async fn restart(
        &self,
        metrics: Arc<Metrics>,
        settings: ChannelSettings,
        supervisor: ractor::ActorCell,
    ) -> Result<ChannelRef, ractor::SpawnErr> {
        self.queued.store(0, Ordering::Release);
        let args = Args {
            name: self.name.clone(),
            adapter: self.adapter.clone(),
            settings,
            queued: self.queued.clone(),
            limiter: self.limiter.clone(),
            metrics,
        };
        let (actor, _) = Actor::spawn_linked(None, ChannelActor, args, supervisor).await?;
        if let Ok(mut slot) = self.actor.write() {
            *slot = actor.clone();
        }
        Ok(actor)
    }
}

/// What callers hold: the actor plus the queue bound it enforces before enqueueing.
#[derive(Clone)]
pub struct ChannelHandle {
    /// Channel name.
    pub name: String,
    /// The actor; replaced in place when the supervisor restarts it.
    pub actor: Arc<std::sync::RwLock<ChannelRef>>,
    /// The adapter, for callback verification (pure, no I/O, needs no slot).
    pub adapter: Arc<dyn PaymentChannel>,
    queued: Arc<AtomicUsize>,
    limiter: Arc<Live<DefaultDirectRateLimiter>>,
    capacity: usize,
    queue_timeout: Duration,
}

impl ChannelHandle {
    /// Spawns the channel actor under `supervisor` and returns its handle.
    pub async fn spawn(
        name: String,
        adapter: Arc<dyn PaymentChannel>,
        settings: ChannelSettings,
        metrics: Arc<Metrics>,
        supervisor: ractor::ActorCell,
    ) -> Result<Self, ractor::SpawnErr> {
        for op in ["caller", "background"] {
            // Sheds are alerted on: the series exists before the first one.
            metrics
                .channel_requests
                .with_label_values(&[&name, op, "busy"]);
        }
        let queued = Arc::new(AtomicUsize::new(0));
        let rate = limiter(settings.qps, settings.burst)
            .map_err(|e| ractor::SpawnErr::StartupFailed(e.into()))?;
        let limiter = Arc::new(Live::new(rate));
        let args = Args {
            name: name.clone(),
            adapter: adapter.clone(),
            settings: settings.clone(),
            queued: queued.clone(),
            limiter: limiter.clone(),
            metrics,
        };
        let (actor, _) = Actor::spawn_linked(None, ChannelActor, args, supervisor).await?;
        Ok(Self {
            name,
            actor: Arc::new(std::sync::RwLock::new(actor)),
            adapter,
            queued,
            limiter,
            capacity: settings.queue_capacity,
            queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
        })
    }

    /// Replaces the channel's rate limit (a reload): requests waiting for a slot and those
    /// after them get the new rate; the old limiter's state is dropped.
    pub fn set_rate(&self, qps: u32, burst: u32) -> Result<(), &'static str> {
        self.limiter.set(limiter(qps, burst)?);
        Ok(())
    }

    /// Sends a caller's request through the channel's queue and rate limit and waits for the
    /// answer.
    pub async fn request(&self, request: ChannelRequest) -> Result<ChannelResponse, ChannelError> {
        self.submit(request, Priority::Caller).await
    }

    /// Sends a request at the given priority and waits for the answer.
    pub async fn submit(
        &self,
        request: ChannelRequest,
        priority: Priority,
    ) -> Result<ChannelResponse, ChannelError> {
        self.admit(priority).await?.run(request).await
    }

    /// Waits for a slot to send one request. A background request is refused at once when half
    /// the queue is taken, and never waits for a rate slot.
    pub async fn admit(&self, priority: Priority) -> Result<Slot, ChannelError> {
        let busy = || ChannelError::Busy {
            channel: self.name.clone(),
            retry_after_secs: 1,
        };
        let bound = match priority {
            Priority::Caller => self.capacity,
            Priority::Background => self.capacity / 2,
        };
        if self.queued.fetch_add(1, Ordering::AcqRel) >= bound {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(busy());
        }
        let deadline = Instant::now() + self.queue_timeout;
        let timeout = self.queue_timeout + CALL_MARGIN;
        let actor = self.current();
        match actor
            .call(
                |reply| Msg::Admit {
                    deadline,
                    priority,
                    reply,
                },
                Some(timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(ractor::rpc::CallResult::Timeout) => {
                Err(ChannelError::Unavailable("channel actor timed out".into()))
            }
            Ok(ractor::rpc::CallResult::SenderError) => Err(ChannelError::Unavailable(
                "channel actor dropped the request".into(),
            )),
            Err(_) => {
                // Never enqueued: give the slot back.
                self.queued.fetch_sub(1, Ordering::AcqRel);
                Err(ChannelError::Unavailable(
                    "channel actor is not running".into(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::sim::SimChannel;

    /// Only something to link the channel actor to.
    struct Parent;

    impl Actor for Parent {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    fn busy(r: &Result<Slot, ChannelError>) -> bool {
        matches!(r, Err(ChannelError::Busy { .. }))
    }

    /// Polls, status queries and refunds never wait for a rate slot and are refused once half
    /// the queue is taken, while a payer's request still queues behind the others.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_requests_are_shed_first_and_never_wait() {
        let (parent, _) = Actor::spawn(None, Parent, ()).await.unwrap();
        let settings = ChannelSettings {
            qps: 2,
            burst: 1,
            queue_capacity: 4,
            queue_timeout_ms: 5_000,
            ..ChannelSettings::default()
        };
        // Nothing is sent: admission never calls the channel.
        let adapter = Arc::new(SimChannel::new("http://127.0.0.1:9".into(), &settings).unwrap());
        let ch = ChannelHandle::spawn(
            "sim".into(),
            adapter,
            settings,
            Arc::new(Metrics::new()),
            parent.get_cell(),
        )
        .await
        .unwrap();
        let first = ch.admit(Priority::Background).await;
        assert!(first.is_ok(), "a free slot is taken at once");
        assert!(
            busy(&ch.admit(Priority::Background).await),
            "with no free rate cell, a background request is refused instead of waiting"
        );
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let ch = ch.clone();
                tokio::spawn(async move { ch.admit(Priority::Caller).await.map(drop) })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ch.queued.load(Ordering::Acquire) < 2 {
            assert!(Instant::now() < deadline, "callers never queued");
            tokio::task::yield_now().await;
        }
        assert!(
            busy(&ch.admit(Priority::Background).await),
            "half the queue is taken: background requests are shed"
        );
        assert!(
            ch.admit(Priority::Caller).await.is_ok(),
            "a caller still queues and gets its slot"
        );
        for w in waiting {
            assert!(w.await.unwrap().is_ok(), "queued callers get their slots");
        }
        parent.stop(None);
    }
}
