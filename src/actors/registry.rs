//! The registry routes every order command to that order's actor, spawning it on demand and
//! passivating it when idle or when the live-actor cap is reached (least recently used first).
//! It supervises the order actors: a failed one is replaced by a fresh actor that reloads the
//! order from storage on its next message; the failed call's caller sees its reply port dropped.
//!
//! One actor per order, always: an actor is passivated only when it is idle (no message waiting
//! or being handled, counted by `busy`), and while a passivated actor is stopping, messages for
//! its order wait here; its replacement is spawned only once the old one has stopped.

use super::order::{self, OrderActor, OrderDeps, OrderRef};
use crate::config::ActorSettings;
use crate::domain::OrderId;
use crate::metrics::Metrics;
use lru::LruCache;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Messages of the registry.
pub enum Msg {
    /// Deliver `msg` to the actor of `order_id`.
    Dispatch {
        /// Target order.
        order_id: OrderId,
        /// Message for its actor.
        msg: order::Msg,
    },
    /// Passivate actors idle longer than the configured time.
    Sweep,
    /// How many order actors are live.
    LiveCount(RpcReplyPort<usize>),
}

/// Reference to the registry.
pub type RegistryRef = ActorRef<Msg>;

/// The registry actor.
pub struct Registry {
    /// What order actors need.
    pub deps: Arc<OrderDeps>,
    /// Limits.
    pub settings: ActorSettings,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

struct Entry {
    actor: OrderRef,
    last_used: Instant,
    /// Messages sent to the actor and not yet handled (it counts down).
    busy: Arc<AtomicUsize>,
}

impl Entry {
    fn idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }
}

/// An actor told to stop, and the messages for its order that wait for it to be gone.
struct Stopping {
    actor: ActorId,
    waiting: Vec<order::Msg>,
}

/// The registry's state.
pub struct State {
    live: LruCache<OrderId, Entry>,
    by_actor: HashMap<ActorId, OrderId>,
    stopping: HashMap<OrderId, Stopping>,
}

impl Actor for Registry {
    type Msg = Msg;
    type State = State;
    type Arguments = ();

