//! Test harness: a signed client for the simulator, a callback receiver that records what it
//! gets, and polling with a deadline (tests never sleep a fixed time to wait for an effect).

use std::future::Future;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use paycore_channel_sim::protocol::{self, AuditView, CallbackBody, CreatePaymentRequest};
use paycore_channel_sim::{SimHandle, SimSettings};
use serde::Serialize;
use serde_json::Value;

/// Longest wait for an expected effect.
const DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two checks of a condition.
const POLL: Duration = Duration::from_millis(10);
/// Secret shared by the tests' simulators and clients.
pub const SECRET: &str = "test-secret";

/// Polls `cond` until it holds, failing the test after `DEADLINE`.
pub async fn wait_until<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Settings with short delays and back-offs, for tests.
pub fn fast_settings() -> SimSettings {
    SimSettings {
        secret: SECRET.to_owned(),
        pay_delay_ms_min: 0,
        pay_delay_ms_max: 20,
        callback_retry_base_ms: 10,
        callback_timeout_ms: 2_000,
        ..SimSettings::default()
    }
}

/// A simulator under test and a client signed with its secret.
pub struct Sim {
    pub handle: SimHandle,
    pub client: Client,
}

/// Starts a simulator on a fresh loopback port.
pub fn start_sim(settings: SimSettings) -> Sim {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let handle = paycore_channel_sim::start(settings, listener).unwrap();
    let client = Client::new(handle.base_url(), SECRET);
    Sim { handle, client }
}

/// An HTTP client of the simulator that signs like paycore does.
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
        let signature = protocol::sign(self.secret.as_bytes(), timestamp, &body);
        let request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(protocol::TIMESTAMP_HEADER, timestamp.to_string())
            .header(protocol::SIGNATURE_HEADER, signature)
            .body(body);
        into_parts(request.send().await.unwrap()).await
    }

    pub async fn post<T: Serialize>(&self, path: &str, body: &T) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            serde_json::to_vec(body).unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, Vec::new()).await
    }

    /// The unsigned audit of a merchant order.
    pub async fn audit(&self, out_trade_no: &str) -> AuditView {
        let url = format!("{}/sim/v1/payments?out_trade_no={out_trade_no}", self.base);
        let (status, body) = into_parts(self.http.get(url).send().await.unwrap()).await;
        assert_eq!(status, 200, "audit answered {body}");
        serde_json::from_value(body).unwrap()
    }

    /// Status of the current payment, as a string ("NOTPAY", "SUCCESS", ...).
    pub async fn status_of(&self, out_trade_no: &str) -> String {
        let (status, body) = self.get(&format!("/sim/v1/payments/{out_trade_no}")).await;
        assert_eq!(status, 200, "query answered {body}");
        body["status"].as_str().unwrap().to_owned()
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

/// A create request for `out_trade_no` calling back to `notify_url`.
pub fn create_req(out_trade_no: &str, amount: i64, notify_url: &str) -> CreatePaymentRequest {
    CreatePaymentRequest {
        out_trade_no: out_trade_no.to_owned(),
        amount,
        currency: "CNY".to_owned(),
        pay_method: "NATIVE".to_owned(),
        auth_code: None,
        subject: Some("test".to_owned()),
        notify_url: notify_url.to_owned(),
    }
}

/// One callback as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub signature_valid: bool,
    pub body: CallbackBody,
    pub acknowledged: bool,
}

#[derive(Default)]
struct InboxState {
    deliveries: Vec<Delivery>,
    failures_left: u32,
}

/// A callback receiver: answers 500 for its first `failures` calls, then SUCCESS.
pub struct Receiver {
    pub notify_url: String,
    state: Arc<Mutex<InboxState>>,
    server: ServerHandle,
}

impl Receiver {
    pub fn start(failures: u32) -> Self {
        let state = Arc::new(Mutex::new(InboxState {
            deliveries: Vec::new(),
            failures_left: failures,
        }));
        let data = web::Data::from(Arc::clone(&state));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let notify_url = format!("http://{}/notify", listener.local_addr().unwrap());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/notify", web::post().to(notify))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            notify_url,
            state,
            server: handle,
        }
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.clone()
    }

    pub fn deliveries_for(&self, out_trade_no: &str) -> Vec<Delivery> {
        self.deliveries()
            .into_iter()
            .filter(|d| d.body.out_trade_no == out_trade_no)
            .collect()
    }

    /// Waits until `count` deliveries for `out_trade_no` arrived and answers them.
    pub async fn wait_for(&self, out_trade_no: &str, count: usize) -> Vec<Delivery> {
        wait_until(&format!("{count} callbacks for {out_trade_no}"), || async {
            self.deliveries_for(out_trade_no).len() >= count
        })
        .await;
        self.deliveries_for(out_trade_no)
    }

    pub async fn stop(self) {
        self.server.stop(false).await;
    }
}

async fn notify(
    state: web::Data<Mutex<InboxState>>,
    req: HttpRequest,
    body: Bytes,
) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp: i64 = header(protocol::TIMESTAMP_HEADER).parse().unwrap_or(-1);
    let signature_valid = protocol::verify(
        SECRET.as_bytes(),
        timestamp,
        &body,
        &header(protocol::SIGNATURE_HEADER),
    );
    let callback: CallbackBody = serde_json::from_slice(&body).unwrap();
    let mut state = state.lock().unwrap();
    let acknowledged = state.failures_left == 0;
    state.deliveries.push(Delivery {
        signature_valid,
        body: callback,
        acknowledged,
    });
    if acknowledged {
        HttpResponse::Ok().json(protocol::CallbackAck {
            code: "SUCCESS".to_owned(),
            message: None,
        })
    } else {
        state.failures_left -= 1;
        HttpResponse::InternalServerError().json(protocol::CallbackAck {
            code: "FAIL".to_owned(),
            message: Some("try again".to_owned()),
        })
    }
}
