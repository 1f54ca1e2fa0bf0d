//! Merchant authentication: the four `X-Paycore-*` headers, an HMAC-SHA256 over method, path and
//! query, timestamp, nonce and body; a replay window; nonces remembered for twice the window;
//! and each merchant's request rate limit. A nonce is remembered only after the signature checks
//! out and the merchant is within its rate, in that merchant's own guard, so nobody can burn
//! another merchant's nonces or its room for them (see `nonces`).

use super::error::ApiError;
use super::nonces::{NonceError, NonceGuard};
use crate::config::live::Live;
use crate::config::{AuthSettings, MerchantSettings};
use crate::domain::MerchantId;
use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use time::OffsetDateTime;

pub use crate::domain::signing::{
    MERCHANT_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, canonical, sign,
};
/// Allowed nonce length.
pub const NONCE_LEN: std::ops::RangeInclusive<usize> = 8..=64;

struct Merchant {
    id: MerchantId,
    secret: Vec<u8>,
    channels: Vec<String>,
    fulfills: bool,
    /// Its rate and burst, and the limiter (kept by a reload that leaves them as they are).
    rate: (NonZeroU32, NonZeroU32),
    limiter: Arc<DefaultDirectRateLimiter>,
    /// This merchant's own nonces: one merchant filling its guard refuses only itself. A
    /// reload keeps them, or a request seen before it could be replayed after it.
    nonces: Arc<NonceGuard>,
}

/// The merchants' keys and limits, built by `Authenticator::prepare` for `install`.
pub struct MerchantKeys(HashMap<String, Arc<Merchant>>);

/// An authenticated merchant.
#[derive(Debug, Clone)]
pub struct AuthedMerchant {
    /// Its id.
    pub id: MerchantId,
    /// Channels it may use.
    pub channels: Vec<String>,
    /// Its paid orders are fulfilled at its business system.
    pub fulfills: bool,
}

/// Verifies merchant requests.
pub struct Authenticator {
    merchants: Live<HashMap<String, Arc<Merchant>>>,
    window_secs: u64,
    nonce_capacity: u64,
    /// Key an unknown merchant's request is checked against, so that it costs the same and
    /// answers the same as a bad signature: a caller cannot tell which merchant ids exist.
    decoy_secret: [u8; 32],
}

/// The one answer for a request whose merchant and signature do not match.
const NOT_VERIFIED: &str = "signature does not verify for this merchant";

/// Most nonces a merchant can have held at once while within its rate limit: a nonce is kept
/// while its timestamp is in the window, and a timestamp may be `window` ahead of the clock, so
/// for up to two windows (plus a bucket) after it is first seen.
fn nonces_within_rate(rate_per_sec: u32, burst: u32, window_secs: u64) -> u64 {
    let held_secs = window_secs
        .saturating_mul(2)
        .saturating_add(super::nonces::BUCKET_SECS as u64);
    u64::from(rate_per_sec)
        .saturating_mul(held_secs)
        .saturating_add(u64::from(burst))
}

impl Authenticator {
    /// Builds the authenticator from the configured merchants.
    pub fn new(merchants: &[MerchantSettings], settings: &AuthSettings) -> Result<Self, String> {
        let window_secs = settings.replay_window_secs;
        i64::try_from(window_secs).map_err(|_| "replay_window_secs is too large")?;
        let auth = Self {
            merchants: Live::new(HashMap::new()),
            window_secs,
            nonce_capacity: settings.nonce_capacity_per_merchant,
            decoy_secret: rand::random(),
        };
        let keys = auth.prepare(merchants)?;
        auth.install(keys);
        Ok(auth)
    }

    /// Builds the keys and limits of `merchants` without changing anything. A merchant that
    /// is configured now keeps its nonces, and its limiter when its rate and burst stay.
    pub fn prepare(&self, merchants: &[MerchantSettings]) -> Result<MerchantKeys, String> {
        let current = self.merchants.get();
        let window = i64::try_from(self.window_secs).map_err(|_| "replay window too large")?;
        let mut map = HashMap::new();
        for m in merchants {
            let id = MerchantId::parse(&m.id).map_err(|e| format!("merchant {}: {e}", m.id))?;
            let rate = NonZeroU32::new(m.rate_limit_per_sec)
                .ok_or("rate_limit_per_sec must be positive")?;
            let burst =
                NonZeroU32::new(m.rate_limit_burst).ok_or("rate_limit_burst must be positive")?;
            let before = current.get(&m.id);
            let nonces = match before {
                Some(b) => b.nonces.clone(),
                None => {
                    // Within its rate limit a merchant never needs more room than this (a
                    // reload that raises the rate keeps the guard it has: see ARCHITECTURE.md).
                    let capacity = nonces_within_rate(rate.get(), burst.get(), self.window_secs)
                        .min(self.nonce_capacity);
                    let capacity = usize::try_from(capacity)
                        .map_err(|_| "nonce_capacity_per_merchant is too large")?;
                    Arc::new(NonceGuard::new(window, capacity))
                }
            };
            let limiter = match before {
                Some(b) if b.rate == (rate, burst) => b.limiter.clone(),
                _ => Arc::new(RateLimiter::direct(
                    Quota::per_second(rate).allow_burst(burst),
                )),
            };
            map.insert(
                m.id.clone(),
                Arc::new(Merchant {
                    id,
                    secret: m.secret.expose().as_bytes().to_vec(),
                    channels: m.channels.clone(),
                    fulfills: m.biller.is_some(),
                    rate: (rate, burst),
                    limiter,
                    nonces,
                }),
            );
        }
        Ok(MerchantKeys(map))
    }

