//! Fleet mode through a secured etcd: cutover replicas sharing their state
//! through a real etcd that serves clients over TLS with a private CA and
//! client certificates, and through one with authentication on. The etcd
//! client's own tests (`fleet_etcd.rs`) show each mechanism; these show a
//! fleet of real proxies working through it, configured as an operator
//! would in `[fleet]`.
//!
//! Without `etcd` on the PATH each test says it skipped and passes, unless
//! `CUTOVER_REQUIRE_ETCD=1` (CI sets it), where a missing etcd fails.

use crate::support;

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};

use support::etcd::{etcd_installed, make_certificates, tls_setup, Etcd, Setup};
use support::eventually_async as eventually;
use support::{get_json, pool_tripped, post, TestProxy, Upstream};

/// Route `shop` half and half between blue and green, and `[fleet]` with
/// `etcd` (a URL) and the `secure` lines (credentials, certificates).
fn config(etcd: &str, prefix: &str, name: &str, blue: &Upstream, green: &Upstream, secure: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\n\
         [pools.blue]\nbackends = [\"{}\"]\n\
         [pools.green]\nbackends = [\"{}\"]\n\
         [[routes]]\nname = \"shop\"\nsplit = {{ blue = 1, green = 1 }}\n\
         [fleet]\netcd = [\"{etcd}\"]\nprefix = \"{prefix}\"\nreplica = \"{name}\"\n\
         lease_ttl = \"2s\"\ntimeout = \"2s\"\n{secure}",
        blue.addr, green.addr
    )
}

async fn status(proxy: &TestProxy) -> Value {
    get_json(&proxy.admin_url("/status")).await
}

/// Two replicas on `etcd` with `secure`: both connected, one leader, and
/// a trip made on one in force on the other; the key is in etcd, read with
/// `reader` (a client allowed in).
async fn a_fleet_works_through(url: &str, secure: &str, reader: cutover::fleet::etcd::Client) {
    let (blue, green) = (Upstream::named("blue").await, Upstream::named("green").await);
    let prefix = "/cutover/test-secure";
    let a = TestProxy::start_seeded(&config(url, prefix, "a", &blue, &green, secure), Some(7)).await;
    let b = TestProxy::start_seeded(&config(url, prefix, "b", &blue, &green, secure), Some(7)).await;
    for proxy in [&a, &b] {
        eventually(Duration::from_secs(10), "in step with etcd, with a leader", || async {
            let fleet = status(proxy).await["fleet"].clone();
            fleet["connected"] == true && fleet["leader"].is_string()
        })
        .await;
    }
    let answer = post(&a.admin_url("/pools/green/trip")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let written: Value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    assert_eq!(written["fleet"], "written", "{written}");
    eventually(Duration::from_secs(5), "the trip in force on b", || async { pool_tripped(&b, "green").await }).await;
    let stored = reader.get(format!("{prefix}/state/pools/green")).await.expect("read etcd");
    let value: Value = serde_json::from_slice(&stored.kvs[0].value).expect("JSON");
    assert_eq!((value["by"].as_str(), value["trip"].is_object()), (Some("a"), true), "{value}");
    for proxy in [a, b] {
        proxy.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_its_state_through_etcd_over_tls_with_client_certificates() {
    if !etcd_installed() {
        return;
    }
    let certs = tempfile::tempdir().expect("temp dir");
    make_certificates(certs.path());
    let Some(etcd) = Etcd::start_with(tls_setup(certs.path())).await else { return };
    let endpoint = etcd.endpoint();
    let url = format!("https://{}:{}", endpoint.host, endpoint.port);
    let file = |name: &str| certs.path().join(name).display().to_string();
    let secure = format!(
        "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        file("ca.pem"),
        file("client.pem"),
        file("client-key.pem")
    );
    a_fleet_works_through(&url, &secure, etcd.client()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_shares_its_state_through_etcd_with_authentication() {
    let Some(etcd) = Etcd::start_with(Setup::default()).await else { return };
    for (path, body) in [
        ("/v3/auth/user/add", json!({ "name": "root", "password": "rootpw" })),
        ("/v3/auth/user/grant", json!({ "user": "root", "role": "root" })),
        ("/v3/auth/enable", json!({})),
    ] {
        let (code, answer) = etcd.raw(path, body, None).await;
        assert_eq!(code, 200, "{path}: {answer}");
    }
    // Auth is on: a client without credentials is refused.
    assert!(etcd.client().get("/cutover/").await.is_err(), "etcd refuses anonymous clients");
    let password = tempfile::tempdir().expect("temp dir");
    let password_file = password.path().join("etcd-password");
    std::fs::write(&password_file, "rootpw\n").expect("write the password file");
    let endpoint = etcd.endpoint();
    let url = format!("http://{}:{}", endpoint.host, endpoint.port);
    let secure = format!("username = \"root\"\npassword_file = \"{}\"\n", password_file.display());
    let mut config = cutover::fleet::FleetConfig::new(vec![endpoint.clone()]);
    config.auth = Some(cutover::fleet::config::FleetAuth {
        username: "root".into(),
        password: cutover::fleet::config::Password::Inline("rootpw".into()),
    });
    let reader = cutover::fleet::etcd::Client::new(config.client_options().expect("options")).expect("client");
    a_fleet_works_through(&url, &secure, reader).await;
}
