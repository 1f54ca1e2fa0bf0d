//! Settings reload without a restart (SIGHUP, `POST /admin/reload`): the settings file and the
//! environment are read again and checked whole; then every part that can change live is built
//! beside the running one, and only when all of them built are they swapped in, one after the
//! other under one lock (a request sees each part whole, old or new). A file that does not
//! parse or check, or that names what the running process cannot take (a merchant on a channel
//! it did not start with), changes nothing and is logged with the reason.
//!
//! Live: merchants (added, removed, secrets, channels, rate limits, expiry and poll schedules,
//! business systems, notification URLs and events), channels' `qps` and `burst`, and
//! `admin.token`. Everything else (ports, storage, streams, actor and timer bounds, channels
//! added or removed, their URLs and secrets) applies at the next start; a reload names those
//! keys when they differ from the running ones.

use crate::actors::channel::ChannelHandle;
use crate::actors::notifier::NotifierMerchants;
use crate::actors::order::MerchantRules;
use crate::billers::{self, Biller};
use crate::config::Settings;
use crate::config::live::Live;
use crate::domain::MerchantId;
use crate::http::admin::{Reload, ReloadReport};
use crate::http::auth::Authenticator;
use crate::metrics::Metrics;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The live parts of a running paycore and the settings it runs with.
pub struct Reloader {
    /// The file read again (`None`: built-in defaults and the environment).
    pub file: Live<Option<String>>,
    /// As started: what a restart-only key is compared with.
    pub started: Settings,
    /// As last applied.
    pub applied: tokio::sync::Mutex<Settings>,
    /// Merchant keys and rate limits.
    pub auth: Arc<Authenticator>,
    /// Merchants' default lives of an unpaid order.
    pub expire_seconds: Arc<Live<HashMap<String, i64>>>,
    /// Merchants' schedules and business systems, as the order actors read them.
    pub rules: Arc<Live<MerchantRules>>,
    /// Merchants as the notifier knows them.
    pub notifier: Arc<NotifierMerchants>,
    /// The running channels.
    pub channels: HashMap<String, ChannelHandle>,
    /// The admin token.
    pub admin_token: Arc<Live<String>>,
    /// The in-process business-system simulator's URL, for business systems with url "".
    pub biller_sim_url: Option<String>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Business systems by merchant, each with its settings as text (what a reload compares).
pub type Billers = HashMap<MerchantId, (String, Arc<dyn Biller>)>;

/// The merchants' business systems of `settings`, reusing the running one of a merchant whose
/// target did not change (its bound of requests in flight stays shared).
pub fn billers_of(
    settings: &Settings,
    sim_url: Option<&str>,
    running: &Billers,
) -> Result<Billers, String> {
    let mut out = HashMap::new();
    for m in &settings.merchants {
        let Some(target) = &m.biller else { continue };
        let id = MerchantId::parse(&m.id).map_err(|e| e.to_string())?;
        let key = serde_json::to_string(target).map_err(|e| e.to_string())?;
        let biller = match running.get(&id) {
            Some((k, b)) if *k == key => b.clone(),
            _ => billers::build(target, sim_url).map_err(|e| format!("merchant {}: {e}", m.id))?,
        };
        out.insert(id, (key, biller));
    }
    Ok(out)
}

/// The order actors' view of `settings`' merchants (schedules from the running `orders`
/// defaults, which apply at a restart only).
pub fn rules_of(settings: &Settings, started: &Settings, billers: Billers) -> MerchantRules {
    MerchantRules {
        schedules: settings
            .merchants
            .iter()
            .filter_map(|m| {
                let id = MerchantId::parse(&m.id).ok()?;
                Some((id, Arc::new(started.orders.schedule(Some(m)))))
            })
            .collect(),
        billers,
    }
}

/// Merchants' own default lives of an unpaid order.
pub fn expire_seconds_of(settings: &Settings) -> HashMap<String, i64> {
    settings
        .merchants
        .iter()
        .filter_map(|m| Some((m.id.clone(), m.default_expire_seconds?)))
        .collect()
}

impl Reloader {
    async fn apply(&self) -> Result<ReloadReport, String> {
        let next = Settings::load(self.file.get().as_deref(), std::env::vars())
            .map_err(|e| e.to_string())?;
        let mut applied = self.applied.lock().await;
        for (i, m) in next.merchants.iter().enumerate() {
            if let Some(c) = m.channels.iter().find(|c| !self.channels.contains_key(*c)) {
                return Err(format!(
                    "merchants.{i}.channels: channel {c} is not running (channels are added at a restart)"
                ));
            }
        }
        // Build every part first; nothing is swapped unless all of them built.
        let keys = self.auth.prepare(&next.merchants)?;
        let billers = billers_of(
            &next,
            self.biller_sim_url.as_deref(),
            &self.rules.get().billers,
        )?;
        let rules = rules_of(&next, &self.started, billers);
        let notifier = self.notifier.prepare(&next.merchants);
        let mut rates = Vec::new();
        for (name, handle) in &self.channels {
            if let Some(c) = next.channels.get(name) {
                rates.push((handle, c.qps, c.burst));
            }
        }
        let report = ReloadReport {
            applied: changed_keys(&applied, &next, true),
            restart_required: changed_keys(&self.started, &next, false),
        };
        // Swap.
        self.auth.install(keys);
        self.expire_seconds.set(expire_seconds_of(&next));
        self.rules.set(rules);
        self.notifier.install(notifier);
        for (handle, qps, burst) in rates {
            handle.set_rate(qps, burst)?;
        }
        self.admin_token.set(next.admin.token.expose().to_string());
        *applied = next;
        Ok(report)
    }
}

#[async_trait::async_trait]
impl Reload for Reloader {
    async fn reload(&self) -> Result<ReloadReport, String> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
        self.metrics.ops.config_last_reload_at.set(now);
        match self.apply().await {
            Ok(report) => {
                self.metrics
                    .ops
                    .config_reloads
                    .with_label_values(&["applied"])
                    .inc();
                self.metrics.ops.config_last_reload_success.set(1);
                tracing::info!(
                    applied = ?report.applied,
                    restart_required = ?report.restart_required,
                    "settings reloaded"
                );
                if !report.restart_required.is_empty() {
                    tracing::warn!(keys = ?report.restart_required, "these settings differ from the running ones and apply only at a restart");
                }
                Ok(report)
            }
            Err(why) => {
                self.metrics
                    .ops
                    .config_reloads
                    .with_label_values(&["refused"])
                    .inc();
                self.metrics.ops.config_last_reload_success.set(0);
                tracing::error!(reason = %why, "settings reload refused; the running settings stay");
                Err(why)
            }
        }
    }

