//! `[fleet]`: where etcd is, the prefix this fleet's keys live under, who
//! this replica is and how it authenticates. The section is optional:
//! without it the proxy is a replica of its own and nothing changes.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::raw::RawFleet;
use super::values::{Cx, Result};
use crate::config::fleet::{default_replica_id, Endpoint, FleetAuth, FleetConfig, FleetTls, Password};

/// Shortest lease: etcd's own minimum is a few seconds, and a shorter one
/// turns every scheduling hiccup into a lost leadership.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest lease: a dead leader stays in charge this long.
const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

impl Cx<'_> {
    pub(super) fn fleet(&self, raw: Spanned<RawFleet>) -> Result<FleetConfig> {
        let span = raw.span();
        let raw = raw.into_inner();
        let urls = match &raw.etcd {
            Some(list) if !list.get_ref().is_empty() => list,
            Some(list) => {
                return Err(self.err(list.span(), "fleet.etcd is empty; list etcd's client URLs, e.g. [\"http://127.0.0.1:2379\"]"))
            }
            None => {
                return Err(self.err(
                    span,
                    "fleet.etcd is missing; list etcd's client URLs, e.g. etcd = [\"http://127.0.0.1:2379\"], or remove [fleet]",
                ))
            }
        };
        let mut endpoints = Vec::with_capacity(urls.get_ref().len());
        for url in urls.get_ref() {
            let endpoint = Endpoint::parse(url.get_ref()).map_err(|e| {
                self.err(url.span(), format!("fleet.etcd: {}; write e.g. \"http://10.0.0.5:2379\"", e.reason))
            })?;
            endpoints.push(endpoint);
        }
        let mut fleet = FleetConfig::new(endpoints);
        if let Some(prefix) = &raw.prefix {
            fleet.prefix = self.fleet_prefix(prefix)?;
        }
        if let Some(replica) = &raw.replica {
            fleet.replica = self.replica_name(replica)?;
        } else {
            fleet.replica = sanitize(&default_replica_id());
        }
        if let Some(ttl) = &raw.lease_ttl {
            let d = self.duration(ttl, "fleet.lease_ttl", false)?;
            if !(MIN_LEASE_TTL..=MAX_LEASE_TTL).contains(&d) || d.subsec_nanos() != 0 {
                return Err(self.err(
                    ttl.span(),
                    "fleet.lease_ttl must be whole seconds from 2s to 5m; 10s replaces a dead leader within 10 s",
                ));
            }
            fleet.lease_ttl = d;
        }
        if let Some(timeout) = &raw.timeout {
            fleet.timeout = self.duration(timeout, "fleet.timeout", false)?;
        }
        if let Some(shadow) = raw.shadow_judging {
            fleet.shadow_judging = shadow;
        }
        fleet.auth = self.fleet_auth(&raw, span)?;
        fleet.tls = self.fleet_tls(&raw)?;
        Ok(fleet)
    }

    fn fleet_prefix(&self, v: &Spanned<String>) -> Result<String> {
        let prefix = v.get_ref();
        let bad = |why: &str| {
            self.err(v.span(), format!("fleet.prefix \"{prefix}\" {why}; write e.g. \"/cutover/shop-edge\""))
        };
        if !prefix.starts_with('/') {
            return Err(bad("must start with /"));
        }
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(bad("names no prefix"));
        }
        if trimmed.contains("//") || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("has an empty segment or white space"));
        }
        Ok(trimmed.to_string())
    }

    fn replica_name(&self, v: &Spanned<String>) -> Result<String> {
        let expanded = expand_env(v.get_ref()).map_err(|var| {
            self.err(v.span(), format!("fleet.replica: environment variable {var} is not set; set it or write a name"))
        })?;
        if expanded.is_empty() || expanded.len() > 128 || !expanded.bytes().all(replica_byte) {
            return Err(self.err(
                v.span(),
                format!(
                    "fleet.replica \"{expanded}\" must be 1 to 128 letters, digits, '-', '_' or '.'; \
                     it names this replica's key in etcd"
                ),
            ));
        }
        Ok(expanded)
    }

    fn fleet_auth(&self, raw: &RawFleet, span: Range<usize>) -> Result<Option<FleetAuth>> {
        let password = match (&raw.password, &raw.password_file) {
            (Some(_), Some(file)) => {
                return Err(self.err(file.span(), "fleet: give password or password_file, not both"));
            }
            (Some(p), None) => Some(Password::Inline(p.get_ref().clone())),
            (None, Some(file)) => Some(Password::File(self.file_path(file, "fleet.password_file")?)),
            (None, None) => None,
        };
        match (&raw.username, password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => {
                if user.get_ref().is_empty() {
                    return Err(self.err(user.span(), "fleet.username is empty; give etcd's user name"));
                }
                Ok(Some(FleetAuth { username: user.get_ref().clone(), password }))
            }
            (Some(user), None) => {
                Err(self.err(user.span(), "fleet.username needs a password or a password_file (a mounted Secret)"))
            }
            (None, Some(_)) => Err(self.err(span, "fleet: a password needs a username")),
        }
    }

    fn fleet_tls(&self, raw: &RawFleet) -> Result<FleetTls> {
        let ca_file = raw.ca_file.as_ref().map(|f| self.file_path(f, "fleet.ca_file")).transpose()?;
        let client_cert = match (&raw.cert_file, &raw.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                Some((self.file_path(cert, "fleet.cert_file")?, self.file_path(key, "fleet.key_file")?))
            }
            (Some(cert), None) => {
                return Err(self.err(cert.span(), "fleet.cert_file needs fleet.key_file (the client certificate's key)"))
            }
            (None, Some(key)) => return Err(self.err(key.span(), "fleet.key_file needs fleet.cert_file")),
        };
        Ok(FleetTls { ca_file, client_cert })
    }
}