    async fn pre_start(&self, myself: RegistryRef, _: ()) -> Result<State, ActorProcessingErr> {
        let every = Duration::from_millis(self.settings.sweep_interval_ms.max(1));
        myself.send_interval(every, || Msg::Sweep);
        Ok(State {
            live: LruCache::unbounded(),
            by_actor: HashMap::new(),
            stopping: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: RegistryRef,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Dispatch { order_id, msg } => self.dispatch(&myself, state, order_id, msg).await,
            Msg::Sweep => self.sweep(state),
            Msg::LiveCount(reply) => {
                let _ = reply.send(state.live.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: RegistryRef,
        evt: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failed) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let Some(order_id) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        if let Some(why) = &failed {
            tracing::error!(order_id = %order_id, error = %why, "order actor failed; restarting it");
            self.metrics
                .actor_events
                .with_label_values(&["failed"])
                .inc();
        }
        if state
            .live
            .peek(&order_id)
            .is_some_and(|e| e.actor.get_id() == cell.get_id())
        {
            state.live.pop(&order_id);
            if failed.is_some() {
                // Restart now: the new actor reloads the order from storage on its next message.
                if let Err(e) = self.spawn(&myself, state, order_id.clone()).await {
                    tracing::error!(order_id = %order_id, error = %e, "order actor restart failed");
                }
            }
        }
        // A passivated actor is gone: what waited for it goes to its successor.
        if state
            .stopping
            .get(&order_id)
            .is_some_and(|s| s.actor == cell.get_id())
            && let Some(stopped) = state.stopping.remove(&order_id)
        {
            for msg in stopped.waiting {
                self.dispatch(&myself, state, order_id.clone(), msg).await;
            }
        }
        self.metrics.actors_live.set(state.live.len() as i64);
        Ok(())
    }
}

impl Registry {
    async fn spawn(
        &self,
        myself: &RegistryRef,
        state: &mut State,
        order_id: OrderId,
    ) -> Result<OrderRef, ActorProcessingErr> {
        // Over the cap, passivate the least recently used idle actors. Busy ones are kept (the
        // cap is exceeded for as long as more orders than it are busy at once: intake bounds
        // that), and each entry is looked at once.
        let mut looked = 0;
        let total = state.live.len();
        while state.live.len() >= self.settings.max_live_orders && looked < total {
            looked += 1;
            let Some((id, e)) = state.live.pop_lru() else {
                break;
            };
            if e.idle() {
                self.passivate(state, id, e);
            } else {
                state.live.put(id, e);
            }
        }
        let handler = OrderActor {
            deps: self.deps.clone(),
        };
        let busy = Arc::new(AtomicUsize::new(0));
        let args = order::Args {
            order_id: order_id.clone(),
            busy: busy.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, handler, args, myself.get_cell()).await?;
        state.by_actor.insert(actor.get_id(), order_id.clone());
        state.live.put(
            order_id,
            Entry {
                actor: actor.clone(),
                last_used: Instant::now(),
                busy,
            },
        );
        self.metrics
            .actor_events
            .with_label_values(&["spawned"])
            .inc();
        self.metrics.actors_live.set(state.live.len() as i64);
        Ok(actor)
    }

    async fn dispatch(
        &self,
        myself: &RegistryRef,
        state: &mut State,
        order_id: OrderId,
        msg: order::Msg,
    ) {
        if let Some(stopping) = state.stopping.get_mut(&order_id) {
            // Its actor is stopping: the message waits for the successor (bounded by intake,
            // like every mailbox).
            stopping.waiting.push(msg);
            return;
        }
        let mut msg = msg;
        // Two tries: the cached actor may have died between its last message and this one.
        for _ in 0..2 {
            let (actor, busy) = match state.live.get_mut(&order_id) {
                Some(e) => {
                    e.last_used = Instant::now();
                    (e.actor.clone(), e.busy.clone())
                }
                None => match self.spawn(myself, state, order_id.clone()).await {
                    Ok(a) => match state.live.peek(&order_id) {
                        Some(e) => (a, e.busy.clone()),
                        None => return,
                    },
                    Err(e) => {
                        // Dropping `msg` drops its reply port: the caller gets an error at once.
                        tracing::error!(order_id = %order_id, error = %e, "cannot spawn order actor");
                        return;
                    }
                },
            };
            busy.fetch_add(1, Ordering::AcqRel);
            match actor.send_message(msg) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(back)) => {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    state.live.pop(&order_id);
                    msg = back;
                }
                Err(_) => {
                    busy.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
            }
        }
    }

    fn sweep(&self, state: &mut State) {
        let idle = Duration::from_millis(self.settings.idle_passivate_ms);
        let now = Instant::now();
        let total = state.live.len();
        for _ in 0..total {
            let Some((_, e)) = state.live.peek_lru() else {
                break;
            };
            if now.duration_since(e.last_used) < idle {
                break;
            }
            let Some((id, e)) = state.live.pop_lru() else {
                break;
            };
            if e.idle() {
                self.passivate(state, id, e);
            } else {
                // Waiting on something (a channel, storage): keep it, look again next sweep.
                state.live.put(id, e);
            }
        }
        self.metrics.actors_live.set(state.live.len() as i64);
    }

    /// Stops an idle order actor. Until it has stopped, messages for its order wait; then a
    /// successor takes them.
    fn passivate(&self, state: &mut State, order_id: OrderId, e: Entry) {
        e.actor.stop(None);
        state.stopping.insert(
            order_id,
            Stopping {
                actor: e.actor.get_id(),
                waiting: Vec::new(),
            },
        );
        self.metrics
            .actor_events
            .with_label_values(&["passivated"])
            .inc();
    }
}
