//! The registry routes every order command to that order's actor, spawning it on demand and
//! passivating it when idle or when the live-actor cap is reached (least recently used first).
//! It supervises the order actors: a failed one is replaced by a fresh actor that reloads the
//! order from storage on its next message; the failed call's caller sees its reply port dropped.

use super::order::{self, OrderActor, OrderDeps, OrderRef};
use crate::config::ActorSettings;
use crate::domain::OrderId;
use crate::metrics::Metrics;
use lru::LruCache;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
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
}

/// The registry's state.
pub struct State {
    live: LruCache<OrderId, Entry>,
    by_actor: HashMap<ActorId, OrderId>,
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
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let Some(order_id) = state.by_actor.remove(&cell.get_id()) else {
                    return Ok(());
                };
                tracing::error!(order_id = %order_id, error = %err, "order actor failed; restarting it");
                self.metrics
                    .actor_events
                    .with_label_values(&["failed"])
                    .inc();
                if state
                    .live
                    .peek(&order_id)
                    .is_some_and(|e| e.actor.get_id() == cell.get_id())
                {
                    state.live.pop(&order_id);
                    // Restart now: the new actor reloads the order from storage on its next message.
                    if let Err(e) = self.spawn(&myself, state, order_id.clone()).await {
                        tracing::error!(order_id = %order_id, error = %e, "order actor restart failed");
                    }
                }
                self.metrics.actors_live.set(state.live.len() as i64);
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                if let Some(order_id) = state.by_actor.remove(&cell.get_id())
                    && state
                        .live
                        .peek(&order_id)
                        .is_some_and(|e| e.actor.get_id() == cell.get_id())
                {
                    state.live.pop(&order_id);
                }
                self.metrics.actors_live.set(state.live.len() as i64);
            }
            _ => {}
        }
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
        while state.live.len() >= self.settings.max_live_orders {
            let Some((_, e)) = state.live.pop_lru() else {
                break;
            };
            passivate(&self.metrics, &e.actor);
        }
        let handler = OrderActor {
            deps: self.deps.clone(),
        };
        let args = order::Args {
            order_id: order_id.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, handler, args, myself.get_cell()).await?;
        state.by_actor.insert(actor.get_id(), order_id.clone());
        state.live.put(
            order_id,
            Entry {
                actor: actor.clone(),
                last_used: Instant::now(),
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
        let mut msg = msg;
        // Two tries: the cached actor may have stopped between its last message and this one.
        for _ in 0..2 {
            let actor = match state.live.get_mut(&order_id) {
                Some(e) => {
                    e.last_used = Instant::now();
                    e.actor.clone()
                }
                None => match self.spawn(myself, state, order_id.clone()).await {
                    Ok(a) => a,
                    Err(e) => {
                        // Dropping `msg` drops its reply port: the caller gets an error at once.
                        tracing::error!(order_id = %order_id, error = %e, "cannot spawn order actor");
                        return;
                    }
                },
            };
            match actor.send_message(msg) {
                Ok(()) => return,
                Err(ractor::MessagingErr::SendErr(back)) => {
                    state.live.pop(&order_id);
                    msg = back;
                }
                Err(_) => return,
            }
        }
    }

    fn sweep(&self, state: &mut State) {
        let idle = Duration::from_millis(self.settings.idle_passivate_ms);
        let now = Instant::now();
        while let Some((_, e)) = state.live.peek_lru() {
            if now.duration_since(e.last_used) < idle {
                break;
            }
            if let Some((_, e)) = state.live.pop_lru() {
                passivate(&self.metrics, &e.actor);
            }
        }
        self.metrics.actors_live.set(state.live.len() as i64);
    }
}

/// Stops an order actor after the messages already in its mailbox. A message sent later goes to
/// a fresh actor; storage's version check keeps the two from overwriting each other.
fn passivate(metrics: &Metrics, actor: &OrderRef) {
    if actor.drain().is_err() {
        actor.stop(None);
    }
    metrics
        .actor_events
        .with_label_values(&["passivated"])
        .inc();
}
