//! The business-system protocol of `biller-sim` over HTTP: signed JSON requests
//! (method, path, timestamp and body under HMAC-SHA256), idempotent write-offs and reversals.

use super::{Biller, BillerError};
use crate::config::BillerTarget;
use crate::domain::view::OrderView;
use crate::domain::{Order, OrderId};
use crate::outbound::{Limits, Origin};
use async_trait::async_trait;
use paycore_biller_sim::protocol as p;
use std::time::Duration;
use time::OffsetDateTime;

/// The largest answer read from a business system: its answers are a status and a short error.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A business system reached over HTTP.
pub struct HttpBiller {
    secret: Vec<u8>,
    origin: Origin,
    /// Requests in flight (`max_in_flight`): a burst of paid orders queues here briefly and
    /// then fails into the retry schedule instead of opening thousands of connections.
    in_flight: tokio::sync::Semaphore,
    timeout: Duration,
}

impl HttpBiller {
    /// A client for the business system at `base_url`.
    pub fn new(base_url: String, target: &BillerTarget) -> Result<Self, String> {
        let timeout = Duration::from_millis(target.timeout_ms);
        let origin = Origin::new(
            &base_url,
            Limits {
                request_timeout: timeout,
                connect_timeout: timeout,
                max_idle: target.max_in_flight,
                max_answer_bytes: MAX_ANSWER_BYTES,
            },
        )?;
        Ok(Self {
            secret: target.secret.expose().as_bytes().to_vec(),
            origin,
            in_flight: tokio::sync::Semaphore::new(target.max_in_flight),
            timeout,
        })
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(), BillerError> {
        let _permit = tokio::time::timeout(self.timeout, self.in_flight.acquire())
            .await
            .map_err(|_| BillerError::Unavailable("every connection to it is busy".into()))?
            .map_err(|_| BillerError::Unavailable("closed".into()))?;
        let ts = OffsetDateTime::now_utc().unix_timestamp();
        let sig = p::sign(&self.secret, &format!("POST {path}"), ts, &body);
        let answer = self
            .origin
            .send_signed_json(
                hyper::Method::POST,
                path,
                (p::TIMESTAMP_HEADER, ts),
                (p::SIGNATURE_HEADER, &sig),
                body,
            )
            .await
            .map_err(|e| BillerError::Unavailable(e.to_string()))?;
        let (status, bytes) = (answer.status, answer.body);
        match status {
            200..=299 => Ok(()),
            s if s >= 500 || s == 429 => Err(BillerError::Unavailable(format!("HTTP {s}"))),
            s => match serde_json::from_slice::<p::ErrorBody>(&bytes) {
                Ok(e) => Err(BillerError::Refused {
                    code: e.code,
                    message: e.message,
                }),
                Err(_) => Err(BillerError::Unavailable(format!(
                    "HTTP {s} with an unreadable body"
                ))),
            },
        }
    }
}

#[async_trait]
impl Biller for HttpBiller {
    async fn write_off(&self, order: &Order) -> Result<(), BillerError> {
        let view = OrderView::from(order);
        let body = p::WriteOffRequest {
            order_id: view.order_id,
            merchant_id: view.merchant_id,
            merchant_order_no: view.merchant_order_no,
            amount: view.amount,
            currency: view.currency,
            business_type: view.business_type,
        };
        let bytes =
            serde_json::to_vec(&body).map_err(|e| BillerError::Unavailable(e.to_string()))?;
        self.post(p::WRITE_OFFS_PATH, bytes).await
    }

    async fn reverse(
        &self,
        order_id: &OrderId,
        reversal_id: &str,
        amount: i64,
        reason: Option<&str>,
    ) -> Result<(), BillerError> {
        let body = p::ReverseRequest {
            reversal_id: reversal_id.to_string(),
            amount,
            reason: reason.map(str::to_string),
        };
        let bytes =
            serde_json::to_vec(&body).map_err(|e| BillerError::Unavailable(e.to_string()))?;
        self.post(&p::reversals_path(&order_id.to_string()), bytes)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::domain::NewOrder;

    /// At most `max_in_flight` calls are open at once: with one slot, a 300 ms business system
    /// and a 500 ms timeout, of three write-offs at once two are made (one after the other) and
    /// the third finds no slot in time and fails into the retry schedule.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_beyond_max_in_flight_wait_then_fail_as_unanswered() {
        let settings = paycore_biller_sim::BillerSettings {
            latency_ms_min: 300,
            latency_ms_max: 300,
            ..Default::default()
        };
        let secret = settings.secret.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sim = paycore_biller_sim::start(settings, listener).unwrap();
        let target = BillerTarget {
            url: sim.base_url(),
            secret: Secret::new(secret),
            timeout_ms: 500,
            max_in_flight: 1,
        };
        let biller = HttpBiller::new(sim.base_url(), &target).unwrap();
        let orders: Vec<Order> = (0..3)
            .map(|i| {
                let new = NewOrder::for_test("demo", &format!("B-{i}"), 100);
                Order::create(OrderId::generate(), new, OffsetDateTime::now_utc()).0
            })
            .collect();
        let (a, b, c) = tokio::join!(
            biller.write_off(&orders[0]),
            biller.write_off(&orders[1]),
            biller.write_off(&orders[2])
        );
        let results = [a, b, c];
        let made = results.iter().filter(|r| r.is_ok()).count();
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(BillerError::Unavailable(m)) if m.contains("busy")))
            .count();
        assert_eq!((made, busy), (2, 1), "{results:?}");
        sim.stop().await;
    }
}
