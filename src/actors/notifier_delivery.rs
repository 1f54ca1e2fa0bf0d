//! One delivery attempt of a merchant notification: a `POST` of the stored event body to the
//! notification's URL, signed with the merchant's secret exactly as merchants sign their
//! requests to us (API.md "Merchant authentication"), plus `X-Paycore-Notification-Id`.
//!
//! What it must never do: reach an address the [`AddressPolicy`] refuses. An IP literal is
//! checked here (the HTTP client connects to literals without resolving them); a host name is
//! resolved by [`PolicyResolver`], which drops refused addresses, so a name that resolves only
//! to refused ones fails the attempt (no request forgery through DNS). Redirects are never
//! followed (a 3xx is a failed attempt), no proxy is used, and at most
//! [`MAX_ANSWER_BYTES`] of an answer is read.

use crate::domain::address::{AddressPolicy, is_localhost_name};
use crate::domain::notification::{AttemptResult, Notification};
use crate::domain::signing::{
    MERCHANT_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, canonical, sign,
};
use std::net::SocketAddr;
use std::time::Duration;
use time::OffsetDateTime;

/// Header carrying the notification's stable id (the same on every attempt).
pub const NOTIFICATION_ID_HEADER: &str = "X-Paycore-Notification-Id";
/// Most bytes of a merchant's answer read before it is dropped.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024;

/// Resolves host names and keeps only the addresses the policy allows.
struct PolicyResolver {
    policy: AddressPolicy,
}

/// A host name with no address the policy allows.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to no permitted address (loopback and private destinations are refused)")]
struct NoPermittedAddress {
    host: String,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let refused = || -> Box<dyn std::error::Error + Send + Sync> {
                Box::new(NoPermittedAddress { host: host.clone() })
            };
            if is_localhost_name(&host) && !policy.allow_loopback {
                return Err(refused());
            }
            let permitted: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(refused());
            }
            let addrs: reqwest::dns::Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

/// Makes delivery attempts. One per notifier; cheap to share.
pub struct Deliverer {
    http: reqwest::Client,
    policy: AddressPolicy,
}

impl Deliverer {
    /// A client with the policy's resolver, no redirects, no proxy, and `timeout` per attempt.
    pub fn new(
        policy: AddressPolicy,
        timeout: Duration,
        idle_per_host: usize,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(PolicyResolver { policy })
            .pool_max_idle_per_host(idle_per_host)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { http, policy })
    }

    /// Makes one attempt and says what came of it.
    pub async fn attempt(&self, n: &Notification, secret: &[u8]) -> AttemptResult {
        let url = match reqwest::Url::parse(&n.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return AttemptResult::NoAnswer("the notify URL is not an http(s) URL".into()),
        };
        let Some(host) = url.host() else {
            return AttemptResult::NoAnswer("the notify URL has no host".into());
        };
        if let Err(why) = self.policy.check_host(&host) {
            return AttemptResult::NoAnswer(format!("refused: the notify URL {why}"));
        }
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        };
        let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
        let nonce = format!("{:032x}", rand::random::<u128>());
        let signature = sign(
            secret,
            &canonical("POST", &path_and_query, &timestamp, &nonce, &n.body),
        );
        let sent = self
            .http
            .post(url)
            .header(MERCHANT_HEADER, n.merchant_id.as_str())
            .header(TIMESTAMP_HEADER, timestamp)
            .header(NONCE_HEADER, nonce)
            .header(SIGNATURE_HEADER, signature)
            .header(NOTIFICATION_ID_HEADER, n.notification_id.as_str())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(n.body.clone())
            .send()
            .await;
        match sent {
            Ok(mut answer) => {
                let status = answer.status().as_u16();
                // Read a little of the answer (a merchant may expect it to be read), then drop
                // it: a large or endless body costs at most this.
                let mut read = 0;
                while read < MAX_ANSWER_BYTES {
                    match answer.chunk().await {
                        Ok(Some(chunk)) => read += chunk.len(),
                        _ => break,
                    }
                }
                AttemptResult::Answered(status)
            }
            Err(e) => AttemptResult::NoAnswer(describe(&e)),
        }
    }
}

/// A short description of a failed request: what kind, and its causes.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut text = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notification::{DEFAULT_NOTIFY_EVENTS, Subscription};
    use crate::domain::{Event, EventId, OrderId};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-line HTTP server answering every request with `answer`; counts requests.
    async fn server(answer: &'static str) -> (u16, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut got = Vec::new();
                    // Head and the (small) body: enough to answer.
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                        if let Some(head) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            let text = String::from_utf8_lossy(&got[..head]).to_lowercase();
                            let len = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            if got.len() >= head + 4 + len {
                                break;
                            }
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (port, seen)
    }

    fn notification(url: String) -> Notification {
        let event = Event {
            event_id: EventId::generate(),
            event_type: "order.paid".into(),
            order_id: OrderId::generate().to_string(),
            merchant_id: "demo".into(),
            version: 3,
            occurred_at: OffsetDateTime::now_utc(),
            data: serde_json::json!({ "notify_url": url }).into(),
        };
        let sub = Subscription {
            events: DEFAULT_NOTIFY_EVENTS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            default_url: None,
        };
        Notification::for_event(&event, &sub, OffsetDateTime::now_utc()).unwrap()
    }

    fn deliverer(allow_loopback: bool) -> Deliverer {
        let policy = AddressPolicy {
            allow_loopback,
            allow_private: false,
        };
        Deliverer::new(policy, Duration::from_secs(5), 4).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_addresses_are_never_connected_to() {
        let (port, seen) = server("HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").await;
        let strict = deliverer(false);
        for url in [
            format!("http://127.0.0.1:{port}/n"),
            format!("http://2130706433:{port}/n"),
            format!("http://localhost:{port}/n"),
        ] {
            let r = strict.attempt(&notification(url.clone()), b"secret").await;
            assert!(
                matches!(&r, AttemptResult::NoAnswer(e) if e.contains("refused") || e.contains("no permitted address")),
                "{url}: {r:?}"
            );
        }
        assert_eq!(seen.load(Ordering::SeqCst), 0);
        let open = deliverer(true);
        let r = open
            .attempt(
                &notification(format!("http://localhost:{port}/n")),
                b"secret",
            )
            .await;
        assert_eq!(r, AttemptResult::Answered(204));
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redirect_is_an_answer_not_followed() {
        let (port, seen) =
            server("HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n").await;
        let r = deliverer(true)
            .attempt(
                &notification(format!("http://127.0.0.1:{port}/n")),
                b"secret",
            )
            .await;
        assert_eq!(r, AttemptResult::Answered(302));
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1,
            "the redirect was not followed"
        );
    }
}