fn replica_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// A host name as a replica name: anything outside the allowed bytes becomes `-`.
fn sanitize(name: &str) -> String {
    let clean: String = name.bytes().map(|b| if replica_byte(b) { b as char } else { '-' }).take(128).collect();
    if clean.is_empty() {
        "cutover".to_string()
    } else {
        clean
    }
}

/// `${NAME}` replaced by the environment variable's value; the name of the
/// first unset variable is the error.
fn expand_env(text: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[at..]);
            return Ok(out);
        };
        let name = &after[..end];
        let value = std::env::var(name).map_err(|_| name.to_string())?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    const BASE: &str = "[pools.p]\nbackends = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nsplit = { p = 1 }\n";

    #[track_caller]
    fn parse_err(text: &str, needle: &str) {
        match super::super::parse(std::path::Path::new(FILE), text) {
            Ok(_) => panic!("config should be rejected ({needle}):\n{text}"),
            Err(e) => assert!(e.message.contains(needle), "message {:?} does not contain {:?}", e.message, needle),
        }
    }

    fn with(fleet: &str) -> String {
        format!("{BASE}[fleet]\n{fleet}")
    }

    #[test]
    fn no_fleet_section_is_no_fleet() {
        assert_eq!(parse_ok(BASE).fleet, None);
    }

    #[test]
    fn a_full_section_parses() {
        let config = parse_ok(&with(
            "etcd = [\"http://10.0.0.5:2379\", \"https://etcd-1:2379\"]\nprefix = \"/cutover/shop-edge/\"\n\
             replica = \"edge-1\"\nlease_ttl = \"15s\"\ntimeout = \"2s\"\nusername = \"cutover\"\n\
             password_file = \"/run/secrets/etcd\"\nca_file = \"/etc/etcd/ca.pem\"\n\
             cert_file = \"/etc/etcd/client.pem\"\nkey_file = \"/etc/etcd/client-key.pem\"\nshadow_judging = false\n",
        ));
        let fleet = config.fleet.expect("fleet");
        assert_eq!(fleet.endpoints.len(), 2);
        assert!(fleet.endpoints[1].tls);
        assert_eq!(fleet.prefix, "/cutover/shop-edge");
        assert_eq!(fleet.replica, "edge-1");
        assert_eq!(fleet.lease_ttl, Duration::from_secs(15));
        assert_eq!(fleet.timeout, Duration::from_secs(2));
        let auth = fleet.auth.expect("auth");
        assert_eq!(auth.username, "cutover");
        assert_eq!(auth.password, Password::File("/run/secrets/etcd".into()));
        assert_eq!(fleet.tls.ca_file, Some("/etc/etcd/ca.pem".into()));
        assert!(fleet.tls.client_cert.is_some());
        assert!(!fleet.shadow_judging);
    }

    #[test]
    fn defaults_name_this_process() {
        let fleet = parse_ok(&with("etcd = [\"http://127.0.0.1:2379\"]\n")).fleet.expect("fleet");
        assert_eq!(fleet.prefix, "/cutover");
        assert_eq!(fleet.lease_ttl, Duration::from_secs(10));
        assert!(fleet.replica.ends_with(&format!("-{}", std::process::id())), "{}", fleet.replica);
        assert!(fleet.auth.is_none());
        assert!(fleet.shadow_judging, "every replica judges unless told otherwise");
    }

    #[test]
    fn the_replica_name_may_come_from_the_environment() {
        std::env::set_var("CUTOVER_TEST_FLEET_POD", "edge-7");
        let fleet = parse_ok(&with("etcd = [\"http://127.0.0.1:2379\"]\nreplica = \"${CUTOVER_TEST_FLEET_POD}\"\n"))
            .fleet
            .expect("fleet");
        assert_eq!(fleet.replica, "edge-7");
        parse_err(
            &with("etcd = [\"http://127.0.0.1:2379\"]\nreplica = \"${CUTOVER_TEST_FLEET_UNSET_VAR}\"\n"),
            "CUTOVER_TEST_FLEET_UNSET_VAR is not set",
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (fleet, message) in [
            ("prefix = \"/x\"\n", "fleet.etcd is missing"),
            ("etcd = []\n", "fleet.etcd is empty"),
            ("etcd = [\"127.0.0.1:2379\"]\n", "fleet.etcd"),
            ("etcd = [\"http://127.0.0.1:2379/v3\"]\n", "path or query"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nprefix = \"cutover\"\n", "must start with /"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nprefix = \"/\"\n", "names no prefix"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nreplica = \"a/b\"\n", "letters, digits"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"1s\"\n", "whole seconds from 2s"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"2500ms\"\n", "whole seconds"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nusername = \"u\"\n", "needs a password"),
            ("etcd = [\"http://127.0.0.1:2379\"]\npassword = \"p\"\n", "needs a username"),
            (
                "etcd = [\"http://127.0.0.1:2379\"]\nusername = \"u\"\npassword = \"p\"\npassword_file = \"f\"\n",
                "not both",
            ),
            ("etcd = [\"http://127.0.0.1:2379\"]\ncert_file = \"c.pem\"\n", "needs fleet.key_file"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nkey_file = \"k.pem\"\n", "needs fleet.cert_file"),
            ("etcd = [\"http://127.0.0.1:2379\"]\nleader = true\n", "unknown field"),
        ] {
            parse_err(&with(fleet), message);
        }
    }
}
