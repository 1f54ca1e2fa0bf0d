//! End-to-end tests of request admission: signatures and timestamps, body limits, malformed
//! requests, routes and methods, capacity, latency and settings validation.

use std::time::{Duration, Instant};

use paycore_biller_sim::BillerSettings;
use paycore_biller_sim::protocol::{self, WRITE_OFFS_PATH};
use reqwest::Method;

use crate::common::{self, Client, code, reverse_req, settings, start_biller, write_off_req};

// Plain current-thread runtime on purpose: the biller must run inside any tokio runtime.
#[tokio::test]
async fn bad_signatures_and_stale_timestamps_are_refused_and_change_nothing() {
    let biller = start_biller(settings());
    let client = &biller.client;
    assert_eq!(client.write_off(&write_off_req("o-held", 100)).await.0, 200);
    let write_off = serde_json::to_vec(&write_off_req("o-sig", 100)).unwrap();
    let reversal = serde_json::to_vec(&reverse_req("r-sig", 10)).unwrap();
    let reversals = protocol::reversals_path("o-held");

    let unsigned = client
        .http
        .post(format!("{}{WRITE_OFFS_PATH}", client.base))
        .body(write_off.clone())
        .send()
        .await
        .unwrap();
    let (status, err) = common::into_parts(unsigned).await;
    assert_eq!((status, code(&err)), (401, Some(protocol::SIGN_ERROR)));

    let wrong_key = Client::new(client.base.clone(), "not-the-secret");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for (path, body) in [
        (WRITE_OFFS_PATH, &write_off),
        (reversals.as_str(), &reversal),
    ] {
        let (status, err) = wrong_key.send(Method::POST, path, body.clone()).await;
        assert_eq!(
            (status, code(&err)),
            (401, Some(protocol::SIGN_ERROR)),
            "{path}"
        );
        for stale in [now - 301, now + 301, i64::MIN, i64::MAX] {
            let (status, err) = client
                .send_at(Method::POST, path, body.clone(), stale)
                .await;
            assert_eq!(
                (status, code(&err)),
                (401, Some(protocol::SIGN_ERROR)),
                "{path} at {stale}"
            );
        }
    }
    let (status, _) = wrong_key.get(&protocol::write_off_path("o-held")).await;
    assert_eq!(status, 401);
    // A signature over another body does not carry over.
    let signature = protocol::sign(
        common::SECRET.as_bytes(),
        &format!("POST {WRITE_OFFS_PATH}"),
        now,
        b"{}",
    );
    let forged = client
        .http
        .post(format!("{}{WRITE_OFFS_PATH}", client.base))
        .header(protocol::TIMESTAMP_HEADER, now.to_string())
        .header(protocol::SIGNATURE_HEADER, signature)
        .body(write_off.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(common::into_parts(forged).await.0, 401);

    let audit = client.audit("o-sig").await;
    assert_eq!(audit.attempts, 0, "refused calls are not attempts");
    assert!(audit.write_offs.is_empty());
    let held = client.audit("o-held").await;
    assert_eq!(held.attempts, 1);
    assert!(held.reversals.is_empty());
    assert_eq!(held.write_offs[0].reversed_amount, 0);
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_requests_are_refused() {
    let biller = start_biller(settings());
    let client = &biller.client;
    let (status, err) = client
        .send(Method::POST, WRITE_OFFS_PATH, b"{not json".to_vec())
        .await;
    assert_eq!((status, code(&err)), (400, Some(protocol::INVALID_REQUEST)));
    let mut unknown_field = serde_json::to_value(write_off_req("o-bad", 1)).unwrap();
    unknown_field["amount_minor"] = 1.into();
    let (status, _) = client.post(WRITE_OFFS_PATH, &unknown_field).await;
    assert_eq!(status, 400);
    for bad in [write_off_req("o-bad", 0), write_off_req("o/bad", 1)] {
        let (status, err) = client.write_off(&bad).await;
        assert_eq!((status, code(&err)), (400, Some(protocol::INVALID_REQUEST)));
    }
    let huge = vec![b' '; protocol::MAX_BODY_BYTES + 1];
    let (status, err) = client.send(Method::POST, WRITE_OFFS_PATH, huge).await;
    assert_eq!((status, code(&err)), (413, Some(protocol::INVALID_REQUEST)));
    assert_eq!(client.audit("o-bad").await.attempts, 0);

    let no_query = client.http.get(format!("{}{WRITE_OFFS_PATH}", client.base));
    let (status, err) = common::into_parts(no_query.send().await.unwrap()).await;
    assert_eq!((status, code(&err)), (400, Some(protocol::INVALID_REQUEST)));
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_answer_error_bodies() {
    let biller = start_biller(settings());
    let client = &biller.client;
    let (status, err) = client.get("/biller/v1/nowhere").await;
    assert_eq!((status, code(&err)), (404, Some(protocol::NOT_FOUND)));
    let reversals = protocol::reversals_path("o-1");
    let write_off = protocol::write_off_path("o-1");
    for (method, path, allowed) in [
        (Method::DELETE, WRITE_OFFS_PATH, "GET, POST"),
        (Method::POST, write_off.as_str(), "GET"),
        (Method::GET, reversals.as_str(), "POST"),
    ] {
        let response = client
            .http
            .request(method.clone(), format!("{}{path}", client.base))
            .send()
            .await
            .unwrap();
        let allow = response.headers().get("allow").cloned();
        let (status, err) = common::into_parts(response).await;
        assert_eq!(
            (status, code(&err)),
            (405, Some(protocol::INVALID_REQUEST)),
            "{method} {path}"
        );
        assert_eq!(allow.unwrap().to_str().unwrap(), allowed);
    }
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_records_new_orders_answer_capacity() {
    let biller = start_biller(BillerSettings {
        max_records: 1,
        ..settings()
    });
    let client = &biller.client;
    assert_eq!(client.write_off(&write_off_req("o-cap-1", 1)).await.0, 200);
    let (status, err) = client.write_off(&write_off_req("o-cap-2", 1)).await;
    assert_eq!((status, code(&err)), (503, Some(protocol::CAPACITY)));
    assert_eq!(client.audit("o-cap-2").await.attempts, 0);
    // The order already kept is still answered.
    assert_eq!(client.write_off(&write_off_req("o-cap-1", 1)).await.0, 200);
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_wait_the_simulated_latency() {
    let latency = Duration::from_millis(100);
    let biller = start_biller(BillerSettings {
        latency_ms_min: 100,
        latency_ms_max: 100,
        ..settings()
    });
    let started = Instant::now();
    assert_eq!(biller.client.query("o-slow").await.0, 404);
    assert!(started.elapsed() >= latency);
    biller.handle.stop().await;
}

#[tokio::test]
async fn invalid_settings_are_refused_at_start() {
    for (settings, field) in [
        (
            BillerSettings {
                failure_rate: f64::NAN,
                ..settings()
            },
            "failure_rate",
        ),
        (
            BillerSettings {
                answer_lost_rate: 1.5,
                ..settings()
            },
            "answer_lost_rate",
        ),
        (
            BillerSettings {
                failure_rate: -0.5,
                ..settings()
            },
            "failure_rate",
        ),
        (
            BillerSettings {
                latency_ms_min: 2,
                latency_ms_max: 1,
                ..settings()
            },
            "latency_ms_min",
        ),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = paycore_biller_sim::start(settings, listener).err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[tokio::test]
async fn the_handle_names_its_address() {
    let biller = start_biller(settings());
    let addr = biller.handle.addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    assert_eq!(
        biller.handle.base_url(),
        format!("http://127.0.0.1:{}", addr.port())
    );
    biller.handle.stop().await;
}