    fn admin_token(&self) -> String {
        self.admin_token.get().as_ref().clone()
    }
}

/// Whether a dotted key is one a reload applies.
fn is_live(key: &str) -> bool {
    let parts: Vec<&str> = key.split('.').collect();
    matches!(
        parts.as_slice(),
        ["merchants", ..] | ["admin", "token"] | ["channels", _, "qps" | "burst"]
    )
}

/// The dotted keys whose values differ between `a` and `b`: the live ones (`live`) or the
/// others. Values are compared, never reported (secrets are among them).
fn changed_keys(a: &Settings, b: &Settings, live: bool) -> Vec<String> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten("", &serde_json::to_value(a).unwrap_or_default(), &mut fa);
    flatten("", &serde_json::to_value(b).unwrap_or_default(), &mut fb);
    let mut keys: Vec<String> = fa
        .keys()
        .chain(fb.keys())
        .filter(|k| fa.get(*k) != fb.get(*k) && is_live(k) == live)
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, serde_json::Value>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&key(k), v, out);
            }
        }
        // A merchant is named by its position, as the settings' errors name it.
        serde_json::Value::Array(items)
            if items.iter().all(|i| i.is_object()) && !items.is_empty() =>
        {
            for (i, v) in items.iter().enumerate() {
                flatten(&key(&i.to_string()), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_into_live_and_restart_only() {
        let a = Settings::default();
        let mut b = a.clone();
        b.server.port = 9999;
        b.storage.sqlite.path = "/elsewhere.db".into();
        b.merchants[0].rate_limit_per_sec = 7;
        b.merchants[0].secret = crate::config::Secret::new("another-secret-of-16+");
        b.channels.get_mut("sim").unwrap().qps = 3;
        b.channels.get_mut("sim").unwrap().base_url = "http://x".into();
        assert_eq!(
            changed_keys(&a, &b, true),
            [
                "channels.sim.qps",
                "merchants.0.rate_limit_per_sec",
                "merchants.0.secret"
            ]
        );
        assert_eq!(
            changed_keys(&a, &b, false),
            [
                "channels.sim.base_url",
                "server.port",
                "storage.sqlite.path"
            ]
        );
        assert!(changed_keys(&a, &a.clone(), false).is_empty());
    }
}
