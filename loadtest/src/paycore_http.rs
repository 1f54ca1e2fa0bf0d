//! paycore as a target: every call is signed as API.md says (HMAC-SHA256 over method, path and
//! query, timestamp, nonce and body, with `paycore::http::auth::{canonical, sign}`), sent over a
//! pooled keep-alive HTTP/1.1 client, and its answer reduced to what the scenario needs.

use crate::target::{CallError, CallResult, Target};
use paycore::http::auth::{
    MERCHANT_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, canonical, sign,
};
use reqwest::Method;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest one request may take before it counts as a transport timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A signing client for one merchant.
pub struct Paycore {
    name: &'static str,
    http: reqwest::Client,
    base: String,
    merchant: String,
    secret: Vec<u8>,
    nonce_prefix: String,
    nonce_seq: AtomicU64,
}

impl Paycore {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) signing as `merchant`; `name` is what
    /// reports call the target (`paycore`, or `redis-lock-http` for the baseline's server).
    pub fn new(
        name: &'static str,
        base: &str,
        merchant: &str,
        secret: &str,
        run_id: &str,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            name,
            http,
            base: base.trim_end_matches('/').to_string(),
            merchant: merchant.to_string(),
            secret: secret.as_bytes().to_vec(),
            // Nonces are unique per run (run id) and per request (sequence): 8..64 characters.
            nonce_prefix: format!("lt{run_id}"),
            nonce_seq: AtomicU64::new(0),
        })
    }

    /// An unsigned GET of an operational endpoint; true on a 2xx answer.
    pub async fn probe(&self, path: &str) -> Result<(), String> {
        match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{path} answered {}", r.status())),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    /// Sends one signed request; answers the parsed body of a 2xx answer.
    async fn call(&self, method: Method, path: &str, body: Vec<u8>) -> CallResult<Value> {
        let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
        let nonce = format!(
            "{}-{:x}",
            self.nonce_prefix,
            self.nonce_seq.fetch_add(1, Ordering::Relaxed)
        );
        let sig = sign(
            &self.secret,
            &canonical(method.as_str(), path, &ts, &nonce, &body),
        );
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(MERCHANT_HEADER, &self.merchant)
            .header(TIMESTAMP_HEADER, ts)
            .header(NONCE_HEADER, nonce)
            .header(SIGNATURE_HEADER, sig);
        if !body.is_empty() {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(transport)?;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let code = value["error"]["code"]
                .as_str()
                .unwrap_or("no_error_code")
                .to_string();
            Err(CallError::Answer { status, code })
        }
    }
}

fn transport(e: reqwest::Error) -> CallError {
    let what = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    CallError::Transport(what.into())
}

fn field(v: &Value, name: &str) -> CallResult<String> {
    v[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CallError::Transport(format!("answer without {name}")))
}

impl Target for Paycore {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn issue_token(&self) -> CallResult<String> {
        let v = self
            .call(Method::POST, "/v1/submit-tokens", Vec::new())
            .await?;
        field(&v, "token")
    }

    async fn create(
        &self,
        token: &str,
        merchant_order_no: &str,
        amount: i64,
    ) -> CallResult<String> {
        let body = serde_json::to_vec(&serde_json::json!({
            "submit_token": token,
            "merchant_order_no": merchant_order_no,
            "amount": amount,
            "business_type": "BillBuy",
            "channel": "sim",
        }))
        .map_err(|e| CallError::Transport(e.to_string()))?;
        let v = self.call(Method::POST, "/v1/orders", body).await?;
        field(&v, "order_id")
    }

    async fn pay(&self, order_id: &str) -> CallResult<String> {
        let path = format!("/v1/orders/{order_id}/pay");
        let v = self
            .call(Method::POST, &path, br#"{"pay_method":"native"}"#.to_vec())
            .await?;
        field(&v, "pay_serial_no")
    }

    async fn read(&self, order_id: &str) -> CallResult<String> {
        let path = format!("/v1/orders/{order_id}");
        let v = self.call(Method::GET, &path, Vec::new()).await?;
        field(&v, "status")
    }
}
