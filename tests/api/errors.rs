//! Every bad input API.md names gets its status and code, changes nothing, and leaves the
//! service healthy; wrongly signed, stale and replayed requests get 401.

use crate::common::*;
use serde_json::{Value, json};

async fn assert_nothing_created(t: &TestApp, nos: &[&str]) {
    for no in nos {
        let r = t
            .call("GET", &format!("/v1/orders?merchant_order_no={no}"), None)
            .await;
        assert_eq!(
            r.status, 404,
            "{no} exists after a refused request: {:?}",
            r.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_create_bodies_are_refused_with_the_contract_codes() {
    let t = spawn_app(|_| {}).await;
    let token = t.token().await;
    let base = TestApp::order_body(&token, "BAD-1", 100);
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (with("amount", json!(0)), 422, "invalid_request", "amount"),
        (with("amount", json!(-5)), 422, "invalid_request", "amount"),
        (with("amount", json!(1.5)), 422, "invalid_request", "amount"),
        (
            with("amount", json!("100")),
            422,
            "invalid_request",
            "amount",
        ),
        (
            with("amount", json!(10_000_000_001i64)),
            422,
            "invalid_request",
            "amount",
        ),
        (
            with("currency", json!("USD")),
            422,
            "invalid_request",
            "currency",
        ),
        (
            with("business_type", json!("Coffee")),
            422,
            "invalid_request",
            "business_type",
        ),
        (
            with("channel", json!("alipay")),
            422,
            "invalid_request",
            "channel",
        ),
        (
            with("merchant_order_no", json!("has space")),
            422,
            "invalid_request",
            "merchant_order_no",
        ),
        (
            with("merchant_order_no", json!("x".repeat(65))),
            422,
            "invalid_request",
            "merchant_order_no",
        ),
        (
            with("subject", json!("s".repeat(129))),
            422,
            "invalid_request",
            "subject",
        ),
        (
            with("notify_url", json!("ftp://x")),
            422,
            "invalid_request",
            "notify_url",
        ),
        (
            with("expire_seconds", json!(5)),
            422,
            "invalid_request",
            "expire_seconds",
        ),
        (
            with("surprise", json!(1)),
            422,
            "invalid_request",
            "surprise",
        ),
        (without("amount"), 422, "invalid_request", "amount"),
        (
            without("merchant_order_no"),
            422,
            "invalid_request",
            "merchant_order_no",
        ),
        (
            with("submit_token", json!("tok_01ARZ3NDEKTSV4RRFFQ69G5FAV")),
            422,
            "token_invalid",
            "submit_token",
        ),
        (
            with("submit_token", json!("garbage")),
            422,
            "token_invalid",
            "submit_token",
        ),
    ];
    for (body, status, code, field) in cases {
        let r = t.call("POST", "/v1/orders", Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (status, code, field),
            "{body} -> {:?}",
            r.body
        );
        assert!(
            r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }

    let malformed = t
        .signed_bytes(
            "demo",
            DEMO_SECRET,
            "POST",
            "/v1/orders",
            b"{\"amount\": ".to_vec(),
        )
        .await;
    assert_eq!(
        (malformed.status, malformed.code()),
        (400, "malformed_json")
    );
    let huge = serde_json::to_vec(&with("subject", json!("x".repeat(70 * 1024)))).unwrap();
    let big = t
        .signed_bytes("demo", DEMO_SECRET, "POST", "/v1/orders", huge)
        .await;
    assert_eq!((big.status, big.code()), (413, "body_too_large"));

    assert_nothing_created(&t, &["BAD-1"]).await;
    // The token was never consumed by any refusal.
    let ok = t.call("POST", "/v1/orders", Some(base)).await;
    assert_eq!(ok.status, 201, "{:?}", ok.body);
    let healthy = t
        .http
        .get(format!("{}/healthz", t.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(healthy, 200);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pay_requests_change_nothing() {
    let t = spawn_app(|_| {}).await;
    let id = t.create("PAYBAD-1", 100).await["order_id"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/v1/orders/{id}/pay");
    for (body, field) in [
        (json!({"pay_method": "bitcoin"}), "pay_method"),
        (json!({"pay_method": "barcode"}), "auth_code"),
        (
            json!({"pay_method": "barcode", "auth_code": "12 34"}),
            "auth_code",
        ),
        (json!({}), "pay_method"),
    ] {
        let r = t.call("POST", &path, Some(body.clone())).await;
        assert_eq!(
            (r.status, r.code(), r.field()),
            (422, "invalid_request", field),
            "{body}"
        );
    }
    for missing in ["ord_01ARZ3NDEKTSV4RRFFQ69G5FAV", "nonsense"] {
        let r = t.pay(missing).await;
        assert_eq!((r.status, r.code()), (404, "order_not_found"));
        assert_eq!(t.order(missing).await.status, 404);
    }
    let order = t.order(&id).await.body;
    assert_eq!(
        (order["status"].as_str(), order["version"].as_i64()),
        (Some("CREATED"), Some(1))
    );
    assert_eq!(
        t.sim_audit(&id).await["payments"].as_array().unwrap().len(),
        0
    );
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_stale_and_replayed_signatures_get_401() {
    let t = spawn_app(|_| {}).await;
    let token = t.token().await;
    let body = serde_json::to_vec(&TestApp::order_body(&token, "AUTH-1", 100)).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let headers = |merchant: &str, secret: &str, ts: i64, nonce: &str, body: &[u8]| {
        let ts = ts.to_string();
        vec![
            ("X-Paycore-Merchant", merchant.to_string()),
            ("X-Paycore-Timestamp", ts.clone()),
            ("X-Paycore-Nonce", nonce.to_string()),
            (
                "X-Paycore-Signature",
                sign(secret, "POST", "/v1/orders", &ts, nonce, body),
            ),
        ]
    };
    let cases = vec![
        (
            "unknown merchant",
            headers("ghost", DEMO_SECRET, now, &nonce(), &body),
        ),
        (
            "wrong secret",
            headers("demo", OTHER_SECRET, now, &nonce(), &body),
        ),
        (
            "stale timestamp",
            headers("demo", DEMO_SECRET, now - 330, &nonce(), &body),
        ),
        (
            "future timestamp",
            headers("demo", DEMO_SECRET, now + 330, &nonce(), &body),
        ),
        (
            "short nonce",
            headers("demo", DEMO_SECRET, now, "abc", &body),
        ),
        (
            "signed another body",
            headers("demo", DEMO_SECRET, now, &nonce(), b"{}"),
        ),
        ("no headers", vec![]),
    ];
    let mut messages = std::collections::HashMap::new();
    for (what, h) in cases {
        let r = t.raw("POST", "/v1/orders", body.clone(), &h).await;
        assert_eq!(
            (r.status, r.code()),
            (401, "unauthorized"),
            "{what}: {:?}",
            r.body
        );
        messages.insert(what, r.body["error"]["message"].clone());
    }
    // An unknown merchant id answers exactly as a bad signature does: ids cannot be probed.
    assert_eq!(messages["unknown merchant"], messages["wrong secret"]);
    assert_eq!(
        t.raw(
            "POST",
            "/v1/orders",
            body.clone(),
            &headers("ghost", DEMO_SECRET, now - 330, &nonce(), &body)
        )
        .await
        .body,
        t.raw(
            "POST",
            "/v1/orders",
            body.clone(),
            &headers("demo", OTHER_SECRET, now - 330, &nonce(), &body)
        )
        .await
        .body,
        "a stale request of an unknown merchant answers as one of a known merchant"
    );
    // Timestamps at the ends of i64: `(now - ts).abs()` wrapped for now - 2^63 in release
    // builds and accepted the same signed request every time.
    for ts in [now.wrapping_add(i64::MIN), i64::MIN, i64::MIN + 1, i64::MAX] {
        let signed = headers("demo", DEMO_SECRET, ts, &nonce(), &body);
        for _ in 0..3 {
            let r = t.raw("POST", "/v1/orders", body.clone(), &signed).await;
            assert_eq!(
                (r.status, r.code()),
                (401, "unauthorized"),
                "timestamp {ts}"
            );
        }
    }
    // A replay of a request that succeeded is refused and creates nothing more.
    let good = headers("demo", DEMO_SECRET, now, &nonce(), &body);
    assert_eq!(
        t.raw("POST", "/v1/orders", body.clone(), &good)
            .await
            .status,
        201
    );
    let replay = t.raw("POST", "/v1/orders", body.clone(), &good).await;
    assert_eq!((replay.status, replay.code()), (401, "unauthorized"));
    // Reads are signed too.
    let r = t
        .raw("GET", "/v1/orders?merchant_order_no=AUTH-1", vec![], &[])
        .await;
    assert_eq!(r.status, 401);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_rate_limit_answers_429() {
    let t = spawn_app(|s| {
        s.merchants[0].rate_limit_per_sec = 1;
        s.merchants[0].rate_limit_burst = 3;
    })
    .await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let r = t
            .call("GET", "/v1/orders?merchant_order_no=none", None)
            .await;
        codes.push((r.status, r.headers.contains_key("retry-after")));
    }
    assert_eq!(&codes[..3], &[(404, false); 3]);
    assert!(codes[3..].iter().all(|c| *c == (429, true)), "{codes:?}");
    t.stop().await;
}

/// One merchant filling its room for nonces (here a capacity of 5) is refused alone; another
/// merchant is still served. Before, one global capacity, filled before the rate limit was
/// checked, let one merchant deny service to all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_merchant_cannot_take_the_nonce_room_of_another() {
    let t = spawn_app(|s| s.auth.nonce_capacity_per_merchant = 5).await;
    let lookup = "/v1/orders?merchant_order_no=none";
    for _ in 0..5 {
        assert_eq!(t.call("GET", lookup, None).await.status, 404);
    }
    let full = t.call("GET", lookup, None).await;
    assert_eq!((full.status, full.code()), (503, "overloaded"));
    assert!(full.headers.contains_key("retry-after"));
    for _ in 0..5 {
        let r = t.call_as("other", OTHER_SECRET, "GET", lookup, None).await;
        assert_eq!(r.status, 404, "{:?}", r.body);
    }
    t.stop().await;
}

/// A merchant over its rate is refused before its nonce is remembered, so its rate, not its
/// nonce room, is what runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_rate_limit_do_not_use_up_nonce_room() {
    let t = spawn_app(|s| {
        s.auth.nonce_capacity_per_merchant = 4;
        s.merchants[0].rate_limit_per_sec = 1;
        s.merchants[0].rate_limit_burst = 2;
    })
    .await;
    let lookup = "/v1/orders?merchant_order_no=none";
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(t.call("GET", lookup, None).await.status);
    }
    assert_eq!(&statuses[..2], &[404, 404]);
    // (A request may find the bucket refilled after a second, and pass: 404.)
    assert!(!statuses.contains(&503), "{statuses:?}");
    assert!(
        statuses[2..].iter().filter(|s| **s == 429).count() >= 3,
        "{statuses:?}"
    );
    t.stop().await;
}
