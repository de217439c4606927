//! A real single-member etcd (the `etcd` binary of Debian's `etcd-server`)
//! on loopback ports, in a temp dir, for the fleet tests.
//!
//! Without `etcd` on the PATH, [`Etcd::start`] says the test skipped and
//! returns `None`, unless `CUTOVER_REQUIRE_ETCD=1` (CI sets it), where a
//! missing etcd fails the test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cutover::fleet::etcd::{Client, ClientOptions, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
/// A real single-member etcd in a temp dir, killed on drop.
pub struct Etcd {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    setup: Setup,
    child: Option<Child>,
}

/// How to run etcd beyond the defaults.
#[derive(Clone, Default)]
pub struct Setup {
    /// Extra command-line arguments.
    pub args: Vec<String>,
    /// Serve clients over TLS with this client config to reach it.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

pub fn etcd_installed() -> bool {
    let found = Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        assert!(
            std::env::var("CUTOVER_REQUIRE_ETCD").as_deref() != Ok("1"),
            "CUTOVER_REQUIRE_ETCD=1 but no `etcd` binary on the PATH (apt-get install etcd-server)"
        );
        eprintln!("skipped: no `etcd` binary on the PATH (apt-get install etcd-server to run this test)");
    }
    found
}

/// Two ports free right now. etcd cannot listen on port 0, so the ports are
/// picked by binding and releasing; a race with another process shows as
/// etcd exiting at startup, and [`Etcd::start`] then picks again.
///
/// They are picked below the kernel's ephemeral range, from which it hands
/// out the local ports of outgoing connections: [`Etcd::restart`] needs its
/// ports again after the process is gone, and with other tests connecting
/// all the while, an ephemeral port left free for a moment is soon some
/// connection's local port, which no listener can then bind.
pub fn free_ports() -> (u16, u16) {
    use rand::{Rng, SeedableRng};
    let below = ephemeral_ports_start();
    let lowest = if below > 20_000 { 10_000 } else { 1_024 };
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    // Each listener is held until both are picked, so the second cannot
    // bind the first's port.
    let mut pick = || loop {
        let port = rng.random_range(lowest..below);
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            break (listener, port);
        }
    };
    let (_a, a) = pick();
    let (_b, b) = pick();
    (a, b)
}

/// The first port of the kernel's ephemeral range (Linux's default when it
/// cannot be read).
fn ephemeral_ports_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|&start: &u16| start > 2_048)
        .unwrap_or(32_768)
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`.
pub fn make_certificates(dir: &std::path::Path) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "fleet test CA");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    // etcd's gateway dials etcd's own gRPC port presenting the *server*
    // certificate as its client certificate, so with --client-cert-auth the
    // server certificate needs the clientAuth usage too.
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    for (name, sans, usages) in [
        ("server", vec!["127.0.0.1".to_string(), "localhost".to_string()], vec![ServerAuth, ClientAuth]),
        ("client", vec!["cutover".to_string()], vec![ClientAuth]),
    ] {
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = usages;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write");
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).expect("write");
    }
}

/// etcd serving clients over TLS with the certificates of
/// [`make_certificates`] in `dir`, requiring a client certificate.
pub fn tls_setup(dir: &std::path::Path) -> Setup {
    let file = |name: &str| dir.join(name);
    let tls = cutover::fleet::etcd::tls::client_config(
        Some(&file("ca.pem")),
        Some((&file("client.pem"), &file("client-key.pem"))),
    )
    .expect("client TLS config");
    let mut args = vec!["--client-cert-auth".to_string()];
    for (flag, name) in
        [("--cert-file", "server.pem"), ("--key-file", "server-key.pem"), ("--trusted-ca-file", "ca.pem")]
    {
        args.push(flag.into());
        args.push(file(name).display().to_string());
    }
    Setup { args, tls: Some(tls) }
}

impl Etcd {
    /// Start etcd, or `None` when it is not installed (and not required).
    pub async fn start() -> Option<Etcd> {
        Etcd::start_with(Setup::default()).await
    }

    pub async fn start_with(setup: Setup) -> Option<Etcd> {
        if !etcd_installed() {
            return None;
        }
        let mut log = String::new();
        for _ in 0..5 {
            let (client_port, peer_port) = free_ports();
            let dir = tempfile::tempdir().expect("temp dir");
            let mut etcd = Etcd { dir, client_port, peer_port, setup: setup.clone(), child: None };
            if etcd.launch().await {
                return Some(etcd);
            }
            log = etcd.log();
        }
        panic!("etcd did not start in 5 tries; last log: {log}");
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Spawn the process and wait until it answers; false if it exited.
    pub async fn launch(&mut self) -> bool {
        let client = self.endpoint().to_string();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("log file");
        let child = Command::new("etcd")
            .args(["--name", "fleet-test", "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("fleet-test={peer}")])
            .args(&self.setup.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if child.try_wait().ok().flatten().is_some() {
                    return false;
                }
            }
            if client.get("/probe").await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("etcd did not answer within 30 s; log: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop and start again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        for _ in 0..20 {
            if self.launch().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("etcd did not restart; log: {}", self.log());
    }

    pub fn endpoint(&self) -> Endpoint {
        let scheme = if self.setup.tls.is_some() { "https" } else { "http" };
        Endpoint::parse(&format!("{scheme}://127.0.0.1:{}", self.client_port)).expect("endpoint")
    }

    pub fn options(&self) -> ClientOptions {
        let mut options = ClientOptions::new(vec![self.endpoint()]);
        options.timeout = Duration::from_secs(2);
        options.tls = self.setup.tls.clone();
        options
    }

    pub fn client(&self) -> Client {
        Client::new(self.options()).expect("client")
    }

    /// POST `body` to the gateway without the client under test (admin
    /// calls the client has no function for); the status and the answer.
    pub async fn raw(&self, path: &str, body: serde_json::Value, token: Option<&str>) -> (u16, serde_json::Value) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port)).await.expect("connect");
        let body = body.to_string();
        let auth = token.map(|t| format!("Authorization: {t}\r\n")).unwrap_or_default();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("read");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let start = answer.find('{').unwrap_or(answer.len());
        let end = answer.rfind('}').map(|i| i + 1).unwrap_or(answer.len());
        (status, serde_json::from_str(&answer[start..end.max(start)]).unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
