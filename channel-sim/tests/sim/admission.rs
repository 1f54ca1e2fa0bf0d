//! End-to-end tests of request admission: signatures, QPS cap, capacity, body limits,
//! simulated latency and settings validation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use paycore_channel_sim::SimSettings;
use paycore_channel_sim::protocol;

use crate::PAYMENTS;
use crate::common::{self, Client, SECRET, create_req, fast_settings, start_sim};

// Plain current-thread runtime on purpose: the simulator must run inside any tokio runtime.
#[tokio::test]
async fn bad_signatures_are_refused_and_create_nothing() {
    let sim = start_sim(fast_settings());
    let body = serde_json::to_vec(&create_req("o-sig", 100, "http://127.0.0.1:9/n")).unwrap();
    let url = format!("{}{PAYMENTS}", sim.client.base);

    let unsigned = sim
        .client
        .http
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let (status, err) = common::into_parts(unsigned).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some(protocol::SIGN_ERROR))
    );

    let wrong_key = common::Client::new(sim.client.base.clone(), "not-the-secret");
    let (status, err) = wrong_key
        .send(reqwest::Method::POST, PAYMENTS, body.clone())
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (401, Some(protocol::SIGN_ERROR))
    );

    let stale = time::OffsetDateTime::now_utc().unix_timestamp() - 301;
    let (status, _) = sim
        .client
        .send_at(reqwest::Method::POST, PAYMENTS, body.clone(), stale)
        .await;
    assert_eq!(status, 401);

    let (status, _) = sim.client.get("/sim/v1/payments/o-sig").await;
    assert_eq!(status, 404);
    assert!(sim.client.audit("o-sig").await.payments.is_empty());
    sim.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_qps_cap_answers_frequency_limited() {
    let sim = start_sim(SimSettings {
        qps: 1,
        burst: 2,
        ..fast_settings()
    });
    let client = Arc::new(Client::new(sim.handle.base_url(), SECRET));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let client = Arc::clone(&client);
        requests.spawn(async move { client.get("/sim/v1/payments/nobody").await });
    }
    let answers = requests.join_all().await;
    let limited = answers.iter().filter(|(status, _)| *status == 429).count();
    assert!(limited >= 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s == 429)
            .all(|(_, b)| b["code"] == protocol::FREQUENCY_LIMITED)
    );
    // The audit stays open whatever the load.
    assert!(sim.client.audit("nobody").await.payments.is_empty());
    sim.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_and_malformed_requests_are_refused() {
    let sim = start_sim(SimSettings {
        max_payments: 1,
        ..fast_settings()
    });
    let url = "http://127.0.0.1:9/notify";
    assert_eq!(
        sim.client
            .post(PAYMENTS, &create_req("o-cap-1", 1, url))
            .await
            .0,
        200
    );
    let (status, err) = sim
        .client
        .post(PAYMENTS, &create_req("o-cap-2", 1, url))
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (503, Some(protocol::CAPACITY))
    );

    let (status, err) = sim
        .client
        .send(reqwest::Method::POST, PAYMENTS, b"{not json".to_vec())
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some(protocol::INVALID_REQUEST))
    );
    let huge = vec![b' '; 64 * 1024 + 1];
    let (status, err) = sim.client.send(reqwest::Method::POST, PAYMENTS, huge).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (413, Some(protocol::INVALID_REQUEST))
    );
    let no_query = sim
        .client
        .http
        .get(format!("{}{PAYMENTS}", sim.client.base));
    let (status, err) = common::into_parts(no_query.send().await.unwrap()).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (400, Some(protocol::INVALID_REQUEST))
    );
    let (status, err) = sim.client.get("/sim/v1/nowhere").await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some(protocol::NOT_FOUND))
    );
    sim.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_endpoints_wait_the_simulated_latency() {
    let latency = Duration::from_millis(100);
    let sim = start_sim(SimSettings {
        latency_ms_min: 100,
        latency_ms_max: 100,
        ..fast_settings()
    });
    let started = Instant::now();
    assert_eq!(sim.client.get("/sim/v1/payments/nobody").await.0, 404);
    assert!(started.elapsed() >= latency);
    sim.handle.stop().await;
}

#[tokio::test]
async fn invalid_settings_are_refused_at_start() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let settings = SimSettings {
        fail_rate: 2.0,
        ..fast_settings()
    };
    let err = paycore_channel_sim::start(settings, listener)
        .err()
        .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("fail_rate"));
}
