//! paycore as a target: every call is signed as API.md says (HMAC-SHA256 over method, path and
//! query, timestamp, nonce and body, with `paycore::http::auth::{canonical, sign}`), sent over a
//! pooled keep-alive HTTP/1.1 client, and its answer reduced to what the scenario needs.

use crate::h1::{Failure, Pool};
use crate::target::{CallError, CallResult, Payment, Target};
use hyper::Method;
use paycore::http::auth::{
    MERCHANT_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, canonical, sign,
};
use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest one request may take before it counts as a transport timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Most idle keep-alive connections kept (the generator's in-flight bound is 4,096).
const MAX_IDLE_CONNECTIONS: usize = 4096;

/// A signing client for one merchant.
pub struct Paycore {
    name: &'static str,
    pool: Pool,
    merchant: String,
    secret: Vec<u8>,
    nonce_prefix: String,
    nonce_seq: AtomicU64,
    channel: Option<ChannelSigner>,
}

/// Signs result callbacks as the channel simulator does (`paycore_channel_sim::protocol`).
struct ChannelSigner {
    name: String,
    secret: Vec<u8>,
}

/// The fields of an answer the scenarios use; the rest is skipped unread.
#[derive(Debug, Default, Deserialize)]
struct Answer {
    token: Option<String>,
    order_id: Option<String>,
    pay_serial_no: Option<String>,
    status: Option<String>,
    channel_payload: Option<ChannelPayload>,
    error: Option<ErrorBody>,
}

#[derive(Debug, Deserialize)]
struct ChannelPayload {
    trade_no: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    code: Option<String>,
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
        Ok(Self {
            name,
            pool: Pool::new(
                base.trim_end_matches('/'),
                MAX_IDLE_CONNECTIONS,
                REQUEST_TIMEOUT,
            )?,
            merchant: merchant.to_string(),
            secret: secret.as_bytes().to_vec(),
            // Nonces are unique per run (run id) and per request (sequence): 8..64 characters.
            nonce_prefix: format!("lt{run_id}"),
            nonce_seq: AtomicU64::new(0),
            channel: None,
        })
    }

    /// Delivers result callbacks as channel `name` (a simulator channel) signing with `secret`.
    pub fn with_channel(mut self, name: &str, secret: &str) -> Self {
        self.channel = Some(ChannelSigner {
            name: name.to_string(),
            secret: secret.as_bytes().to_vec(),
        });
        self
    }

    /// An unsigned GET of an operational endpoint; true on a 2xx answer.
    pub async fn probe(&self, path: &str) -> Result<(), String> {
        match self.pool.send(Method::GET, path, &[], Vec::new()).await {
            Ok((status, _)) if status.is_success() => Ok(()),
            Ok((status, _)) => Err(format!("{path} answered {status}")),
            Err(e) => Err(format!("{path}: {}", e.label())),
        }
    }

    /// Sends one signed request; answers the parsed body of a 2xx answer.
    async fn call(&self, method: Method, path: &str, body: Vec<u8>) -> CallResult<Answer> {
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
        let mut headers = vec![
            (MERCHANT_HEADER, self.merchant.as_str()),
            (TIMESTAMP_HEADER, ts.as_str()),
            (NONCE_HEADER, nonce.as_str()),
            (SIGNATURE_HEADER, sig.as_str()),
        ];
        if !body.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        let (status, bytes) = self
            .pool
            .send(method, path, &headers, body)
            .await
            .map_err(transport)?;
        let answer: Answer = serde_json::from_slice(&bytes).unwrap_or_default();
        if status.is_success() {
            Ok(answer)
        } else {
            let code = answer
                .error
                .and_then(|e| e.code)
                .unwrap_or_else(|| "no_error_code".to_string());
            Err(CallError::Answer {
                status: status.as_u16(),
                code,
            })
        }
    }
}

fn transport(e: Failure) -> CallError {
    CallError::Transport(e.label().into())
}

fn field(v: Option<String>, name: &str) -> CallResult<String> {
    v.ok_or_else(|| CallError::Transport(format!("answer without {name}")))
}

impl Target for Paycore {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn issue_token(&self) -> CallResult<String> {
        let v = self
            .call(Method::POST, "/v1/submit-tokens", Vec::new())
            .await?;
        field(v.token, "token")
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
        field(v.order_id, "order_id")
    }

    async fn pay(&self, order_id: &str) -> CallResult<Payment> {
        let path = format!("/v1/orders/{order_id}/pay");
        let v = self
            .call(Method::POST, &path, br#"{"pay_method":"native"}"#.to_vec())
            .await?;
        Ok(Payment {
            serial: field(v.pay_serial_no, "pay_serial_no")?,
            trade_no: field(
                v.channel_payload.and_then(|p| p.trade_no),
                "channel_payload.trade_no",
            )?,
        })
    }

    async fn read(&self, order_id: &str) -> CallResult<String> {
        let path = format!("/v1/orders/{order_id}");
        let v = self.call(Method::GET, &path, Vec::new()).await?;
        field(v.status, "status")
    }

    async fn close(&self, order_id: &str) -> CallResult<String> {
        let path = format!("/v1/orders/{order_id}/close");
        let v = self.call(Method::POST, &path, b"{}".to_vec()).await?;
        field(v.status, "status")
    }

    async fn paid_callback(
        &self,
        order_id: &str,
        payment: &Payment,
        amount: i64,
    ) -> CallResult<()> {
        use paycore_channel_sim::protocol as p;
        let channel = self
            .channel
            .as_ref()
            .ok_or_else(|| CallError::Transport("no channel secret given".into()))?;
        let body = serde_json::to_vec(&p::CallbackBody {
            event_id: format!("evt_lt_{}", payment.trade_no),
            trade_no: payment.trade_no.clone(),
            out_trade_no: order_id.to_string(),
            amount,
            currency: "CNY".into(),
            status: p::PaymentStatus::Success,
            paid_at: None,
            failure_reason: None,
        })
        .map_err(|e| CallError::Transport(e.to_string()))?;
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let sig = p::sign(&channel.secret, ts, &body);
        let ts = ts.to_string();
        let headers = [
            (p::TIMESTAMP_HEADER, ts.as_str()),
            (p::SIGNATURE_HEADER, sig.as_str()),
            ("content-type", "application/json"),
        ];
        let path = format!("/v1/callbacks/{}", channel.name);
        let (status, bytes) = self
            .pool
            .send(Method::POST, &path, &headers, body)
            .await
            .map_err(transport)?;
        let ack: Option<p::CallbackAck> = serde_json::from_slice(&bytes).ok();
        match ack {
            Some(a) if status.is_success() && a.code == "SUCCESS" => Ok(()),
            _ => Err(CallError::Answer {
                status: status.as_u16(),
                code: "callback_not_acknowledged".into(),
            }),
        }
    }
}