    /// Makes `keys` the ones requests are checked against, from the next request on.
    pub fn install(&self, keys: MerchantKeys) {
        self.merchants.set(keys.0);
    }

    /// Whether `id` is a configured merchant (for bounded metric labels).
    pub fn knows(&self, id: &str) -> bool {
        self.merchants.get().contains_key(id)
    }

    /// Checks a request's freshness, signature, the merchant's rate limit and its nonce, in
    /// that order: what does not depend on the merchant comes first, so every answer before
    /// the signature is the same for a known and an unknown merchant id; the rate limit comes
    /// before a nonce is remembered, so a merchant over its rate cannot fill its nonce guard.
    pub fn verify(&self, req: &HttpRequest, body: &[u8]) -> Result<AuthedMerchant, ApiError> {
        let header = |name: &str| -> Result<&str, ApiError> {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ApiError::unauthorized(format!("missing header {name}")))
        };
        let merchant_id = header(MERCHANT_HEADER)?;
        let timestamp = header(TIMESTAMP_HEADER)?;
        let nonce = header(NONCE_HEADER)?;
        let signature = header(SIGNATURE_HEADER)?;
        let ts: i64 = timestamp
            .parse()
            .map_err(|_| ApiError::unauthorized("timestamp must be unix seconds"))?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        // abs_diff cannot wrap: `(now - ts).abs()` did for a timestamp near i64::MIN in release
        // builds, and let the same signed request through again and again.
        if now.abs_diff(ts) > self.window_secs {
            return Err(ApiError::unauthorized(
                "timestamp outside the replay window",
            ));
        }
        if !NONCE_LEN.contains(&nonce.len()) {
            return Err(ApiError::unauthorized("nonce must be 8 to 64 characters"));
        }
        let merchants = self.merchants.get();
        let merchant = merchants.get(merchant_id);
        let secret = merchant.map_or(&self.decoy_secret[..], |m| &m.secret[..]);
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let message = canonical(req.method().as_str(), path, timestamp, nonce, body);
        let verified = crate::domain::signing::verify(secret, &message, signature);
        let merchant = match merchant {
            Some(m) if verified => m,
            _ => return Err(ApiError::unauthorized(NOT_VERIFIED)),
        };
        rate_check(merchant)?;
        match merchant.nonces.check_and_record(nonce, ts, now) {
            Ok(()) => {}
            Err(NonceError::Replayed) => return Err(ApiError::unauthorized("nonce already used")),
            Err(NonceError::Full) => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many requests inside the replay window; retry shortly",
                )
                .retry_after(1));
            }
        }
        Ok(merchant.authed())
    }

    /// A merchant named by a trusted transport (a Kafka command: the broker's ACLs decide who
    /// may write the topic, so there is no signature to check): it must be configured. An
    /// unknown one answers 401 `unknown_merchant`.
    pub fn trusted(&self, merchant_id: &str) -> Result<AuthedMerchant, ApiError> {
        self.merchants
            .get()
            .get(merchant_id)
            .map(|m| m.authed())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unknown_merchant",
                    "no such merchant is configured",
                )
            })
    }

    /// Counts one request of a trusted merchant against its rate limit (shared with its HTTP
    /// requests): 429 `rate_limited` beyond it.
    pub fn admit(&self, merchant: &AuthedMerchant) -> Result<(), ApiError> {
        match self.merchants.get().get(merchant.id.as_str()) {
            Some(m) => rate_check(m),
            None => Err(ApiError::unauthorized("unknown merchant")),
        }
    }
}

impl Merchant {
    fn authed(&self) -> AuthedMerchant {
        AuthedMerchant {
            id: self.id.clone(),
            channels: self.channels.clone(),
            fulfills: self.fulfills,
        }
    }
}

/// 429 `rate_limited` (with `Retry-After`) when the merchant is over its rate.
fn rate_check(merchant: &Merchant) -> Result<(), ApiError> {
    if let Err(not_until) = merchant.limiter.check() {
        use governor::clock::{Clock, DefaultClock};
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "merchant request rate exceeded",
        )
        .retry_after(wait.as_secs() + 1));
    }
    Ok(())
}
