//! The client against small servers on loopback that answer by hand, so each test controls the
//! bytes on the wire: keep-alive, a closed connection, an answer too large, no answer at all.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

fn limits() -> Limits {
    Limits {
        request_timeout: Duration::from_millis(2_000),
        connect_timeout: Duration::from_millis(1_000),
        max_idle: 4,
        max_answer_bytes: 1024,
    }
}

/// How a test server answers each request on a connection.
#[derive(Clone, Copy)]
enum Serve {
    /// 200 with the request's head echoed in the body; the connection stays open.
    Echo,
    /// Like `Echo`, then the connection is closed without saying so.
    EchoThenClose,
    /// 200 with a body of this many bytes.
    Body(usize),
    /// Reads the request and never answers.
    Silent,
}

struct Server {
    base: String,
    accepted: Arc<AtomicUsize>,
}

async fn serve(how: Serve) -> Server {
    serve_with(how, None).await
}

/// A server on loopback; with `tls`, it speaks TLS first.
async fn serve_with(how: Serve, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base = format!("{scheme}://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => answer_all(sock, how).await,
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(sock).await {
                            answer_all(s, how).await
                        }
                    }
                }
            });
        }
    });
    Server { base, accepted }
}

async fn answer_all<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, how: Serve) {
    loop {
        let Some((head, body)) = read_request(&mut sock).await else {
            return;
        };
        let answer = match how {
            Serve::Echo | Serve::EchoThenClose => format!("{head}\n\n{body}"),
            Serve::Body(n) => "x".repeat(n),
            Serve::Silent => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
        };
        let out = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if sock.write_all(out.as_bytes()).await.is_err() || sock.flush().await.is_err() {
            return;
        }
        if matches!(how, Serve::EchoThenClose) {
            return;
        }
    }
}

/// One request's head (lower-cased header names) and body, or None at the connection's end.
async fn read_request<S: AsyncRead + Unpin>(sock: &mut S) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, String::from_utf8_lossy(&body).to_string()))
}

