//! The `[fleet]` section as a domain type: where etcd is, under which
//! prefix this fleet keeps its keys, who this replica is, and how it
//! authenticates. Parsing and validation of the file's section belong to
//! `config`; this type is what they produce, with the defaults an operator
//! gets by leaving a field out.

use std::path::PathBuf;
use std::time::Duration;

use super::etcd::{self, ClientOptions, Credentials, Endpoint, EtcdError};

/// Where the fleet keeps its keys unless `prefix` says otherwise.
pub const DEFAULT_PREFIX: &str = "/cutover";
/// The lease TTL: how long a dead leader or replica stays counted.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The `[fleet]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd's client URLs, tried in order.
    pub endpoints: Vec<Endpoint>,
    /// The key prefix of this fleet (no trailing `/`): replicas with the same
    /// prefix share state and verdict.
    pub prefix: String,
    /// This replica's identity, unique in the fleet.
    pub replica: String,
    /// TTL of the replica's lease (leadership, published evidence).
    pub lease_ttl: Duration,
    /// Bound on one etcd call.
    pub timeout: Duration,
    /// etcd credentials, when etcd has auth enabled.
    pub auth: Option<FleetAuth>,
    /// TLS towards `https://` endpoints.
    pub tls: FleetTls,
}

/// etcd user and where its password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetAuth {
    /// The etcd user.
    pub username: String,
    /// The password, or the file holding it.
    pub password: Password,
}

/// Where a password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    /// Written in the config (fine for a demo, not for production).
    Inline(String),
    /// Read from a file (a mounted Secret) when the client is built; one
    /// trailing newline is ignored.
    File(PathBuf),
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Password::Inline(_) => f.write_str("Inline(<hidden>)"),
            Password::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

/// TLS files for etcd.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetTls {
    /// A CA to trust besides the system's (etcd's own CA).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, when etcd wants one; together, so one
    /// cannot be given without the other.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl FleetConfig {
    /// A section naming only `endpoints`; everything else defaulted.
    pub fn new(endpoints: Vec<Endpoint>) -> FleetConfig {
        FleetConfig {
            endpoints,
            prefix: DEFAULT_PREFIX.to_string(),
            replica: default_replica_id(),
            lease_ttl: DEFAULT_LEASE_TTL,
            timeout: etcd::DEFAULT_TIMEOUT,
            auth: None,
            tls: FleetTls::default(),
        }
    }

    /// The election key: `<prefix>/leader`.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// The client options: reads the password file and the TLS files now,
    /// so a missing file is an error at startup, not at the first call.
    pub fn client_options(&self) -> Result<ClientOptions, EtcdError> {
        let credentials = match &self.auth {
            None => None,
            Some(auth) => {
                let password = match &auth.password {
                    Password::Inline(password) => password.clone(),
                    Password::File(path) => {
                        let text = std::fs::read_to_string(path).map_err(|e| {
                            EtcdError::Setup(format!("{}: cannot read the etcd password: {e}", path.display()))
                        })?;
                        text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text).to_string()
                    }
                };
                Some(Credentials { username: auth.username.clone(), password })
            }
        };
        let wants_tls =
            self.endpoints.iter().any(|e| e.tls) || self.tls.ca_file.is_some() || self.tls.client_cert.is_some();
        let tls = if wants_tls {
            let cert = self.tls.client_cert.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
            Some(etcd::tls::client_config(self.tls.ca_file.as_deref(), cert)?)
        } else {
            None
        };
        Ok(ClientOptions { endpoints: self.endpoints.clone(), timeout: self.timeout, credentials, tls })
    }
}

/// `<host name>-<pid>`: unique per process, and readable in `/status`.
/// The host name is `$HOSTNAME` (a pod's name in Kubernetes), else the
/// kernel's.
pub fn default_replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "cutover".to_string());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_what_the_docs_say() {
        let config = FleetConfig::new(vec![Endpoint::parse("http://127.0.0.1:2379").expect("valid")]);
        assert_eq!(config.prefix, "/cutover");
        assert_eq!(config.leader_key(), "/cutover/leader");
        assert_eq!(config.lease_ttl, Duration::from_secs(10));
        assert!(config.replica.ends_with(&format!("-{}", std::process::id())), "{}", config.replica);
        let options = config.client_options().expect("plain http needs nothing");
        assert!(options.tls.is_none() && options.credentials.is_none());
    }

    #[test]
    fn a_password_file_is_read_once_without_its_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("password");
        std::fs::write(&path, "s3cret\n").expect("write");
        let mut config = FleetConfig::new(vec![Endpoint::parse("http://127.0.0.1:2379").expect("valid")]);
        config.auth = Some(FleetAuth { username: "cutover".into(), password: Password::File(path.clone()) });
        let credentials = config.client_options().expect("readable").credentials.expect("credentials");
        assert_eq!((credentials.username.as_str(), credentials.password.as_str()), ("cutover", "s3cret"));
        assert!(!format!("{:?}", config.auth).contains("s3cret"));
        std::fs::remove_file(&path).expect("remove");
        let error = config.client_options().expect_err("missing file");
        assert!(error.to_string().contains("password"), "{error}");
    }
}
