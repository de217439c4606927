//! Micro-benchmarks of the per-request pieces of cutover's hot path.
//!
//! Every request runs these once: the route lookup ([`RouteTable::find`]),
//! the pool choice ([`Split::pick_weighted`], or [`bucket_of`] +
//! [`Split::pick_bucket`] for a sticky user), the backend choice
//! ([`Pool::pick`]) and the header rewrite ([`strip_hop_by_hop`] +
//! [`set_forwarded`]). They are measured through the public API only, on
//! inputs shaped like production: a table of 21 routes over exact, wildcard
//! and any hosts, a canary split, a pool of four backends, and a browser's
//! request headers.
//!
//! Each group is kept short (about 2 s of measurement, few samples) so that
//! `cargo bench --bench hot_path` finishes in a minute or two; pass
//! criterion's own flags after `--` (e.g. `--measurement-time 10`) for
//! tighter numbers. Randomness is a seeded `SmallRng`, so runs compare.

#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use rand::SeedableRng;

use cutover::config::{BackendAddr, HostMatch, LbPolicy, Scheme};
use cutover::headers::{set_forwarded, strip_hop_by_hop};
use cutover::pool::{Backend, Pool};
use cutover::route::RouteTable;
use cutover::split::{bucket_of, Split};

/// Short groups: the point is a quick regression signal, not a paper.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
}

/// 21 routes: exact hosts with and without path prefixes, wildcard
/// suffixes of two depths, and catch-all routes for any host.
fn route_table() -> RouteTable {
    let exact = |h: &str| HostMatch::Exact(h.to_owned());
    let wildcard = |suffix: &str| HostMatch::Wildcard(suffix.to_owned());
    let routes: Vec<(HostMatch, &str)> = vec![
        (exact("shop.example.com"), "/"),
        (exact("shop.example.com"), "/api"),
        (exact("shop.example.com"), "/api/v2"),
        (exact("shop.example.com"), "/static/"),
        (exact("www.example.com"), "/"),
        (exact("www.example.com"), "/blog"),
        (exact("auth.example.com"), "/"),
        (exact("auth.example.com"), "/oauth2"),
        (exact("admin.example.org"), "/"),
        (exact("api.example.org"), "/v1"),
        (exact("api.example.org"), "/v2"),
        (exact("10.0.0.1"), "/"),
        (wildcard(".tenants.example.com"), "/"),
        (wildcard(".tenants.example.com"), "/api"),
        (wildcard(".example.com"), "/"),
        (wildcard(".example.com"), "/api"),
        (wildcard(".example.org"), "/"),
        (HostMatch::Any, "/healthz"),
        (HostMatch::Any, "/metrics"),
        (HostMatch::Any, "/api"),
        (HostMatch::Any, "/internal"),
    ];
    RouteTable::new(routes.iter().map(|(host, prefix)| (host, *prefix)))
}

fn route_find(c: &mut Criterion) {
    let table = route_table();
    let mut group = c.benchmark_group("route_find");
    let cases: [(&str, Option<&str>, &str); 5] = [
        ("exact_hit", Some("shop.example.com:443"), "/api/v2/orders/42"),
        ("wildcard_hit", Some("Acme.Tenants.Example.com"), "/api/users"),
        ("any_hit", Some("unknown.example.net"), "/api/items"),
        ("no_host", None, "/internal/debug"),
        ("miss", Some("unknown.example.net"), "/nothing/here"),
    ];
    for (name, host, path) in cases {
        group.bench_function(name, |b| b.iter(|| table.find(black_box(host), black_box(path))));
    }
    // A sidecar: no route names a host, so the host is never looked at.
    let sidecar = RouteTable::new([(&HostMatch::Any, "/api"), (&HostMatch::Any, "/")]);
    group.bench_function("sidecar_no_host_routes", |b| {
        b.iter(|| sidecar.find(black_box(Some("app.default.svc:8080")), black_box("/api/v2/orders/42")))
    });
    group.finish();
}

