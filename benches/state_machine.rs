//! The order state machine, pure: creating an order, the pay → paid path, a repeated pay (no
//! change), and a refusal. These run on every request that touches an order actor.

use criterion::{Criterion, criterion_group, criterion_main};
use paycore::domain::{
    Amount, BusinessType, Command, Currency, MerchantId, MerchantOrderNo, NewOrder, Order, OrderId,
    PayMethod, PaySerialNo,
};
use std::hint::black_box;
use time::OffsetDateTime;

fn new_order() -> NewOrder {
    NewOrder {
        merchant_id: MerchantId::parse("demo").expect("valid id"),
        merchant_order_no: MerchantOrderNo::parse("BENCH-1").expect("valid number"),
        amount: Amount::new(12_345).expect("valid amount"),
        currency: Currency::Cny,
        business_type: BusinessType::BillBuy,
        channel: "sim".into(),
        subject: Some("Gas bill".into()),
        notify_url: None,
        expire_seconds: 900,
        fulfillment_required: false,
    }
}

fn paying() -> Command {
    Command::MarkPaying {
        pay_serial_no: PaySerialNo::generate(),
        pay_method: PayMethod::Native,
        channel_payload: serde_json::json!({"code_url": "sim://pay/1"}),
        channel_trade_no: Some("T1".into()),
    }
}

fn bench(c: &mut Criterion) {
    let now = OffsetDateTime::now_utc();
    let mut g = c.benchmark_group("state_machine");
    g.bench_function("create", |b| {
        b.iter(|| Order::create(OrderId::generate(), black_box(new_order()), now))
    });

    let (created, _) = Order::create(OrderId::generate(), new_order(), now);
    let pay = paying();
    let paid = Command::MarkPaid(paycore::domain::ReportedPayment {
        channel_trade_no: "T1".into(),
        amount: 12_345,
        currency: "CNY".into(),
        paid_at: now,
    });
    g.bench_function("pay_then_paid_apply_and_fold", |b| {
        b.iter(|| {
            let mut o = created.clone();
            for cmd in [&pay, &paid] {
                let changes = o.apply(black_box(cmd), now).expect("allowed");
                for ch in &changes {
                    o.on(ch);
                }
            }
            o
        })
    });

    let mut paying_order = created.clone();
    for ch in &paying_order.apply(&pay, now).expect("allowed") {
        paying_order.on(ch);
    }
    g.bench_function("repeat_pay_no_change", |b| {
        b.iter(|| {
            black_box(&paying_order)
                .apply(black_box(&pay), now)
                .expect("repeat")
        })
    });

    let mut paid_order = paying_order.clone();
    for ch in &paid_order.apply(&paid, now).expect("allowed") {
        paid_order.on(ch);
    }
    g.bench_function("refusal_close_paid", |b| {
        b.iter(|| black_box(&paid_order).apply(black_box(&Command::Close), now))
    });
    g.bench_function("pay_step_decision", |b| {
        b.iter(|| black_box(&paying_order).pay_step(now))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
