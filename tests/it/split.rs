//! Weighted, sticky and forced splitting, observed from real upstreams.

use crate::support;

use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Pools `blue` and `canary` behind route `app` with `split`; `extra` goes
/// into the route.
fn two_pools(blue: &Upstream, canary: &Upstream, split: &str, extra: &str) -> String {
    Config::new().pool("blue", &[blue.addr]).pool("canary", &[canary.addr]).route_with("app", split, extra).build()
}

/// The proxy's seed in the weighted-split test. Each connection's RNG is
/// drawn from it in accept order, and each request's from its connection's,
/// so requests sent one after another on the first connection get the same
/// pools on every run.
const SEED: u64 = 0x5eed_0001;

/// The body (the pool's name) of each of `n` GETs sent one after another
/// on one new keep-alive connection to `proxy`.
async fn pools_chosen(proxy: &TestProxy, n: usize) -> Vec<String> {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect to proxy");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        stream.write_all(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await.expect("write request");
        let answer = read_one_response(&mut stream).await;
        assert_eq!(answer.status, 200);
        out.push(String::from_utf8_lossy(&answer.body).into_owned());
    }
    out
}

/// A 90/10 split over 2000 requests sends the canary 10% ± 3 points. With
/// the seed fixed the draw is the same on every run, so the test cannot
/// flake; the tolerance is what makes it hold for any seed but a freak one:
/// the canary count is Binomial(2000, 0.1), σ ≈ 13.4 requests (0.67
/// points), so ±3 points is ±4.5σ — a seed picked blind fails with
/// probability below 10⁻⁵. The same seed gives the same choices again
/// (the seed is what decides them), and another seed other choices.
#[tokio::test]
async fn ninety_ten_split_lands_within_three_points() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let config = two_pools(&blue, &canary, "blue = 90, canary = 10", "");
    let proxy = TestProxy::start_seeded(&config, Some(SEED)).await;
    let chosen = pools_chosen(&proxy, 2_000).await;
    let canary_hits = chosen.iter().filter(|b| *b == "canary").count();
    assert_eq!(canary_hits + chosen.iter().filter(|b| *b == "blue").count(), 2_000, "{chosen:?}");
    let share = canary_hits as f64 / 2_000.0;
    assert!((share - 0.10).abs() <= 0.03, "canary share {share}");
    assert_eq!((blue.hits(), canary.hits()), (2_000 - canary_hits, canary_hits));

    let again = TestProxy::start_seeded(&config, Some(SEED)).await;
    assert_eq!(pools_chosen(&again, 200).await, chosen[..200], "the same seed chose other pools");
    // Two independent 200-request draws agree with probability < 10⁻¹⁷.
    let other = TestProxy::start_seeded(&config, Some(SEED + 1)).await;
    assert_ne!(pools_chosen(&other, 200).await, chosen[..200], "another seed chose the same pools");
}

#[tokio::test]
async fn zero_weight_pool_gets_nothing() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let proxy = TestProxy::start(&two_pools(&blue, &canary, "blue = 100, canary = 0", "")).await;
    let client = client();
    for _ in 0..300 {
        assert_eq!(get(&client, &proxy.url("/"), &[]).await.body, "blue");
    }
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn force_header_beats_weights_even_at_zero() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let force = "[[routes.force]]\nheader = \"x-beta\"\nvalue = \"1\"\npool = \"canary\"\n";
    let proxy = TestProxy::start(&two_pools(&blue, &canary, "blue = 100, canary = 0", force)).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, &proxy.url("/"), &[("x-beta", "1")]).await.body, "canary");
        assert_eq!(get(&client, &proxy.url("/"), &[("x-beta", "2")]).await.body, "blue");
    }
}

#[tokio::test]
async fn sticky_cookie_is_set_and_kept() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let sticky = "sticky = { cookie = \"cutover-app\" }";
    let proxy = TestProxy::start(&two_pools(&blue, &canary, "blue = 50, canary = 50", sticky)).await;
    let client = client();
    let first = get(&client, &proxy.url("/"), &[]).await;
    let set = first.headers["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("cutover-app="), "{set}");
    assert!(set.contains("Path=/") && set.contains("HttpOnly"), "{set}");
    let cookie = set.split(';').next().unwrap().to_string();
    for _ in 0..50 {
        let a = get(&client, &proxy.url("/"), &[("cookie", &cookie)]).await;
        assert_eq!(a.body, first.body, "sticky user changed pool");
        assert!(a.headers.get("set-cookie").is_none());
    }
}

/// Raising the canary from 10 to 30 moves no canary user back to blue.
#[tokio::test]
async fn raising_canary_weight_only_moves_users_into_it() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let sticky = "sticky = { header = \"x-user\" }";
    let users: Vec<String> = (0..400).map(|i| format!("user-{i}")).collect();
    let client = client();

    let at = |weight: u32| two_pools(&blue, &canary, &format!("blue = {}, canary = {weight}", 100 - weight), sticky);
    let before = TestProxy::start(&at(10)).await;
    let mut in_canary_before = Vec::new();
    for u in &users {
        if get(&client, &before.url("/"), &[("x-user", u)]).await.body == "canary" {
            in_canary_before.push(u.clone());
        }
    }
    before.stop().await;
    let after = TestProxy::start(&at(30)).await;
    let mut in_canary_after = 0;
    for u in &users {
        let body = get(&client, &after.url("/"), &[("x-user", u)]).await.body;
        if body == "canary" {
            in_canary_after += 1;
        } else {
            assert!(!in_canary_before.contains(u), "{u} moved back from canary to blue");
        }
    }
    assert!(!in_canary_before.is_empty());
    assert!(in_canary_after > in_canary_before.len(), "{in_canary_after} vs {}", in_canary_before.len());
}
