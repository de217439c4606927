//! The fleet's etcd client and leader election against a real etcd on
//! loopback (the `etcd` binary of Debian's `etcd-server`).
//!
//! Without `etcd` on the PATH each test says it skipped and passes, unless
//! `CUTOVER_REQUIRE_ETCD=1` (CI sets it), where a missing etcd fails.

use crate::support;

use std::time::Duration;

use cutover::fleet::config::{FleetAuth, FleetConfig, Password};
use cutover::fleet::etcd::{
    CasOutcome, Client, ClientOptions, Endpoint, EventKind, LeaseKeeper, WatchMessage, Watcher,
};
use cutover::fleet::Election;
use serde_json::json;
use tokio::time::{timeout, Instant};

use support::etcd::{etcd_installed, free_ports, make_certificates, tls_setup, Etcd, Setup};
use support::eventually_async as eventually;

/// The next message that is not a connection notice.
async fn next_events(watcher: &mut Watcher) -> (i64, Vec<(EventKind, String, String)>) {
    loop {
        let message = timeout(Duration::from_secs(10), watcher.next()).await.expect("a watch message in time");
        match message.expect("the watch goes on") {
            WatchMessage::Events { revision, events } => {
                let events = events
                    .into_iter()
                    .map(|e| (e.kind, e.kv.key_str().into_owned(), String::from_utf8_lossy(&e.kv.value).into_owned()))
                    .collect();
                return (revision, events);
            }
            WatchMessage::Connected | WatchMessage::Disconnected { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_prefix_and_delete() {
    let Some(etcd) = Etcd::start().await else { return };
    // A dead endpoint first: the client moves on to the live one.
    let dead = free_ports().0;
    let options = ClientOptions::new(vec![
        Endpoint::parse(&format!("http://127.0.0.1:{dead}")).expect("endpoint"),
        etcd.endpoint(),
    ]);
    let client = Client::new(options).expect("client");

    let first = client.put("/fleet/a", "1", None).await.expect("put a");
    let second = client.put("/fleet/b", "2", None).await.expect("put b");
    client.put("/fleet0", "outside", None).await.expect("put outside the prefix");
    assert!(second > first, "revisions grow: {first} then {second}");

    let a = client.get("/fleet/a").await.expect("get a");
    assert_eq!(a.kvs.len(), 1);
    assert_eq!((a.kvs[0].value.as_slice(), a.kvs[0].mod_revision), (&b"1"[..], first));
    assert!(a.revision > second, "the read's revision is the store's, past the last write");
    assert!(client.get("/fleet/none").await.expect("get missing").kvs.is_empty());

    let all = client.get_prefix("/fleet/").await.expect("prefix");
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key_str().into_owned()).collect();
    assert_eq!(keys, ["/fleet/a", "/fleet/b"]);

    assert!(client.delete("/fleet/a").await.expect("delete"));
    assert!(!client.delete("/fleet/a").await.expect("delete again"));
    assert_eq!(client.get_prefix("/fleet/").await.expect("prefix").kvs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_let_one_writer_win() {
    let Some(etcd) = Etcd::start().await else { return };
    let (one, two) = (etcd.client(), etcd.client());

    // Two replicas create the same absent key at once: one wins.
    let (a, b) = tokio::join!(one.put_if("/route/x", "from-one", 0, None), two.put_if("/route/x", "from-two", 0, None));
    let (a, b) = (a.expect("txn one"), b.expect("txn two"));
    let (winner, revision, loser) = match (&a, &b) {
        (CasOutcome::Written { revision }, CasOutcome::Conflict { .. }) => ("from-one", *revision, b.clone()),
        (CasOutcome::Conflict { .. }, CasOutcome::Written { revision }) => ("from-two", *revision, a.clone()),
        other => panic!("exactly one writer must win: {other:?}"),
    };
    let CasOutcome::Conflict { current: Some(current), .. } = loser else { panic!("the loser sees the key") };
    assert_eq!((current.value.as_slice(), current.mod_revision), (winner.as_bytes(), revision));

    // A write based on a stale revision conflicts; one based on the current one succeeds.
    let CasOutcome::Written { revision: next } = one.put_if("/route/x", "v2", revision, None).await.expect("txn")
    else {
        panic!("the current revision must win");
    };
    match two.put_if("/route/x", "v2-stale", revision, None).await.expect("txn") {
        CasOutcome::Conflict { current: Some(kv), revision: at } => {
            assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v2"[..], next));
            assert!(at >= next);
        }
        other => panic!("a stale revision must conflict: {other:?}"),
    }
    assert_eq!(one.get("/route/x").await.expect("get").kvs[0].value, b"v2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_keys_and_expire_them() {
    let Some(etcd) = Etcd::start().await else { return };
    let client = etcd.client();
    let ttl = Duration::from_secs(2);

    // Kept alive: the key outlives several TTLs, and the refreshes ran.
    let kept = client.lease_grant(ttl).await.expect("grant");
    client.put("/replica/kept", "alive", Some(kept.id)).await.expect("put");
    let keeper = LeaseKeeper::spawn(client.clone(), kept.id, ttl);
    let held_since = Instant::now();
    eventually(Duration::from_secs(20), "three TTLs pass", || async { held_since.elapsed() > ttl * 3 }).await;
    assert!(keeper.is_alive(), "the keeper still holds the lease");
    assert_eq!(client.get("/replica/kept").await.expect("get").kvs.len(), 1, "kept alive past its TTL");

    // Not kept alive: the key goes with the lease.
    let dropped_at = Instant::now();
    drop(keeper);
    eventually(Duration::from_secs(15), "the key expires with its lease", || async {
        client.get("/replica/kept").await.map(|r| r.kvs.is_empty()).unwrap_or(false)
    })
    .await;
    assert!(dropped_at.elapsed() >= Duration::from_secs(1), "the key lived on until the TTL ran out");
    assert_eq!(client.lease_keepalive_once(kept.id).await.expect("keepalive"), None, "the lease is gone");

    // Revoked: at once, and the keeper reports the loss.
    let revoked = client.lease_grant(Duration::from_secs(60)).await.expect("grant");
    client.put("/replica/revoked", "alive", Some(revoked.id)).await.expect("put");
    let keeper = LeaseKeeper::spawn(client.clone(), revoked.id, Duration::from_secs(60));
    let watcher_keeper = LeaseKeeper::spawn(client.clone(), revoked.id, Duration::from_secs(3));
    keeper.revoke().await.expect("revoke");
    assert!(client.get("/replica/revoked").await.expect("get").kvs.is_empty(), "revoking deletes at once");
    timeout(Duration::from_secs(10), watcher_keeper.lost()).await.expect("a keeper sees its lease revoked");
    client.lease_revoke(revoked.id).await.expect("revoking twice is not an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_changes_in_order_across_an_etcd_restart() {
    let Some(mut etcd) = Etcd::start().await else { return };
    let client = etcd.client();
    let start = client.get_prefix("/state/").await.expect("read").revision;
    let mut watcher = client.watch_prefix("/state/", start + 1);

    client.put("/state/a", "1", None).await.expect("put");
    client.put("/state/b", "2", None).await.expect("put");
    client.put("/elsewhere", "x", None).await.expect("put outside");
    client.delete("/state/a").await.expect("delete");
    let mut seen = Vec::new();
    let mut last = start;
    while seen.len() < 3 {
        let (revision, events) = next_events(&mut watcher).await;
        assert!(revision > last, "revisions grow");
        last = revision;
        seen.extend(events);
    }
    assert_eq!(
        seen,
        [
            (EventKind::Put, "/state/a".to_string(), "1".to_string()),
            (EventKind::Put, "/state/b".to_string(), "2".to_string()),
            (EventKind::Delete, "/state/a".to_string(), String::new()),
        ]
    );

    // etcd goes away: the watcher says so, then resumes where it was.
    etcd.stop();
    loop {
        let message = timeout(Duration::from_secs(20), watcher.next()).await.expect("a message").expect("open");
        if let WatchMessage::Disconnected { .. } = message {
            break;
        }
    }
    etcd.restart().await;
    client.put("/state/c", "3", None).await.expect("put after restart");
    client.put("/state/d", "4", None).await.expect("put after restart");
    let mut after = Vec::new();
    while after.len() < 2 {
        let (revision, events) = next_events(&mut watcher).await;
        assert!(revision > last, "nothing is delivered twice: {revision} after {last}");
        last = revision;
        after.extend(events);
    }
    assert_eq!(
        after,
        [
            (EventKind::Put, "/state/c".to_string(), "3".to_string()),
            (EventKind::Put, "/state/d".to_string(), "4".to_string()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_says_so() {
    let Some(etcd) = Etcd::start().await else { return };
    let client = etcd.client();
    let first = client.put("/state/a", "1", None).await.expect("put");
    let last = client.put("/state/a", "2", None).await.expect("put");
    client.compact(last).await.expect("compact");
    let mut watcher = client.watch_prefix("/state/", first);
    let message = loop {
        let message = timeout(Duration::from_secs(10), watcher.next()).await.expect("a message in time");
        match message {
            Some(WatchMessage::Connected) => {}
            other => break other,
        }
    };
    assert_eq!(message, Some(WatchMessage::Compacted { compact_revision: last }));
    assert_eq!(timeout(Duration::from_secs(5), watcher.next()).await.expect("ends"), None, "nothing follows");
}

/// How many of `elections` lead now.
fn leaders(elections: &[&Election]) -> usize {
    elections.iter().filter(|e| *e.is_leader().borrow()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_and_a_successor_within_the_ttl() {
    let Some(etcd) = Etcd::start().await else { return };
    let client = etcd.client();
    let ttl = Duration::from_secs(2);
    let key = "/fleet/leader".to_string();
    let a = Election::start(client.clone(), key.clone(), "replica-a".into(), ttl);
    let b = Election::start(client.clone(), key.clone(), "replica-b".into(), ttl);
    let c = Election::start(client.clone(), key.clone(), "replica-c".into(), ttl);

    let all = [&a, &b, &c];
    let monitor = LeaderMonitor::spawn(&all);
    eventually(Duration::from_secs(15), "one of three leads", || async { leaders(&all) == 1 }).await;
    let first = all.iter().position(|e| *e.is_leader().borrow()).expect("a leader");
    let first_name = format!("replica-{}", ["a", "b", "c"][first]);
    eventually(Duration::from_secs(10), "every candidate knows the leader", || async {
        all.iter().all(|e| e.leader().borrow().as_deref() == Some(first_name.as_str()))
    })
    .await;
    let stored = client.get(&key).await.expect("get").kvs;
    assert_eq!(stored[0].value, first_name.as_bytes(), "the key names the leader");
    assert_ne!(stored[0].lease, 0, "the key lives under a lease");

    // The leader resigns: another leads at once.
    let mut rest: Vec<Election> = Vec::new();
    let mut leader = None;
    for (i, election) in [a, b, c].into_iter().enumerate() {
        if i == first {
            leader = Some(election);
        } else {
            rest.push(election);
        }
    }
    leader.expect("the leader").resign(&client).await.expect("resign");
    let resigned_at = Instant::now();
    eventually(Duration::from_secs(10), "a successor after the resignation", || async {
        leaders(&rest.iter().collect::<Vec<_>>()) == 1
    })
    .await;
    assert!(resigned_at.elapsed() < ttl, "a resignation needs no TTL to pass");

    // The new leader dies without a word (its keepalive stops): the last
    // candidate leads within the TTL plus a margin for a loaded machine.
    let second = rest.iter().position(|e| *e.is_leader().borrow()).expect("a leader");
    let survivor = rest.remove(1 - second);
    let mut watching = survivor.is_leader();
    let died_at = Instant::now();
    drop(rest);
    timeout(ttl + Duration::from_secs(8), watching.wait_for(|leading| *leading))
        .await
        .expect("the survivor leads within the TTL and a margin")
        .expect("the election runs");
    assert!(died_at.elapsed() >= Duration::from_millis(500), "the dead leader's lease had to expire first");

    drop(survivor);
    let (changes, most) = monitor.finish().await;
    assert!(changes >= 3, "the monitor saw the three leaderships ({changes} changes)");
    assert_eq!(most, 1, "never two leaders at once");
}

/// Watches every candidate's `is_leader` and records the most that led at
/// the same moment.
struct LeaderMonitor {
    task: tokio::task::JoinHandle<(usize, usize)>,
}

impl LeaderMonitor {
    fn spawn(elections: &[&Election]) -> LeaderMonitor {
        let mut receivers: Vec<_> = elections.iter().map(|e| e.is_leader()).collect();
        let task = tokio::spawn(async move {
            let (mut changes, mut most) = (0, 0);
            loop {
                let count = receivers.iter().filter(|r| *r.borrow()).count();
                most = most.max(count);
                let waits = receivers.iter_mut().map(|r| Box::pin(r.changed()));
                // Every election dropped: the channels close.
                if futures_util::future::select_all(waits).await.0.is_err() {
                    receivers.retain(|r| r.has_changed().is_ok());
                    if receivers.is_empty() {
                        return (changes, most);
                    }
                    continue;
                }
                changes += 1;
            }
        });
        LeaderMonitor { task }
    }

    /// The number of changes seen and the most leaders at once, after the
    /// elections are dropped.
    async fn finish(self) -> (usize, usize) {
        timeout(Duration::from_secs(10), self.task).await.expect("the monitor ends").expect("the monitor ran")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_etcd_steps_down_and_one_leads_again_after() {
    let Some(mut etcd) = Etcd::start().await else { return };
    let client = etcd.client();
    let ttl = Duration::from_secs(2);
    let election = Election::start(client.clone(), "/fleet/leader".into(), "replica-a".into(), ttl);
    let mut leading = election.is_leader();
    timeout(Duration::from_secs(15), leading.wait_for(|l| *l)).await.expect("leads").expect("runs");

    // etcd gone: leadership cannot be proven, so it ends within the TTL.
    let lost_at = Instant::now();
    etcd.stop();
    timeout(ttl + Duration::from_secs(8), leading.wait_for(|l| !*l)).await.expect("steps down").expect("runs");
    assert!(lost_at.elapsed() >= Duration::from_millis(500), "the lease's TTL ran first");

    // etcd back: the election goes on and a replica leads again.
    etcd.restart().await;
    timeout(Duration::from_secs(30), leading.wait_for(|l| *l)).await.expect("leads again").expect("runs");
    assert_eq!(election.leader().borrow().as_deref(), Some("replica-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tokens_are_sent_and_renewed() {
    let setup = Setup { args: vec!["--auth-token-ttl".into(), "1".into()], tls: None };
    let Some(etcd) = Etcd::start_with(setup).await else { return };
    for (path, body) in [
        ("/v3/auth/user/add", json!({ "name": "root", "password": "rootpw" })),
        ("/v3/auth/user/grant", json!({ "user": "root", "role": "root" })),
        ("/v3/auth/enable", json!({})),
    ] {
        let (status, answer) = etcd.raw(path, body, None).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }

    let anonymous = etcd.client();
    let error = anonymous.get("/secret").await.expect_err("auth is on");
    assert!(!error.is_transient(), "a refusal, not an outage: {error}");

    let mut config = FleetConfig::new(vec![etcd.endpoint()]);
    config.auth = Some(FleetAuth { username: "root".into(), password: Password::Inline("rootpw".into()) });
    let client = Client::new(config.client_options().expect("options")).expect("client");
    let start = client.put("/secret/a", "1", None).await.expect("put with a token");
    let mut watcher = client.watch_prefix("/secret/", start + 1);
    client.put("/secret/b", "2", None).await.expect("put");
    let (_, events) = next_events(&mut watcher).await;
    assert_eq!(events[0].1, "/secret/b", "the watch stream carries the token too");

    // The token expires (shown on a token of our own); the client renews its own.
    let (_, answer) = etcd.raw("/v3/auth/authenticate", json!({ "name": "root", "password": "rootpw" }), None).await;
    let token = answer["token"].as_str().expect("a token").to_string();
    let issued = Instant::now();
    eventually(Duration::from_secs(30), "the token expires", || {
        let token = token.clone();
        let etcd = &etcd;
        async move {
            issued.elapsed() > Duration::from_secs(2)
                && etcd.raw("/v3/kv/range", json!({ "key": "eA==" }), Some(&token)).await.0 != 200
        }
    })
    .await;
    let got = client.get("/secret/a").await.expect("the client authenticates again");
    assert_eq!(got.kvs[0].value, b"1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    if !etcd_installed() {
        return;
    }
    let certs = tempfile::tempdir().expect("temp dir");
    let dir = certs.path();
    make_certificates(dir);
    let file = |name: &str| dir.join(name);
    let Some(etcd) = Etcd::start_with(tls_setup(dir)).await else { return };

    // Through the config type, as a replica builds it.
    let mut config = FleetConfig::new(vec![etcd.endpoint()]);
    config.tls.ca_file = Some(file("ca.pem"));
    config.tls.client_cert = Some((file("client.pem"), file("client-key.pem")));
    let client = Client::new(config.client_options().expect("options")).expect("client");
    client.put("/tls/a", "1", None).await.expect("put over TLS");
    assert_eq!(client.get("/tls/a").await.expect("get").kvs[0].value, b"1");

    // Without the client certificate etcd refuses; without the CA the server is not trusted.
    config.tls.client_cert = None;
    let no_cert = Client::new(config.client_options().expect("options")).expect("client");
    assert!(no_cert.get("/tls/a").await.is_err(), "etcd wants a client certificate");
    config.tls.ca_file = None;
    config.tls.client_cert = Some((file("client.pem"), file("client-key.pem")));
    let no_ca = Client::new(config.client_options().expect("options")).expect("client");
    let error = no_ca.get("/tls/a").await.expect_err("an unknown CA");
    assert!(error.to_string().contains("TLS"), "the error says TLS: {error}");
}

/// A port whose connections never complete: a listener with a backlog of
/// one, filled and never accepted, so the kernel drops further SYNs.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, u16) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().expect("addr").into()).expect("bind");
    socket.listen(0).expect("listen");
    let addr = socket.local_addr().expect("addr").as_socket().expect("inet");
    let mut filling = Vec::new();
    for _ in 0..4 {
        if let Ok(stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            filling.push(stream);
        }
    }
    (socket, filling, addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_is_skipped_within_the_timeout() {
    let Some(etcd) = Etcd::start().await else { return };
    let (_hole, _filling, port) = black_hole();
    let hole = Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("endpoint");

    let mut options = ClientOptions::new(vec![hole.clone(), etcd.endpoint()]);
    options.timeout = Duration::from_secs(5);
    let client = Client::new(options).expect("client");
    client.put("/hole/a", "1", None).await.expect("the second endpoint answers in time");

    let mut options = ClientOptions::new(vec![hole]);
    options.timeout = Duration::from_secs(2);
    let alone = Client::new(options).expect("client");
    let asked = Instant::now();
    let error = alone.get("/hole/a").await.expect_err("nothing answers");
    assert!(error.is_transient(), "{error}");
    assert!(asked.elapsed() < Duration::from_secs(10), "bounded by the timeout, not by TCP's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_the_past_catches_up_one_revision_per_message() {
    let Some(etcd) = Etcd::start().await else { return };
    let client = etcd.client();
    let mut revisions = Vec::new();
    for (key, value) in [("/past/a", "1"), ("/past/b", "2"), ("/past/a", "3")] {
        revisions.push(client.put(key, value, None).await.expect("put"));
    }
    // etcd sends the history in one response; the watcher splits it.
    let mut watcher = client.watch_prefix("/past/", revisions[0]);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let (revision, events) = next_events(&mut watcher).await;
        assert_eq!(events.len(), 1, "one write per revision here");
        seen.push((revision, events[0].2.clone()));
    }
    let expected: Vec<_> = revisions.iter().copied().zip(["1", "2", "3"].map(String::from)).collect();
    assert_eq!(seen, expected);
}

/// An endpoint that answers every call with a body without end (it is not
/// etcd, or misbehaves): the call fails once the answer passes
/// `MAX_ANSWER_BYTES`, instead of holding all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_answer_fails_the_call_at_the_bound() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = [0u8; 4096];
                let _ = stream.read(&mut head).await;
                let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 1 << 16, " ".repeat(1 << 16));
                while stream.write_all(chunk.as_bytes()).await.is_ok() {
                    counted.fetch_add(1 << 16, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("endpoint");
    let mut options = ClientOptions::new(vec![endpoint]);
    options.timeout = Duration::from_secs(60);
    let client = Client::new(options).expect("client");
    let error = client.get("/any").await.expect_err("no answer that large is read");
    assert!(error.to_string().contains("length limit exceeded"), "{error}");
    let bound = cutover::fleet::etcd::MAX_ANSWER_BYTES;
    let written = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(written >= bound, "the endpoint wrote {written} bytes before the call failed");
}
