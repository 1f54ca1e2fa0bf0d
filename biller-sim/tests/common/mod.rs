//! Test harness: a biller on a fresh loopback port and a client that signs like paycore
//! does, with helpers for the write-off and reversal bodies and the unsigned audit.

use std::net::TcpListener;

use paycore_biller_sim::protocol::{
    self, AuditView, ReverseRequest, WRITE_OFFS_PATH, WriteOffRequest,
};
use paycore_biller_sim::{BillerHandle, BillerSettings};
use serde::Serialize;
use serde_json::Value;

/// Secret shared by the tests' billers and clients.
pub const SECRET: &str = "test-biller-secret";

/// Default settings with the tests' secret.
pub fn settings() -> BillerSettings {
    BillerSettings {
        secret: SECRET.to_owned(),
        ..BillerSettings::default()
    }
}

/// A biller under test and a client signed with its secret.
pub struct Biller {
    pub handle: BillerHandle,
    pub client: Client,
}

/// Starts a biller on a fresh loopback port.
pub fn start_biller(settings: BillerSettings) -> Biller {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handle = paycore_biller_sim::start(settings, listener).unwrap();
    let client = Client::new(handle.base_url(), SECRET);
    Biller { handle, client }
}

/// An HTTP client of the biller.
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub secret: String,
}

impl Client {
    pub fn new(base: String, secret: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base,
            secret: secret.to_owned(),
        }
    }

    /// Sends a request signed now; answers status and JSON body (Null if none).
    pub async fn send(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> (u16, Value) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.send_at(method, path, body, now).await
    }

    /// Sends a request signed with the given timestamp.
    pub async fn send_at(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
        timestamp: i64,
    ) -> (u16, Value) {
        let signature = protocol::sign(
            self.secret.as_bytes(),
            &format!("{method} {path}"),
            timestamp,
            &body,
        );
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(protocol::TIMESTAMP_HEADER, timestamp.to_string())
            .header(protocol::SIGNATURE_HEADER, signature)
            .body(body);
        into_parts(request.send().await.unwrap()).await
    }

    pub async fn post<T: Serialize>(&self, path: &str, body: &T) -> (u16, Value) {
        let body = serde_json::to_vec(body).unwrap();
        self.send(reqwest::Method::POST, path, body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Vec::new()).await
    }

    /// A signed write-off.
    pub async fn write_off(&self, request: &WriteOffRequest) -> (u16, Value) {
        self.post(WRITE_OFFS_PATH, request).await
    }

    /// A signed reversal of `order_id`'s write-off.
    pub async fn reverse(&self, order_id: &str, request: &ReverseRequest) -> (u16, Value) {
        self.post(&protocol::reversals_path(order_id), request)
            .await
    }

    /// The signed look-up of `order_id`'s write-off.
    pub async fn query(&self, order_id: &str) -> (u16, Value) {
        self.get(&protocol::write_off_path(order_id)).await
    }

    /// The unsigned audit of an order.
    pub async fn audit(&self, order_id: &str) -> AuditView {
        let url = format!("{}{WRITE_OFFS_PATH}?order_id={order_id}", self.base);
        let (status, body) = into_parts(self.http.get(url).send().await.unwrap()).await;
        assert_eq!(status, 200, "audit answered {body}");
        serde_json::from_value(body).unwrap()
    }
}

pub async fn into_parts(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}

/// A write-off of `amount` CNY for `order_id`.
pub fn write_off_req(order_id: &str, amount: i64) -> WriteOffRequest {
    WriteOffRequest {
        order_id: order_id.to_owned(),
        merchant_id: "demo".to_owned(),
        merchant_order_no: format!("mo-{order_id}"),
        amount,
        currency: "CNY".to_owned(),
        business_type: "GAS".to_owned(),
    }
}

/// A reversal without a reason.
pub fn reverse_req(reversal_id: &str, amount: i64) -> ReverseRequest {
    ReverseRequest {
        reversal_id: reversal_id.to_owned(),
        amount,
        reason: None,
    }
}

/// The error code of an error answer, for compact assertions.
pub fn code(body: &Value) -> Option<&str> {
    body["code"].as_str()
}
