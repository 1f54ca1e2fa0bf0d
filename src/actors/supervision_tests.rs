//! Supervision: a panicking order actor is replaced, its caller gets an error (never a hang),
//! and the next command reloads the order from storage.

use crate::actors::{OrderError, PayRequest};
use crate::app::Application;
use crate::config::Settings;
use crate::domain::*;
use std::time::Duration;

fn settings(dir: &tempfile::TempDir) -> Settings {
    let mut s = Settings::default();
    s.server.port = 0;
    s.server.workers = 1;
    s.simulator.port = 0;
    s.simulator.biller_port = 0;
    s.actors.call_timeout_ms = 5_000;
    s.storage.sqlite.path = dir.path().join("s.db").to_string_lossy().into_owned();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_order_actor_is_restarted_and_its_caller_gets_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let app = Application::build(settings(&dir)).await.unwrap();
    let orders = app.orders().clone();
    let merchant = MerchantId::parse("demo").unwrap();
    let token = orders.issue_token(merchant.clone()).await.unwrap().token;
    let new = NewOrder::for_test("demo", "SUP-1", 100);
    let order = orders.create(token, new).await.unwrap();
    let id = order.order_id.clone();
    // Warm the actor so the panic hits a live one holding cached state.
    let closed_err = orders
        .close(MerchantId::parse("other").unwrap(), id.clone())
        .await;
    assert!(matches!(closed_err, Err(OrderError::NotFound)));

    orders.inject_panic(id.clone()).await;
    let pay = PayRequest {
        pay_method: PayMethod::Native,
        auth_code: None,
    };
    let caught = tokio::time::timeout(
        Duration::from_secs(10),
        orders.pay(merchant.clone(), id.clone(), pay.clone()),
    )
    .await;
    match caught {
        Ok(Err(OrderError::Unavailable(_))) => {}
        other => panic!("caller of a failed actor should get Unavailable at once, got {other:?}"),
    }
    let stored = orders.get(&merchant, &id).await.unwrap();
    assert_eq!(
        (stored.status, stored.version),
        (OrderStatus::Created, 1),
        "the failed call changed nothing"
    );

    // The replacement answers, with state reloaded from storage.
    let paying = orders.pay(merchant.clone(), id.clone(), pay).await.unwrap();
    // Version 2 is the pay intent, recorded before the channel is called.
    assert_eq!((paying.status, paying.version), (OrderStatus::Paying, 3));
    assert_eq!(orders.live_actors().await, Some(1));
    app.shutdown().await;
}
