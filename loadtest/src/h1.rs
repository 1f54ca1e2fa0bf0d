//! A lean HTTP/1.1 keep-alive client for the load generator: a pool of hyper connections to one
//! origin, each used by one request at a time. The generator shares the machine with the system
//! it measures, so what it spends per request is taken from the target: this client skips what a
//! general client does per request (URL parsing, host normalisation, a shared pool keyed by
//! origin, redirect and proxy handling) and keeps only a connection, the request and a timeout.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Mutex;
use std::time::Duration;

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect.
    Connect,
    /// No complete answer within the timeout.
    Timeout,
    /// The connection failed while sending or receiving.
    Request,
    /// The answer's body could not be read.
    Body,
}

impl Failure {
    /// The label reports use (`transport timeout`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Timeout => "timeout",
            Failure::Request => "request",
            Failure::Body => "body",
        }
    }
}

/// Connections to one origin (`http://host:port`, no TLS: the generator targets loopback).
pub struct Pool {
    /// `host:port` to connect to.
    authority: String,
    /// Idle connections, most recently used last.
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
    /// Most idle connections kept; more are closed when returned.
    max_idle: usize,
    timeout: Duration,
}

impl Pool {
    /// A pool for `base` (`http://host:port`, a trailing path is refused).
    pub fn new(base: &str, max_idle: usize, timeout: Duration) -> anyhow::Result<Self> {
        let uri: hyper::Uri = base
            .parse()
            .map_err(|e| anyhow::anyhow!("bad URL {base}: {e}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http"),
            "only http:// targets are supported: {base}"
        );
        anyhow::ensure!(
            uri.path() == "/" || uri.path().is_empty(),
            "the target URL must not have a path: {base}"
        );
        let authority = uri
            .authority()
            .ok_or_else(|| anyhow::anyhow!("no host in {base}"))?;
        let port = authority.port_u16().unwrap_or(80);
        Ok(Self {
            authority: format!("{}:{port}", authority.host()),
            idle: Mutex::new(Vec::new()),
            max_idle,
            timeout,
        })
    }

    /// The `Host` header value.
    #[cfg(test)]
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `req` and reads the whole answer, within the timeout.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        tokio::time::timeout(
            self.timeout,
            self.exchange(method, path_and_query, headers, body),
        )
        .await
        .unwrap_or(Err(Failure::Timeout))
    }

    async fn exchange(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&'static str, &str)],
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes), Failure> {
        let body = Bytes::from(body);
        // A pooled connection the server closed since its last use fails before anything was
        // sent; that one request is retried once on a fresh connection.
        let (mut sender, pooled) = match self.take_idle() {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let build = || {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(path_and_query)
                .header(hyper::header::HOST, self.authority.as_str());
            for (name, value) in headers {
                b = b.header(*name, *value);
            }
            b.body(Full::new(body.clone()))
                .map_err(|_| Failure::Request)
        };
        let resp = match send_on(&mut sender, build()?).await {
            Ok(r) => r,
            Err(e) if pooled && e.is_canceled_or_closed() => {
                sender = self.connect().await?;
                send_on(&mut sender, build()?)
                    .await
                    .map_err(|_| Failure::Request)?
            }
            Err(_) => return Err(Failure::Request),
        };
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| Failure::Body)?
            .to_bytes();
        self.give_back(sender);
        Ok((status, bytes))
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, Failure> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|_| Failure::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|_| Failure::Connect)?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// Errors of one exchange on one connection.
struct SendError(hyper::Error);

impl SendError {
    fn is_canceled_or_closed(&self) -> bool {
        self.0.is_canceled() || self.0.is_closed() || self.0.is_incomplete_message()
    }
}

async fn send_on(
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
    sender.ready().await.map_err(SendError)?;
    sender.send_request(req).await.map_err(SendError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn the_base_url_must_be_plain_http_without_a_path() {
        assert!(Pool::new("https://127.0.0.1:1", 1, Duration::from_secs(1)).is_err());
        assert!(Pool::new("http://127.0.0.1:1/v1", 1, Duration::from_secs(1)).is_err());
        let p = Pool::new("http://127.0.0.1:8080/", 1, Duration::from_secs(1)).unwrap();
        assert_eq!(p.authority(), "127.0.0.1:8080");
        let p = Pool::new("http://localhost", 1, Duration::from_secs(1)).unwrap();
        assert_eq!(p.authority(), "localhost:80");
    }

    /// A server that answers one request per connection and then closes it: every pooled
    /// connection is stale by the next request, which must still get its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_the_server_closed_is_replaced() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for _ in 0..3 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let body = format!("{{\"n\":{}}}", seen.len());
                write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .unwrap();
                // Dropping `s` closes the connection without `Connection: close`.
            }
            seen
        });
        let pool = Pool::new(&format!("http://{addr}"), 8, Duration::from_secs(5)).unwrap();
        for i in 1..=3 {
            let (status, body) = pool
                .send(
                    Method::POST,
                    "/v1/x?y=1",
                    &[("x-test", "v")],
                    b"{}".to_vec(),
                )
                .await
                .unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, Bytes::from(format!("{{\"n\":{i}}}")));
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = served.join().unwrap();
        assert!(
            seen[0].starts_with("POST /v1/x?y=1 HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0].to_ascii_lowercase().contains("x-test: v"));
        assert!(seen[0].ends_with("\r\n\r\n{}"), "{}", seen[0]);
    }

    #[tokio::test]
    async fn no_server_is_a_connect_failure_and_a_silent_one_a_timeout() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = free.local_addr().unwrap();
        drop(free);
        let pool = Pool::new(&format!("http://{addr}"), 1, Duration::from_secs(5)).unwrap();
        let r = pool.send(Method::GET, "/", &[], Vec::new()).await;
        assert_eq!(r.unwrap_err(), Failure::Connect);

        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let pool = Pool::new(&format!("http://{addr}"), 1, Duration::from_millis(200)).unwrap();
        let r = pool.send(Method::GET, "/", &[], Vec::new()).await;
        assert_eq!(r.unwrap_err(), Failure::Timeout);
        drop(silent);
    }
}
