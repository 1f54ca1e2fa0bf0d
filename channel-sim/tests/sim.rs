//! End-to-end tests of the simulator over loopback HTTP: payment results and their callbacks
//! (retried, duplicated, lost, bounded), close and refunds. Admission tests live in `admission`.

#[path = "sim/admission.rs"]
mod admission;
mod common;

use common::{Receiver, create_req, fast_settings, start_sim, wait_until};
use paycore_channel_sim::SimSettings;
use paycore_channel_sim::protocol::{self, PaymentStatus, RefundRequest};
use serde_json::json;

/// Path of create (POST) and audit (GET).
const PAYMENTS: &str = "/sim/v1/payments";
/// Path of refunds.
const REFUNDS: &str = "/sim/v1/refunds";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_pays_then_calls_back_signed_and_charges_once() {
    let sim = start_sim(fast_settings());
    let receiver = Receiver::start(0);
    let (status, view) = sim
        .client
        .post(PAYMENTS, &create_req("o-pay", 100, &receiver.notify_url))
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "NOTPAY");
    let trade_no = view["trade_no"].as_str().unwrap();
    assert_eq!(view["code_url"], format!("sim://pay/{trade_no}"));

    let deliveries = receiver.wait_for("o-pay", 1).await;
    let callback = &deliveries[0];
    assert!(callback.signature_valid);
    assert_eq!(callback.body.status, PaymentStatus::Success);
    assert_eq!(callback.body.trade_no, trade_no);
    assert_eq!(callback.body.amount, 100);
    assert!(callback.body.paid_at.is_some());

    let (_, view) = sim.client.get("/sim/v1/payments/o-pay").await;
    assert_eq!(view["status"], "SUCCESS");
    let audit = sim.client.audit("o-pay").await;
    assert_eq!(audit.charges.len(), 1);
    assert_eq!(audit.charges[0].amount, 100);

    // Idempotent create after payment: same payment, nothing new charged.
    let (status, again) = sim
        .client
        .post(PAYMENTS, &create_req("o-pay", 100, &receiver.notify_url))
        .await;
    assert_eq!((status, again["trade_no"].as_str()), (200, Some(trade_no)));
    assert_eq!(sim.client.audit("o-pay").await.charges.len(), 1);
    sim.handle.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_on_out_trade_no() {
    let sim = start_sim(SimSettings {
        pay_delay_ms_min: 50,
        pay_delay_ms_max: 50,
        ..fast_settings()
    });
    let receiver = Receiver::start(0);
    let request = create_req("o-idem", 100, &receiver.notify_url);
    let (_, first) = sim.client.post(PAYMENTS, &request).await;
    let (status, second) = sim.client.post(PAYMENTS, &request).await;
    assert_eq!(status, 200);
    assert_eq!(first["trade_no"], second["trade_no"]);

    let other_amount = create_req("o-idem", 101, &receiver.notify_url);
    let (status, err) = sim.client.post(PAYMENTS, &other_amount).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::OUT_TRADE_NO_USED))
    );
    let mut other_currency = request.clone();
    other_currency.currency = "USD".to_owned();
    let (status, err) = sim.client.post(PAYMENTS, &other_currency).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::OUT_TRADE_NO_USED))
    );

    receiver.wait_for("o-idem", 1).await;
    assert_eq!(sim.client.audit("o-idem").await.charges.len(), 1);
    sim.handle.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_before_pay_prevents_charge_and_callback() {
    let sim = start_sim(SimSettings {
        pay_delay_ms_min: 300,
        pay_delay_ms_max: 300,
        ..fast_settings()
    });
    let receiver = Receiver::start(0);
    sim.client
        .post(PAYMENTS, &create_req("o-closed", 100, &receiver.notify_url))
        .await;
    let close_path = "/sim/v1/payments/o-closed/close";
    let (status, view) = sim.client.post(close_path, &json!({})).await;
    assert_eq!((status, view["status"].as_str()), (200, Some("CLOSED")));
    let (status, again) = sim
        .client
        .send(reqwest::Method::POST, close_path, Vec::new())
        .await;
    assert_eq!((status, again), (200, view));

    // A control payment created later with the same pay delay settles after the closed one's
    // timer fired, so once its callback arrives the closed payment had its chance to misbehave.
    sim.client
        .post(
            PAYMENTS,
            &create_req("o-control", 100, &receiver.notify_url),
        )
        .await;
    receiver.wait_for("o-control", 1).await;
    assert!(receiver.deliveries_for("o-closed").is_empty());
    assert_eq!(sim.client.status_of("o-closed").await, "CLOSED");
    assert!(sim.client.audit("o-closed").await.charges.is_empty());

    let (status, err) = sim
        .client
        .post(PAYMENTS, &create_req("o-closed", 100, &receiver.notify_url))
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::ORDERCLOSED))
    );
    let refund = RefundRequest {
        out_trade_no: "o-closed".into(),
        out_refund_no: "r".into(),
        amount: 1,
        trade_no: None,
    };
    let (status, err) = sim.client.post(REFUNDS, &refund).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::ORDERCLOSED))
    );
    sim.handle.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_pay_is_refused() {
    let sim = start_sim(fast_settings());
    let receiver = Receiver::start(0);
    sim.client
        .post(PAYMENTS, &create_req("o-late", 100, &receiver.notify_url))
        .await;
    receiver.wait_for("o-late", 1).await;
    let (status, err) = sim
        .client
        .post("/sim/v1/payments/o-late/close", &json!({}))
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::ORDERPAID))
    );
    let (status, err) = sim
        .client
        .post("/sim/v1/payments/nobody/close", &json!({}))
        .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some(protocol::NOT_FOUND))
    );
    sim.handle.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_payments_call_back_payerror_without_charge() {
    let sim = start_sim(SimSettings {
        fail_rate: 1.0,
        ..fast_settings()
    });
    let receiver = Receiver::start(0);
    sim.client
        .post(PAYMENTS, &create_req("o-fail", 100, &receiver.notify_url))
        .await;
    let deliveries = receiver.wait_for("o-fail", 1).await;
    assert!(deliveries[0].signature_valid);
    assert_eq!(deliveries[0].body.status, PaymentStatus::Payerror);
    assert!(deliveries[0].body.failure_reason.is_some());
    assert!(sim.client.audit("o-fail").await.charges.is_empty());
    let (status, view) = sim.client.get("/sim/v1/payments/o-fail").await;
    assert_eq!((status, view["status"].as_str()), (200, Some("PAYERROR")));
    let refund = RefundRequest {
        out_trade_no: "o-fail".into(),
        out_refund_no: "r".into(),
        amount: 1,
        trade_no: None,
    };
    let (status, err) = sim.client.post(REFUNDS, &refund).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::NOT_PAID))
    );
    let (status, view) = sim
        .client
        .post("/sim/v1/payments/o-fail/close", &json!({}))
        .await;
    assert_eq!((status, view["status"].as_str()), (200, Some("CLOSED")));
    sim.handle.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_callbacks_arrive_twice_with_one_event_id() {
    let sim = start_sim(SimSettings {
        duplicate_callback_rate: 1.0,
        ..fast_settings()
    });
    let receiver = Receiver::start(0);
    sim.client
        .post(PAYMENTS, &create_req("o-dup", 100, &receiver.notify_url))
        .await;
    let deliveries = receiver.wait_for("o-dup", 2).await;
    assert_eq!(deliveries[0].body, deliveries[1].body);
    assert!(
        deliveries
            .iter()
            .all(|d| d.signature_valid && d.acknowledged)
    );
    assert_eq!(sim.client.audit("o-dup").await.charges.len(), 1);
    sim.handle.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_callbacks_are_never_sent_but_the_result_is_queryable() {
    let sim = start_sim(SimSettings {
        lost_callback_rate: 1.0,
        ..fast_settings()
    });
    let receiver = Receiver::start(0);
    sim.client
        .post(PAYMENTS, &create_req("o-lost", 100, &receiver.notify_url))
        .await;
    wait_until("o-lost paid", || async {
        sim.client.status_of("o-lost").await == "SUCCESS"
    })
    .await;
    assert_eq!(sim.client.audit("o-lost").await.charges.len(), 1);
    // Stopping ends the simulator's background work, so the receiver's record is final.
    sim.handle.stop().await;
    assert!(receiver.deliveries().is_empty());
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_callbacks_are_retried_until_acknowledged() {
    let sim = start_sim(fast_settings());
    let receiver = Receiver::start(2);
    sim.client
        .post(PAYMENTS, &create_req("o-retry", 100, &receiver.notify_url))
        .await;
    let deliveries = receiver.wait_for("o-retry", 3).await;
    let acknowledged: Vec<bool> = deliveries.iter().map(|d| d.acknowledged).collect();
    assert_eq!(acknowledged, [false, false, true]);
    assert!(
        deliveries
            .iter()
            .all(|d| d.signature_valid && d.body == deliveries[0].body)
    );
    sim.handle.stop().await;
    assert_eq!(
        receiver.deliveries().len(),
        3,
        "no attempt after the acknowledgement"
    );
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_are_idempotent_and_bounded_by_the_paid_amount() {
    let sim = start_sim(fast_settings());
    let receiver = Receiver::start(0);
    sim.client
        .post(PAYMENTS, &create_req("o-refund", 100, &receiver.notify_url))
        .await;
    receiver.wait_for("o-refund", 1).await;

    let refund = |no: &str, amount| RefundRequest {
        out_trade_no: "o-refund".into(),
        out_refund_no: no.into(),
        amount,
        trade_no: None,
    };
    let (status, first) = sim.client.post(REFUNDS, &refund("r1", 60)).await;
    assert_eq!((status, first["status"].as_str()), (200, Some("SUCCESS")));
    let (status, repeat) = sim.client.post(REFUNDS, &refund("r1", 60)).await;
    assert_eq!((status, &repeat), (200, &first));
    let (status, err) = sim.client.post(REFUNDS, &refund("r2", 41)).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::REFUND_EXCEEDS))
    );
    let (_, view) = sim.client.get("/sim/v1/payments/o-refund").await;
    assert_eq!(view["refunded_amount"], 60);
    assert_eq!(sim.client.audit("o-refund").await.refunds.len(), 1);
    // A refund can be asked about by its number.
    let (status, found) = sim.client.get("/sim/v1/refunds/r1").await;
    assert_eq!((status, &found), (200, &first));
    let (status, err) = sim.client.get("/sim/v1/refunds/never").await;
    assert_eq!(
        (status, err["code"].as_str()),
        (404, Some(protocol::NOT_FOUND))
    );

    // A payment still waiting for its payer cannot be refunded.
    let slow = start_sim(SimSettings {
        pay_delay_ms_min: 60_000,
        pay_delay_ms_max: 60_000,
        ..fast_settings()
    });
    slow.client
        .post(PAYMENTS, &create_req("o-refund", 100, &receiver.notify_url))
        .await;
    let (status, err) = slow.client.post(REFUNDS, &refund("r1", 1)).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (409, Some(protocol::NOT_PAID))
    );
    slow.handle.stop().await;
    sim.handle.stop().await;
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_over_the_in_flight_bound_are_dropped() {
    let sim = start_sim(SimSettings {
        max_pending_callbacks: 1,
        callback_retry_base_ms: 60_000,
        ..fast_settings()
    });
    // Never acknowledges, so the first delivery holds the only slot while it waits to retry.
    let receiver = Receiver::start(u32::MAX);
    sim.client
        .post(PAYMENTS, &create_req("o-first", 1, &receiver.notify_url))
        .await;
    receiver.wait_for("o-first", 1).await;
    sim.client
        .post(PAYMENTS, &create_req("o-second", 1, &receiver.notify_url))
        .await;
    wait_until("o-second paid", || async {
        sim.client.status_of("o-second").await == "SUCCESS"
    })
    .await;
    sim.handle.stop().await;
    assert!(receiver.deliveries_for("o-second").is_empty());
    assert_eq!(receiver.deliveries_for("o-first").len(), 1);
    receiver.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_refund_errors_answer_systemerror_and_a_double_charge_calls_back_twice() {
    let sim = start_sim(SimSettings {
        refund_errors_per_refund: 1,
        refund_error_after_recording: true,
        double_charge_rate: 1.0,
        wrong_amount_rate: 1.0,
        ..fast_settings()
    });
    let receiver = Receiver::start(0);
    sim.client
        .post(PAYMENTS, &create_req("o-faults", 100, &receiver.notify_url))
        .await;
    let deliveries = receiver.wait_for("o-faults", 2).await;
    let charged: Vec<i64> = deliveries.iter().map(|d| d.body.amount).collect();
    assert_eq!(charged, vec![101, 101], "both charges are the wrong amount");
    assert_ne!(deliveries[0].body.trade_no, deliveries[1].body.trade_no);
    let audit = sim.client.audit("o-faults").await;
    assert_eq!(audit.charges.len(), 2);

    let refund = RefundRequest {
        out_trade_no: "o-faults".into(),
        out_refund_no: "rf".into(),
        amount: 101,
        trade_no: Some(deliveries[1].body.trade_no.clone()),
    };
    let (status, err) = sim.client.post(REFUNDS, &refund).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (503, Some(protocol::SYSTEMERROR))
    );
    // The answer was lost, not the refund.
    let (status, found) = sim.client.get("/sim/v1/refunds/rf").await;
    assert_eq!(
        (status, found["trade_no"].as_str()),
        (200, Some(deliveries[1].body.trade_no.as_str()))
    );
    let (status, again) = sim.client.post(REFUNDS, &refund).await;
    assert_eq!((status, &again), (200, &found));
    assert_eq!(sim.client.audit("o-faults").await.refunds.len(), 1);
    sim.handle.stop().await;
    receiver.stop().await;
}