fn split_pick(c: &mut Criterion) {
    let canary = Split::new(vec![90, 10]);
    let three = Split::new(vec![70, 20, 10]);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut group = c.benchmark_group("split");
    group.bench_function("weighted_2_pools", |b| b.iter(|| canary.pick_weighted(black_box(&mut rng))));
    group.bench_function("weighted_3_pools", |b| b.iter(|| three.pick_weighted(black_box(&mut rng))));
    // A sticky user: hash the cookie's token into a bucket, then look up
    // which pool owns that bucket.
    let token = "9f86d081884c7d65";
    group.bench_function("bucket_of", |b| b.iter(|| bucket_of(black_box(token.as_bytes()))));
    group.bench_function("sticky_pick", |b| b.iter(|| canary.pick_bucket(bucket_of(black_box(token.as_bytes())))));
    group.finish();
}

fn pool_of_four(lb: LbPolicy) -> Pool {
    let name: Arc<str> = Arc::from("blue");
    let backends = (0..4)
        .map(|i| {
            let addr = BackendAddr { scheme: Scheme::Http, authority: format!("127.0.0.1:{}", 9001 + i) };
            Arc::new(Backend::new(name.clone(), addr, Duration::from_secs(2)))
        })
        .collect();
    Pool::new(name, backends, lb)
}

fn pool_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_pick_4_backends");
    for (name, lb) in [("p2c", LbPolicy::P2c), ("round_robin", LbPolicy::RoundRobin), ("random", LbPolicy::Random)] {
        let pool = pool_of_four(lb);
        // Uneven load, so p2c has something to compare.
        let _busy: Vec<_> =
            pool.backends.iter().enumerate().flat_map(|(i, b)| (0..i).map(move |_| b.begin_request())).collect();
        let mut rng = SmallRng::seed_from_u64(11);
        group.bench_function(name, |b| b.iter(|| pool.pick(black_box(&mut rng), None).map(|b| b.in_flight())));
    }
    group.finish();
}

/// What a browser sends through a keep-alive connection that already went
/// through one proxy, plus the hop-by-hop headers the proxy must remove.
fn browser_headers() -> HeaderMap {
    let pairs = [
        ("host", "shop.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("referer", "https://shop.example.com/cart"),
        ("cookie", "cutover-shop=9f86d081884c7d65; session=abc123def456; theme=dark"),
        ("connection", "keep-alive, x-debug-trace"),
        ("keep-alive", "timeout=5"),
        ("x-debug-trace", "1"),
        ("te", "trailers"),
        ("upgrade-insecure-requests", "1"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "0f8fad5b-d9cb-469f-a165-70867728950e"),
    ];
    header_map(&pairs)
}

/// What a typical backend (here nginx) answers: `Connection: keep-alive`
/// is the one hop-by-hop header, as on nearly every HTTP/1.1 response.
fn backend_response_headers() -> HeaderMap {
    let pairs = [
        ("server", "nginx/1.22.1"),
        ("date", "Thu, 26 Nov 2026 16:02:31 GMT"),
        ("content-type", "text/plain"),
        ("content-length", "13"),
        ("connection", "keep-alive"),
    ];
    header_map(&pairs)
}

fn header_map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for &(name, value) in pairs {
        map.append(HeaderName::from_static(name), HeaderValue::from_static(value));
    }
    map
}

/// A header rewrite to time.
type Rewrite<'a> = dyn Fn(&mut HeaderMap) + 'a;

fn header_rewrite(c: &mut Criterion) {
    let client_ip = HeaderValue::from_static("198.51.100.23");
    let proto = HeaderValue::from_static("http");
    let host = HeaderValue::from_static("shop.example.com");
    let cases: [(&str, HeaderMap, &Rewrite); 3] = [
        ("strip_hop_by_hop", browser_headers(), &|map| {
            strip_hop_by_hop(map);
        }),
        ("strip_hop_by_hop_response", backend_response_headers(), &|map| {
            strip_hop_by_hop(map);
        }),
        ("strip_and_set_forwarded", browser_headers(), &|map| {
            strip_hop_by_hop(map);
            set_forwarded(map, &client_ip, &proto, Some(&host));
        }),
    ];
    let mut group = c.benchmark_group("headers");
    for (name, headers, rewrite) in cases {
        // Each iteration rewrites a fresh copy; the copy is not timed.
        group.bench_function(name, |b| {
            b.iter_batched(
                || headers.clone(),
                |mut map| {
                    rewrite(&mut map);
                    map
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = hot_path;
    config = config();
    targets = route_find, split_pick, pool_pick, header_rewrite
}
criterion_main!(hot_path);
