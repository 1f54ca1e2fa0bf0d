//! A lean HTTP/1.1 client for one origin: the payment channel's, or a business system's. It keeps
//! a bounded pool of keep-alive connections, speaks TLS through rustls with the platform's
//! verifier for `https://` origins, puts one timeout over the whole exchange, and bounds the
//! answer's size.
//!
//! It took reqwest's place on the per-order paths: there, reqwest parses a URL for every request,
//! keys a shared pool by origin, and handles redirects and proxies. We need none of that for a
//! fixed origin, and ARCHITECTURE.md gives the measured cost.
//!
//! It never follows a redirect. It sends a request a second time in one case only: when a pooled
//! connection turns out to have been closed by the server before an answer began (the keep-alive
//! race). Every call of the channel and business-system protocols is idempotent by its key
//! (out_trade_no, out_refund_no, the order id of a write-off, the reversal id), so that resend
//! cannot double an effect.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// An idle connection older than this is closed instead of reused: below the 5 s keep-alive
/// that actix-web and many other servers default to, so a reused connection is rarely one the
/// server is closing at that moment.
const IDLE_REUSE_MAX: Duration = Duration::from_secs(4);

/// The bounds of one origin's client.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The whole exchange: connecting, sending, and reading the complete answer.
    pub request_timeout: Duration,
    /// Connecting, TLS included (within `request_timeout`).
    pub connect_timeout: Duration,
    /// Most idle connections kept for reuse; more are closed when their exchange ends.
    pub max_idle: usize,
    /// The largest answer body read; a larger one fails the exchange.
    pub max_answer_bytes: usize,
}

/// Why an exchange got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboundError {
    /// No connection could be opened (TCP or TLS).
    #[error("could not connect: {0}")]
    Connect(String),
    /// No complete answer within the request timeout.
    #[error("no complete answer within {0} ms")]
    Timeout(u128),
    /// The connection failed while sending or receiving.
    #[error("the exchange failed: {0}")]
    Exchange(String),
    /// The answer's body is larger than the bound.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// An answer: its status and its whole body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status code.
    pub status: u16,
    /// The body, at most `max_answer_bytes`.
    pub body: Bytes,
}

enum Transport {
    Plain,
    Tls {
        connector: tokio_rustls::TlsConnector,
        server_name: ServerName<'static>,
    },
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A client of one origin (`http://host[:port][/base]` or `https://...`).
pub struct Origin {
    transport: Transport,
    /// What to connect to.
    host: String,
    port: u16,
    /// The `Host` header: the authority as the base URL gives it.
    authority: String,
    /// The base URL's path without its trailing '/', put before every request's path.
    base_path: String,
    idle: Mutex<Vec<Idle>>,
    limits: Limits,
}

impl Origin {
    /// A client for `base_url`; an `https://` origin is verified by the platform's verifier (the
    /// system's trust store), as reqwest did.
    pub fn new(base_url: &str, limits: Limits) -> Result<Self, String> {
        Self::build(base_url, limits, None)
    }

    /// A client for `base_url` whose `https://` connections use `tls` (its own roots, say).
    pub fn with_tls_config(
        base_url: &str,
        limits: Limits,
        tls: rustls::ClientConfig,
    ) -> Result<Self, String> {
        Self::build(base_url, limits, Some(tls))
    }

