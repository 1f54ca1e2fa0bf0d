//! The SQLite writer's group commit: N order creates issued at once against a store in a temp
//! directory, as N concurrent HTTP creates would. The writer takes what is queued into one
//! transaction and one fsync, so the time per create falls as N grows. Tokens are issued
//! outside the timed part. `command_create_*` does the same for Kafka create commands: each
//! order is stored with its command's reply (the created order's view, about 1 KiB) under a
//! random request id, as gateways send them.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use paycore::config::{SqliteSettings, Synchronous};
use paycore::domain::{
    Amount, BusinessType, Currency, Event, MerchantId, MerchantOrderNo, NewOrder, Order, OrderId,
    RequestId, SubmitToken,
};
use paycore::metrics::Metrics;
use paycore::storage::sqlite::SqliteStore;
use paycore::storage::{
    CommandReply, CommandStore, CreateOutcome, OrderRecords, OrderStore, TokenRecord,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

static SEQ: AtomicU64 = AtomicU64::new(0);

fn order() -> (Order, Vec<Event>) {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let new = NewOrder {
        merchant_id: MerchantId::parse("demo").expect("valid id"),
        merchant_order_no: MerchantOrderNo::parse(&format!("B-{n}")).expect("valid number"),
        amount: Amount::new(500).expect("valid amount"),
        currency: Currency::Cny,
        business_type: BusinessType::IotBuy,
        channel: "sim".into(),
        subject: None,
        notify_url: None,
        expire_seconds: 900,
        fulfillment_required: false,
    };
    let (o, change) = Order::create(OrderId::generate(), new, OffsetDateTime::now_utc());
    let events = Event::for_change(&o, &change).into_iter().collect();
    (o, events)
}

/// A create command's stored reply for `o`: 201 with the order's view, as the Kafka path
/// stores it, under a random request id.
fn command((o, e): (Order, Vec<Event>)) -> (CommandReply, (Order, Vec<Event>)) {
    let body = serde_json::to_vec(&paycore::domain::view::OrderView::from(&o)).expect("view");
    let reply = CommandReply {
        merchant_id: o.merchant_id.clone(),
        request_id: RequestId::parse(&format!("req-{:032x}", rand::random::<u128>()))
            .expect("valid id"),
        command_hash: "0".repeat(64),
        status: 201,
        body,
        order_id: Some(o.order_id.clone()),
        created_at: OffsetDateTime::now_utc(),
    };
    (reply, (o, e))
}

async fn tokens(store: &SqliteStore, n: usize) -> Vec<SubmitToken> {
    let issue = (0..n).map(|_| async {
        let t = SubmitToken::generate();
        store
            .issue_token(TokenRecord {
                token: t.clone(),
                merchant_id: MerchantId::parse("demo").expect("valid id"),
                expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(30),
            })
            .await
            .expect("token stored");
        t
    });
    futures::future::join_all(issue).await
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("sqlite_writer");
    g.measurement_time(Duration::from_secs(5));
    for sync in [Synchronous::Full, Synchronous::Normal] {
        let dir = tempfile::tempdir().expect("temp dir");
        let settings = SqliteSettings {
            path: dir.path().join("bench.db").to_string_lossy().into_owned(),
            synchronous: sync,
            ..SqliteSettings::default()
        };
        let store = rt.block_on(async {
            Arc::new(SqliteStore::open(&settings, Arc::new(Metrics::new())).expect("store opens"))
        });
        for batch in [1usize, 16, 128, 512] {
            g.throughput(Throughput::Elements(batch as u64));
            let id = BenchmarkId::new(
                format!("create_batch_{}", sync.pragma().to_lowercase()),
                batch,
            );
            g.bench_with_input(id, &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let toks = tokens(&store, batch).await;
                            let work: Vec<_> = toks.into_iter().map(|t| (t, order())).collect();
                            let started = Instant::now();
                            let creates = work.into_iter().map(|(t, (o, e))| {
                                let store = store.clone();
                                tokio::spawn(async move {
                                    // As the service does: the order's expiry timer in the same write.
                                    let timers = paycore::domain::timer::on_create(&o);
                                    store
                                        .create_order(t, o, e, timers, OffsetDateTime::now_utc())
                                        .await
                                })
                            });
                            for r in futures::future::join_all(creates).await {
                                let outcome = r.expect("task").expect("stored");
                                assert_eq!(outcome, CreateOutcome::Created);
                            }
                            total += started.elapsed();
                        }
                        total
                    })
                })
            });
        }
        for batch in [16usize, 128] {
            g.throughput(Throughput::Elements(batch as u64));
            let id = BenchmarkId::new(
                format!("command_create_batch_{}", sync.pragma().to_lowercase()),
                batch,
            );
            g.bench_with_input(id, &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let work: Vec<_> = (0..batch).map(|_| command(order())).collect();
                            let started = Instant::now();
                            let creates = work.into_iter().map(|(reply, (o, e))| {
                                let store = store.clone();
                                tokio::spawn(async move {
                                    let timers = paycore::domain::timer::on_create(&o);
                                    store.create_order_for_command(reply, o, e, timers).await
                                })
                            });
                            for r in futures::future::join_all(creates).await {
                                let outcome = r.expect("task").expect("stored");
                                assert_eq!(outcome, CreateOutcome::Created);
                            }
                            total += started.elapsed();
                        }
                        total
                    })
                })
            });
        }
        rt.block_on(store.close());
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
