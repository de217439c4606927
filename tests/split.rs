//! Weighted, sticky and forced splitting, observed from real upstreams.

mod support;

use std::time::Duration;
use support::*;

fn two_pools(blue: &Upstream, canary: &Upstream, split: &str, extra: &str) -> String {
    format!(
        r#"
[pools.blue]
backends = ["{}"]
[pools.canary]
backends = ["{}"]
[[routes]]
name = "app"
split = {split}
{extra}
"#,
        blue.addr, canary.addr
    )
}

#[tokio::test]
async fn ninety_ten_split_lands_within_three_points() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let proxy = TestProxy::start(&two_pools(&blue, &canary, "{ blue = 90, canary = 10 }", "")).await;
    let client = client();
    let mut canary_hits = 0;
    for _ in 0..2_000 {
        let a = get(&client, &proxy.url("/"), &[]).await;
        assert_eq!(a.status, 200);
        if a.body == "canary" {
            canary_hits += 1;
        }
    }
    let share = f64::from(canary_hits) / 2_000.0;
    assert!((share - 0.10).abs() <= 0.03, "canary share {share}");
    assert_eq!(blue.hits() + canary.hits(), 2_000);
}

#[tokio::test]
async fn zero_weight_pool_gets_nothing() {
    let blue = Upstream::named("blue").await;
    let canary = Upstream::named("canary").await;
    let proxy = TestProxy::start(&two_pools(&blue, &canary, "{ blue = 100, canary = 0 }", "")).await;
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
    let proxy = TestProxy::start(&two_pools(&blue, &canary, "{ blue = 100, canary = 0 }", force)).await;
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
    let proxy = TestProxy::start(&two_pools(&blue, &canary, "{ blue = 50, canary = 50 }", sticky)).await;
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

    let at =
        |weight: u32| two_pools(&blue, &canary, &format!("{{ blue = {}, canary = {weight} }}", 100 - weight), sticky);
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
    let _ = Duration::ZERO;
}
