//! End-to-end tests of reversals: partial then full, idempotent by reversal_id, bounded by
//! the written-off amount, and refused (unknown order, refuse_reversals).

use paycore_biller_sim::BillerSettings;
use paycore_biller_sim::protocol::{self, ReverseRequest};

use crate::common::{code, reverse_req, settings, start_biller, write_off_req};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_then_full_reversal_idempotent_and_bounded() {
    let biller = start_biller(settings());
    assert_eq!(
        biller
            .client
            .write_off(&write_off_req("o-rev", 100))
            .await
            .0,
        200
    );
    let client = &biller.client;

    let with_reason = ReverseRequest {
        reason: Some("refund of a gas top-up".to_owned()),
        ..reverse_req("r1", 40)
    };
    let (status, first) = client.reverse("o-rev", &with_reason).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        (first["reversal_id"].as_str(), first["order_id"].as_str()),
        (Some("r1"), Some("o-rev"))
    );
    assert_eq!(first["amount"], 40);
    assert!(first["reversed_at"].is_string());
    let (_, view) = client.query("o-rev").await;
    assert_eq!(
        (view["reversed_amount"].as_i64(), view["status"].as_str()),
        (Some(40), Some("PARTLY_REVERSED"))
    );

    // The same reversal again changes nothing; the same id for another amount is a conflict.
    let (status, repeat) = client.reverse("o-rev", &reverse_req("r1", 40)).await;
    assert_eq!((status, &repeat), (200, &first));
    let (status, err) = client.reverse("o-rev", &reverse_req("r1", 41)).await;
    assert_eq!((status, code(&err)), (409, Some(protocol::CONFLICT)));
    let (status, err) = client.reverse("o-rev", &reverse_req("r2", 61)).await;
    assert_eq!((status, code(&err)), (422, Some(protocol::EXCEEDS)));
    assert_eq!(client.query("o-rev").await.1["reversed_amount"], 40);

    let (status, _) = client.reverse("o-rev", &reverse_req("r2", 60)).await;
    assert_eq!(status, 200);
    let (_, view) = client.query("o-rev").await;
    assert_eq!(
        (view["reversed_amount"].as_i64(), view["status"].as_str()),
        (Some(100), Some("REVERSED"))
    );
    let (status, err) = client.reverse("o-rev", &reverse_req("r3", 1)).await;
    assert_eq!((status, code(&err)), (422, Some(protocol::EXCEEDS)));

    let audit = client.audit("o-rev").await;
    let reversed: Vec<(&str, i64)> = audit
        .reversals
        .iter()
        .map(|r| (r.reversal_id.as_str(), r.amount))
        .collect();
    assert_eq!(reversed, [("r1", 40), ("r2", 60)]);
    assert_eq!(audit.write_offs[0].reversed_amount, 100);
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_order_or_a_reused_reversal_id_is_refused() {
    let biller = start_biller(settings());
    let client = &biller.client;
    let (status, err) = client.reverse("o-none", &reverse_req("r1", 1)).await;
    assert_eq!((status, code(&err)), (404, Some(protocol::NOT_FOUND)));
    assert!(client.audit("o-none").await.reversals.is_empty());

    for order in ["o-a", "o-b"] {
        assert_eq!(client.write_off(&write_off_req(order, 10)).await.0, 200);
    }
    assert_eq!(
        client.reverse("o-a", &reverse_req("r-shared", 5)).await.0,
        200
    );
    // A reversal id names one reversal across the biller, not one per order.
    let (status, err) = client.reverse("o-b", &reverse_req("r-shared", 5)).await;
    assert_eq!((status, code(&err)), (409, Some(protocol::CONFLICT)));
    assert!(client.audit("o-b").await.reversals.is_empty());
    assert_eq!(client.query("o-b").await.1["reversed_amount"], 0);
    biller.handle.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reversals_reverse_nothing() {
    let biller = start_biller(BillerSettings {
        refuse_reversals: true,
        ..settings()
    });
    let client = &biller.client;
    let (_, applied) = client.write_off(&write_off_req("o-keep", 100)).await;
    for _ in 0..2 {
        let (status, err) = client.reverse("o-keep", &reverse_req("r1", 100)).await;
        assert_eq!(
            (status, code(&err)),
            (409, Some(protocol::REVERSAL_REFUSED))
        );
    }
    let (status, view) = client.query("o-keep").await;
    assert_eq!((status, &view), (200, &applied));
    assert_eq!(view["status"], "APPLIED");
    assert!(client.audit("o-keep").await.reversals.is_empty());
    biller.handle.stop().await;
}
