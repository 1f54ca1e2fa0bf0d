//! The root of the actor tree. `spawn_tree` starts it and its children in data-flow order:
//! channel actors first (orders call them), then the order registry (which supervises the order
//! actors itself). Policy: one-for-one restart; a failed channel actor or registry is replaced
//! and swapped into the handle callers hold, so no caller keeps a dead reference.

use super::channel::ChannelHandle;
use super::order::OrderDeps;
use super::registry::{Registry, RegistryRef};
use crate::channels::PaymentChannel;
use crate::config::{ActorSettings, ChannelSettings};
use crate::metrics::Metrics;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What the supervisor can restart.
enum Child {
    Registry,
    Channel(String),
}

/// Messages of the root supervisor.
pub enum Msg {
    /// Start the order registry with these dependencies (once the channels exist).
    StartRegistry(Arc<OrderDeps>, RpcReplyPort<Result<RegistryRef, String>>),
    /// Stop in data-flow order: let every order actor finish its mailbox, then the registry,
    /// then the channel actors. Nothing is restarted from here on.
    Shutdown(std::time::Duration, RpcReplyPort<()>),
}

/// The root supervisor.
pub struct Supervisor {
    settings: ActorSettings,
    channel_settings: HashMap<String, ChannelSettings>,
    metrics: Arc<Metrics>,
    registry_slot: Arc<RwLock<Option<RegistryRef>>>,
}

/// The supervisor's state.
pub struct State {
    stopping: bool,
    deps: Option<Arc<OrderDeps>>,
    children: HashMap<ractor::ActorId, Child>,
}

impl Actor for Supervisor {
    type Msg = Msg;
    type State = State;
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<Msg>, _: ()) -> Result<State, ActorProcessingErr> {
        Ok(State {
            stopping: false,
            deps: None,
            children: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::StartRegistry(deps, reply) => {
                for handle in deps.channels.values() {
                    state.children.insert(
                        handle.current().get_id(),
                        Child::Channel(handle.name.clone()),
                    );
                }
                state.deps = Some(deps);
                let r = self
                    .start_registry(&myself, state)
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Msg::Shutdown(timeout, reply) => {
                state.stopping = true;
                if let Some(registry) = self.registry_slot.read().ok().and_then(|r| r.clone()) {
                    registry
                        .get_cell()
                        .drain_children_and_wait(Some(timeout))
                        .await;
                    let _ = registry.drain_and_wait(Some(timeout)).await;
                }
                if let Some(deps) = &state.deps {
                    for handle in deps.channels.values() {
                        let _ = handle.current().drain_and_wait(Some(timeout)).await;
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Msg>,
        evt: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        let Some(child) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        if state.stopping {
            return Ok(());
        }
        match child {
            Child::Registry => {
                tracing::error!(reason = %why, "order registry stopped; restarting it");
                self.start_registry(&myself, state).await?;
            }
            Child::Channel(name) => {
                tracing::error!(channel = %name, reason = %why, "channel actor stopped; restarting it");
                let deps = state.deps.clone().ok_or("no deps")?;
                let handle = deps.channels.get(&name).ok_or("unknown channel")?;
                let settings = self
                    .channel_settings
                    .get(&name)
                    .cloned()
                    .unwrap_or_default();
                let actor = handle
                    .restart(self.metrics.clone(), settings, myself.get_cell())
                    .await?;
                state.children.insert(actor.get_id(), Child::Channel(name));
            }
        }
        Ok(())
    }
}

impl Supervisor {
    async fn start_registry(
        &self,
        myself: &ActorRef<Msg>,
        state: &mut State,
    ) -> Result<RegistryRef, ActorProcessingErr> {
        let deps = state
            .deps
            .clone()
            .ok_or("registry started before its dependencies")?;
        let registry = Registry {
            deps,
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
        };
        let (r, _) = Actor::spawn_linked(None, registry, (), myself.get_cell()).await?;
        state.children.insert(r.get_id(), Child::Registry);
        if let Ok(mut slot) = self.registry_slot.write() {
            *slot = Some(r.clone());
        }
        Ok(r)
    }
}

/// The running actor tree.
pub struct Tree {
    /// The root.
    pub supervisor: ActorRef<Msg>,
    /// The registry, swapped on restart.
    pub registry: Arc<RwLock<Option<RegistryRef>>>,
    /// Channel handles by name.
    pub channels: HashMap<String, ChannelHandle>,
}

/// Spawns the whole tree. `make_deps` receives the channel handles and returns the order
/// actors' dependencies.
pub async fn spawn_tree(
    settings: ActorSettings,
    channels: Vec<(String, Arc<dyn PaymentChannel>, ChannelSettings)>,
    metrics: Arc<Metrics>,
    make_deps: impl FnOnce(HashMap<String, ChannelHandle>) -> OrderDeps,
) -> Result<Tree, String> {
    let registry_slot = Arc::new(RwLock::new(None));
    let supervisor = Supervisor {
        settings,
        channel_settings: channels
            .iter()
            .map(|(n, _, s)| (n.clone(), s.clone()))
            .collect(),
        metrics: metrics.clone(),
        registry_slot: registry_slot.clone(),
    };
    let (sup, _) = Actor::spawn(None, supervisor, ())
        .await
        .map_err(|e| e.to_string())?;
    let mut handles = HashMap::new();
    for (name, adapter, s) in channels {
        let h = ChannelHandle::spawn(name.clone(), adapter, s, metrics.clone(), sup.get_cell())
            .await
            .map_err(|e| e.to_string())?;
        handles.insert(name, h);
    }
    let deps = Arc::new(make_deps(handles.clone()));
    match sup.call(|r| Msg::StartRegistry(deps, r), None).await {
        Ok(ractor::rpc::CallResult::Success(Ok(_))) => {}
        Ok(ractor::rpc::CallResult::Success(Err(e))) => return Err(e),
        _ => return Err("supervisor did not start the registry".into()),
    }
    Ok(Tree {
        supervisor: sup,
        registry: registry_slot,
        channels: handles,
    })
}