#[tokio::test]
async fn sends_method_path_headers_and_body_and_reuses_one_connection() {
    let server = serve(Serve::Echo).await;
    let origin = Origin::new(&format!("{}/api/v3/", server.base), limits()).unwrap();
    for i in 0..3 {
        let answer = origin
            .send(
                Method::POST,
                "/payments",
                &[("x-signature", "abc"), ("content-type", "application/json")],
                format!("{{\"n\":{i}}}").into_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        let echoed = String::from_utf8_lossy(&answer.body).to_lowercase();
        assert!(
            echoed.starts_with("post /api/v3/payments http/1.1"),
            "{echoed}"
        );
        assert!(echoed.contains("x-signature: abc"), "{echoed}");
        let host = server.base.trim_start_matches("http://");
        assert!(echoed.contains(&format!("host: {host}")), "{echoed}");
        assert!(echoed.ends_with(&format!("{{\"n\":{i}}}")), "{echoed}");
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_server_closed_is_replaced_and_the_request_answered() {
    let server = serve(Serve::EchoThenClose).await;
    let origin = Origin::new(&server.base, limits()).unwrap();
    for _ in 0..3 {
        let answer = origin.send(Method::GET, "/x", &[], Vec::new()).await;
        assert_eq!(answer.unwrap().status, 200);
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn concurrent_exchanges_each_take_a_connection_and_at_most_max_idle_are_kept() {
    let server = serve(Serve::Echo).await;
    let origin = Arc::new(Origin::new(&server.base, limits()).unwrap());
    let calls = (0..8).map(|_| {
        let o = origin.clone();
        tokio::spawn(async move { o.send(Method::GET, "/x", &[], Vec::new()).await })
    });
    for c in futures::future::join_all(calls).await {
        assert_eq!(c.unwrap().unwrap().status, 200);
    }
    let opened = server.accepted.load(Ordering::SeqCst);
    assert!(
        opened > 1,
        "{opened} connections for 8 concurrent exchanges"
    );
    let idle = origin.idle.lock().unwrap().len();
    assert!(idle <= limits().max_idle, "{idle} idle");
}

#[tokio::test]
async fn an_answer_over_the_bound_fails_and_one_at_it_is_read() {
    let at = serve(Serve::Body(1024)).await;
    let origin = Origin::new(&at.base, limits()).unwrap();
    let answer = origin.send(Method::GET, "/x", &[], Vec::new()).await;
    assert_eq!(answer.unwrap().body.len(), 1024);

    let over = serve(Serve::Body(1025)).await;
    let origin = Origin::new(&over.base, limits()).unwrap();
    let answer = origin.send(Method::GET, "/x", &[], Vec::new()).await;
    assert_eq!(answer.unwrap_err(), OutboundError::TooLarge(1024));
}

#[tokio::test]
async fn no_answer_within_the_timeout_fails_as_a_timeout() {
    let server = serve(Serve::Silent).await;
    let origin = Origin::new(
        &server.base,
        Limits {
            request_timeout: Duration::from_millis(200),
            ..limits()
        },
    )
    .unwrap();
    let answer = origin.send(Method::GET, "/x", &[], Vec::new()).await;
    assert_eq!(answer.unwrap_err(), OutboundError::Timeout(200));
}

#[tokio::test]
async fn nothing_listening_fails_to_connect() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let origin = Origin::new(&base, limits()).unwrap();
    let answer = origin.send(Method::GET, "/x", &[], Vec::new()).await;
    assert!(
        matches!(answer, Err(OutboundError::Connect(_))),
        "{answer:?}"
    );
}

#[test]
fn urls_it_cannot_serve_are_refused_at_construction() {
    for bad in [
        "ftp://example.com",
        "http://user:pw@example.com",
        "http://example.com/?a=1",
        "http://example.com/#f",
        "not a url",
    ] {
        assert!(Origin::new(bad, limits()).is_err(), "{bad} accepted");
    }
    let o = Origin::new("https://[::1]:8443/base/", limits()).unwrap();
    assert_eq!(
        (
            o.host.as_str(),
            o.port,
            o.authority.as_str(),
            o.base_path.as_str()
        ),
        ("::1", 8443, "[::1]:8443", "/base")
    );
    let o = Origin::new("https://pay.example.com", limits()).unwrap();
    assert_eq!((o.port, o.authority.as_str()), (443, "pay.example.com"));
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A TLS server for `localhost` with a self-signed certificate, and that certificate.
fn tls_acceptor() -> (
    tokio_rustls::TlsAcceptor,
    rustls::pki_types::CertificateDer<'static>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = made.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(made.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert)
}

#[tokio::test]
async fn https_is_spoken_to_a_server_whose_certificate_is_trusted() {
    let (acceptor, cert) = tls_acceptor();
    let server = serve_with(Serve::Echo, Some(acceptor)).await;
    let port = server.base.rsplit(':').next().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let origin =
        Origin::with_tls_config(&format!("https://localhost:{port}"), limits(), tls).unwrap();
    for _ in 0..2 {
        let answer = origin
            .send(Method::GET, "/x", &[], Vec::new())
            .await
            .unwrap();
        let echoed = String::from_utf8_lossy(&answer.body).to_lowercase();
        assert!(echoed.starts_with("get /x http/1.1"), "{echoed}");
        assert!(
            echoed.contains(&format!("host: localhost:{port}")),
            "{echoed}"
        );
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn https_to_a_certificate_the_platform_does_not_trust_fails_to_connect() {
    let (acceptor, _) = tls_acceptor();
    let server = serve_with(Serve::Echo, Some(acceptor)).await;
    let port = server.base.rsplit(':').next().unwrap();
    let origin = Origin::new(&format!("https://localhost:{port}"), limits()).unwrap();
    let answer = origin.send(Method::GET, "/x", &[], Vec::new()).await;
    assert!(
        matches!(&answer, Err(OutboundError::Connect(m)) if m.starts_with("TLS")),
        "{answer:?}"
    );
}
