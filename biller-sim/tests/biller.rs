//! End-to-end tests of the biller over loopback HTTP: write-offs (idempotent, conflicting,
//! failing transiently, permanently, or losing their answer). Reversals and admission
//! (signatures, limits, routes, settings) live in their own files.

#[path = "biller/admission.rs"]
mod admission;
mod common;
#[path = "biller/reversals.rs"]
mod reversals;

use common::{code, settings, start_biller, write_off_req};
use paycore_biller_sim::BillerSettings;
use paycore_biller_sim::protocol::{self, WriteOffStatus, WriteOffView};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_write_off_credits_once() {
    let biller = start_biller(settings());
    let request = write_off_req("o-idem", 1_250);
    let (status, first) = biller.client.write_off(&request).await;
    assert_eq!(status, 200, "{first}");
    let view: WriteOffView = serde_json::from_value(first.clone()).unwrap();
    assert_eq!(
        (view.order_id.as_str(), view.merchant_id.as_str()),
        ("o-idem", "demo")
    );
    assert_eq!((view.amount, view.currency.as_str()), (1_250, "CNY"));
    assert_eq!(
        (view.reversed_amount, view.status),
        (0, WriteOffStatus::Applied)
    );
    time::OffsetDateTime::parse(
        &view.applied_at,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();

    let (status, again) = biller.client.write_off(&request).await;
    assert_eq!((status, &again), (200, &first));
    let (status, found) = biller.client.query("o-idem").await;
    assert_eq!((status, &found), (200, &first));

    let audit = biller.client.audit("o-idem").await;
    assert_eq!(audit.attempts, 2, "the look-up is not an attempt");
    assert_eq!(audit.write_offs, vec![view]);
    assert!(audit.reversals.is_empty());
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_amount_or_currency_for_the_same_order_conflicts() {
    let biller = start_biller(settings());
    let (status, first) = biller.client.write_off(&write_off_req("o-conf", 100)).await;
    assert_eq!(status, 200);
    let (status, err) = biller.client.write_off(&write_off_req("o-conf", 101)).await;
    assert_eq!((status, code(&err)), (409, Some(protocol::CONFLICT)));
    let mut other_currency = write_off_req("o-conf", 100);
    other_currency.currency = "USD".to_owned();
    let (status, err) = biller.client.write_off(&other_currency).await;
    assert_eq!((status, code(&err)), (409, Some(protocol::CONFLICT)));

    let audit = biller.client.audit("o-conf").await;
    assert_eq!(audit.attempts, 3);
    assert_eq!(audit.write_offs.len(), 1);
    assert_eq!(serde_json::to_value(&audit.write_offs[0]).unwrap(), first);
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_first_two_answers_two_system_errors_then_credits_once() {
    let biller = start_biller(BillerSettings {
        fail_first: 2,
        ..settings()
    });
    let request = write_off_req("o-flaky", 300);
    for attempt in 1..=2 {
        let (status, err) = biller.client.write_off(&request).await;
        assert_eq!(
            (status, code(&err)),
            (503, Some(protocol::SYSTEM_ERROR)),
            "attempt {attempt}"
        );
        let (status, _) = biller.client.query("o-flaky").await;
        assert_eq!(status, 404, "nothing recorded after attempt {attempt}");
    }
    let (status, view) = biller.client.write_off(&request).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("APPLIED")));
    // Each order has its own count of failures.
    let (status, _) = biller.client.write_off(&write_off_req("o-other", 1)).await;
    assert_eq!(status, 503);

    let audit = biller.client.audit("o-flaky").await;
    assert_eq!((audit.attempts, audit.write_offs.len()), (3, 1));
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_refuses_every_time_and_records_nothing() {
    let biller = start_biller(BillerSettings {
        permanent_failure: true,
        ..settings()
    });
    for _ in 0..3 {
        let (status, err) = biller.client.write_off(&write_off_req("o-dead", 100)).await;
        assert_eq!((status, code(&err)), (422, Some(protocol::ACCOUNT_INVALID)));
    }
    let (status, err) = biller.client.query("o-dead").await;
    assert_eq!((status, code(&err)), (404, Some(protocol::NOT_FOUND)));
    let audit = biller.client.audit("o-dead").await;
    assert_eq!(audit.attempts, 3);
    assert!(audit.write_offs.is_empty());
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_recorded_queryable_and_answered_on_retry() {
    let biller = start_biller(BillerSettings {
        answer_lost_rate: 1.0,
        ..settings()
    });
    let request = write_off_req("o-lost", 500);
    let (status, err) = biller.client.write_off(&request).await;
    assert_eq!((status, code(&err)), (503, Some(protocol::SYSTEM_ERROR)));

    let (status, found) = biller.client.query("o-lost").await;
    assert_eq!((status, found["amount"].as_i64()), (200, Some(500)));
    let (status, retried) = biller.client.write_off(&request).await;
    assert_eq!((status, &retried), (200, &found));

    let audit = biller.client.audit("o-lost").await;
    assert_eq!((audit.attempts, audit.write_offs.len()), (2, 1));
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_rate_of_one_fails_every_call_and_records_nothing() {
    let biller = start_biller(BillerSettings {
        failure_rate: 1.0,
        ..settings()
    });
    for _ in 0..3 {
        let (status, err) = biller.client.write_off(&write_off_req("o-down", 100)).await;
        assert_eq!((status, code(&err)), (503, Some(protocol::SYSTEM_ERROR)));
    }
    let audit = biller.client.audit("o-down").await;
    assert_eq!(audit.attempts, 3);
    assert!(audit.write_offs.is_empty());
    assert_eq!(biller.client.query("o-down").await.0, 404);
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_order_is_not_found_and_audits_empty() {
    let biller = start_biller(settings());
    let (status, err) = biller.client.query("o-never").await;
    assert_eq!((status, code(&err)), (404, Some(protocol::NOT_FOUND)));
    let audit = biller.client.audit("o-never").await;
    assert_eq!(audit.order_id, "o-never");
    assert_eq!(audit.attempts, 0);
    assert!(audit.write_offs.is_empty() && audit.reversals.is_empty());
    biller.handle.stop().await;
}
