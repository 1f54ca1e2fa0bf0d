//! Request signing as API.md defines it: the canonical string and hex(HMAC-SHA256). The server
//! does the same work to verify every `/v1` request, so this is a floor under each request.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use paycore::http::auth::{canonical, sign};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let secret = b"demo-secret-change-me";
    let create = br#"{"submit_token":"tok_01HZX8J4Q6W2M3N5P7R9S1T3V5","merchant_order_no":"LT-18f3c2a1-123456","amount":12345,"business_type":"BillBuy","channel":"sim"}"#;
    let mut g = c.benchmark_group("signing");
    for (name, method, path, body) in [
        (
            "get_no_body",
            "GET",
            "/v1/orders/ord_01HZX8J4Q6W2M3N5P7R9S1T3V5",
            &b""[..],
        ),
        ("create_body", "POST", "/v1/orders", &create[..]),
        ("body_16k", "POST", "/v1/orders", &[b'x'; 16 * 1024][..]),
    ] {
        g.throughput(Throughput::Bytes(body.len() as u64 + path.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let m = canonical(
                    method,
                    black_box(path),
                    "1767225600",
                    "n0123456789abcdef",
                    black_box(body),
                );
                sign(secret, &m)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
