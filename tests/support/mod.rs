//! What the tests that run the real binary share: free ports and merchant-signed requests.

#![allow(dead_code)] // each test crate uses a part of it

use serde_json::Value;

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A request of the merchant `demo` signed with `secret`: its status and JSON body, or the
/// transport's error.
pub async fn signed(
    http: &reqwest::Client,
    base: &str,
    secret: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let bytes = body
        .map(|b| serde_json::to_vec(&b).unwrap())
        .unwrap_or_default();
    let ts = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    let nonce = format!("{:032x}", rand::random::<u128>());
    let sig = paycore::http::auth::sign(
        secret.as_bytes(),
        &paycore::http::auth::canonical(method, path, &ts, &nonce, &bytes),
    );
    let r = http
        .request(method.parse().unwrap(), format!("{base}{path}"))
        .header("X-Paycore-Merchant", "demo")
        .header("X-Paycore-Timestamp", ts)
        .header("X-Paycore-Nonce", nonce)
        .header("X-Paycore-Signature", sig)
        .body(bytes)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so that a failing test,
/// which unwinds past its own `kill`, leaves no paycore or simulator running behind it.
pub struct Reaped(pub std::process::Child);

impl std::ops::Deref for Reaped {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // Both fail harmlessly for a child already killed and waited for.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