    fn build(
        base_url: &str,
        limits: Limits,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Self, String> {
        let url = url::Url::parse(base_url).map_err(|e| format!("bad URL {base_url}: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("the URL {base_url} must not carry credentials"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "the URL {base_url} must not have a query or fragment"
            ));
        }
        let (host, server_name) = match url.host() {
            Some(url::Host::Domain(d)) => (
                d.to_string(),
                ServerName::try_from(d.to_string()).map_err(|e| format!("bad host {d}: {e}"))?,
            ),
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), ServerName::IpAddress(ip.into())),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), ServerName::IpAddress(ip.into())),
            None => return Err(format!("no host in {base_url}")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| format!("no port for {base_url}"))?;
        let transport = match url.scheme() {
            "http" => Transport::Plain,
            "https" => {
                let mut config = match tls {
                    Some(c) => c,
                    None => platform_tls_config()?,
                };
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Transport::Tls {
                    connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
                    server_name,
                }
            }
            other => {
                return Err(format!(
                    "the scheme {other}:// is not supported: {base_url}"
                ));
            }
        };
        let authority = match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        Ok(Self {
            transport,
            host,
            port,
            authority,
            base_path: url.path().trim_end_matches('/').to_string(),
            idle: Mutex::new(Vec::new()),
            limits,
        })
    }

    /// Sends one request (`path` after the base URL's path) and reads the whole answer, within
    /// the request timeout.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, OutboundError> {
        let timeout = self.limits.request_timeout;
        tokio::time::timeout(timeout, self.exchange(method, path, headers, body))
            .await
            .unwrap_or(Err(OutboundError::Timeout(timeout.as_millis())))
    }

    /// Sends a JSON body under the two headers both third-party protocols sign with: the Unix
    /// timestamp and the signature over it.
    pub async fn send_signed_json(
        &self,
        method: Method,
        path: &str,
        (timestamp_header, timestamp): (&'static str, i64),
        (signature_header, signature): (&'static str, &str),
        body: Vec<u8>,
    ) -> Result<Answer, OutboundError> {
        let timestamp = timestamp.to_string();
        let headers = [
            (timestamp_header, timestamp.as_str()),
            (signature_header, signature),
            ("content-type", "application/json"),
        ];
        self.send(method, path, &headers, body).await
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(&'static str, &str)],
        body: Vec<u8>,
    ) -> Result<Answer, OutboundError> {
        let body = Bytes::from(body);
        let uri = format!("{}{path}", self.base_path);
        let build = || {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(uri.as_str())
                .header(hyper::header::HOST, self.authority.as_str());
            for (name, value) in headers {
                b = b.header(*name, *value);
            }
            b.body(Full::new(body.clone()))
                .map_err(|e| OutboundError::Exchange(format!("bad request: {e}")))
        };
        let (mut sender, pooled) = match self.take_idle() {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let resp = match send_on(&mut sender, build()?).await {
            Ok(r) => r,
            Err(e) if pooled && closed_before_answer(&e) => {
                sender = self.connect().await?;
                send_on(&mut sender, build()?)
                    .await
                    .map_err(|e| OutboundError::Exchange(e.to_string()))?
            }
            Err(e) => return Err(OutboundError::Exchange(e.to_string())),
        };
        let status = resp.status().as_u16();
        let max = self.limits.max_answer_bytes;
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    OutboundError::TooLarge(max)
                } else {
                    OutboundError::Exchange(e.to_string())
                }
            })?
            .to_bytes();
        self.give_back(sender);
        Ok(Answer { status, body })
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && c.since.elapsed() < IDLE_REUSE_MAX {
                return Some(c.sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        // Pushed newest last and taken from the end, so the stack is oldest first: the ones
        // past reuse are a prefix, found by reading the clock once per dropped one plus one.
        let fresh = idle
            .iter()
            .position(|c| c.since.elapsed() < IDLE_REUSE_MAX)
            .unwrap_or(idle.len());
        idle.drain(..fresh);
        if idle.len() < self.limits.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, OutboundError> {
        let timeout = self.limits.connect_timeout;
        tokio::time::timeout(timeout, self.open())
            .await
            .unwrap_or_else(|_| {
                Err(OutboundError::Connect(format!(
                    "not connected within {} ms",
                    timeout.as_millis()
                )))
            })
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>, OutboundError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| OutboundError::Connect(e.to_string()))?;
        // Requests are small and answered at once: Nagle would hold the body back.
        let _ = stream.set_nodelay(true);
        match &self.transport {
            Transport::Plain => handshake(TokioIo::new(stream)).await,
            Transport::Tls {
                connector,
                server_name,
            } => {
                let tls = connector
                    .connect(server_name.clone(), stream)
                    .await
                    .map_err(|e| OutboundError::Connect(format!("TLS: {e}")))?;
                handshake(TokioIo::new(tls)).await
            }
        }
    }
}

fn platform_tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_platform_verifier()
        .map_err(|e| format!("the platform's TLS verifier: {e}"))?
        .with_no_client_auth())
}

async fn handshake<T>(io: TokioIo<T>) -> Result<SendRequest<Full<Bytes>>, OutboundError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::handshake(io)
        .await
        .map_err(|e| OutboundError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes the connection.
        let _ = conn.await;
    });
    Ok(sender)
}

/// A pooled connection the server closed before any answer began: the request was not acted on
/// or, in the keep-alive race, the protocols' idempotency keys make a resend harmless.
fn closed_before_answer(e: &hyper::Error) -> bool {
    e.is_canceled() || e.is_closed() || e.is_incomplete_message()
}

async fn send_on(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error> {
    sender.ready().await?;
    sender.send_request(req).await
}

#[cfg(test)]
#[path = "outbound_tests.rs"]
mod tests;
