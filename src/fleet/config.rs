//! What the fleet makes of the `[fleet]` section ([`FleetConfig`], a type
//! of `crate::config`): the etcd client's options, read from the password
//! and TLS files when the client is built, and the election key.

use super::etcd::{self, ClientOptions, Credentials, EtcdError};
pub use crate::config::fleet::{
    default_replica_id, FleetAuth, FleetConfig, FleetTls, Password, DEFAULT_LEASE_TTL, DEFAULT_PREFIX,
};

impl FleetConfig {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::etcd::Endpoint;
    use std::time::Duration;

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
