//! What access control adds to a consumer's `/lookup` once its grant is
//! known (auth server mode, a keep-alive connection), piece by piece:
//!
//! - `bearer_parse`: reading `Authorization: Bearer <secret>`;
//! - `remembered_hit`: the connection's remembered grant (lock, clock,
//!   constant-time comparison of the secret, reference count);
//! - `may_subscribe`: the grant's topic patterns against the topic, for a
//!   grant of everything (`.*`) and of a name rule (`^orders_[0-9]+$`
//!   among three authorizations, the match in the last);
//! - `per_lookup`: all three, what one granted lookup costs on top of an
//!   open server's (which pays one branch: no access flag).
//!
//! Run: `cargo bench --bench access`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use nsqlookupd::access::Remembered;
use nsqlookupd::access::auth::parse_answer;
use nsqlookupd::access::bearer::Presented;

const HEADER: &[u8] = b"Bearer consumer-secret-0123456789abcdef";
const SECRET: &str = "consumer-secret-0123456789abcdef";

fn grant(body: &str) -> nsqlookupd::access::auth::Grant {
    parse_answer(body.as_bytes(), Instant::now()).expect("a valid answer")
}

fn bench(c: &mut Criterion) {
    let everything = grant(
        r#"{"ttl":3600,"identity":"i","authorizations":[{"topic":".*","channels":[".*"],"permissions":["subscribe"]}]}"#,
    );
    let rule = grant(
        r#"{"ttl":3600,"identity":"i","authorizations":[
            {"topic":"^billing$","channels":[".*"],"permissions":["subscribe"]},
            {"topic":"^audit_.*","channels":["^ops$"],"permissions":["subscribe","publish"]},
            {"topic":"^orders_[0-9]+$","channels":[".*"],"permissions":["subscribe"]}]}"#,
    );
    let remembered = Remembered::default();
    remembered.set(SECRET, &everything);
    let mut g = c.benchmark_group("access");
    g.bench_function("bearer_parse", |b| {
        b.iter(|| Presented::parse(black_box(HEADER)))
    });
    g.bench_function("remembered_hit", |b| {
        b.iter(|| remembered.get(black_box(SECRET), Instant::now()))
    });
    g.bench_function("may_subscribe/everything", |b| {
        b.iter(|| everything.may_subscribe(black_box("orders_123")))
    });
    g.bench_function("may_subscribe/name_rule", |b| {
        b.iter(|| rule.may_subscribe(black_box("orders_123")))
    });
    g.bench_function("per_lookup", |b| {
        b.iter(|| {
            let Presented::Secret(s) = Presented::parse(black_box(HEADER)) else {
                unreachable!()
            };
            let grant = remembered.get(s, Instant::now()).expect("remembered");
            grant.may_subscribe(black_box("orders_123"))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
