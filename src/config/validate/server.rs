//! `[server]`, `[server.tls]` and `[admin]`: listeners, timeouts and limits,
//! and the rule that no two listeners share a socket (the admin API never
//! answers on a traffic port).

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::super::raw::{RawAdmin, RawServer, RawTls};
use super::values::{is_dns_name, to_usize, Cx, Result};
use crate::config::{AdminConfig, ServerConfig, TlsConfig};

pub(super) const DEFAULT_LISTEN: ([u8; 4], u16) = ([0, 0, 0, 0], 8080);
pub(super) const DEFAULT_ADMIN_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9901);
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(super) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's upstream `keepalive_timeout`; shorter than the idle timeouts of
/// the common cloud load balancers and NATs (Azure 4 min, AWS NLB 350 s), so
/// a pooled connection is closed by the proxy before a middlebox forgets it.
pub(super) const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowloris: a whole request head within 10 s of its first byte (HAProxy's
/// usual `timeout http-request`).
pub(super) const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Slow POST: at most 30 s of silence inside a request body.
pub(super) const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's `send_timeout`: a client that takes no byte of a response for a
/// minute is not reading it.
pub(super) const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
pub(super) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::ZERO;
pub(super) const DEFAULT_MAX_REQUEST_HEADER_BYTES: i64 = 65_536;
pub(super) const MIN_REQUEST_HEADER_BYTES: i64 = 1024;
pub(super) const MAX_REQUEST_HEADER_BYTES: i64 = 1_048_576;

impl Cx<'_> {
    // ----- [server] ---------------------------------------------------------

    pub(super) fn server(&self, raw: RawServer) -> Result<Server> {
        let requests = self.request_headers(&raw)?;
        let listen = match raw.listen {
            None => vec![(SocketAddr::from(DEFAULT_LISTEN), None)],
            Some(list) => {
                let span = list.span();
                let items = list.into_inner();
                if items.is_empty() {
                    return Err(self.err(span, "server.listen is empty; add an address such as \"0.0.0.0:8080\""));
                }
                let mut out: Vec<(SocketAddr, Option<Range<usize>>)> = Vec::with_capacity(items.len());
                for item in &items {
                    let addr = self.socket_addr(item, "server.listen")?;
                    if let Some((prev, _)) = out.iter().find(|(prev, _)| clash(*prev, addr)) {
                        return Err(self.err(
                            item.span(),
                            format!("server.listen: {addr} clashes with {prev} in the same list; remove one"),
                        ));
                    }
                    out.push((addr, Some(item.span())));
                }
                out
            }
        };

        let tls = match raw.tls {
            None => None,
            Some(tls) => Some(self.tls(tls, &listen)?),
        };

        let max_request_header_bytes = match &raw.max_request_header_bytes {
            None => DEFAULT_MAX_REQUEST_HEADER_BYTES,
            Some(v) => {
                self.int_in(v, "server.max_request_header_bytes", MIN_REQUEST_HEADER_BYTES, MAX_REQUEST_HEADER_BYTES)?
            }
        };
        let workers = match &raw.workers {
            None => None,
            Some(v) => Some(self.int_in(v, "server.workers", 1, i64::from(u16::MAX))?),
        };

        let config = ServerConfig {
            listen: listen.iter().map(|(addr, _)| *addr).collect(),
            request_timeout: self.duration_or(
                raw.request_timeout.as_ref(),
                "server.request_timeout",
                DEFAULT_REQUEST_TIMEOUT,
                false,
            )?,
            connect_timeout: self.duration_or(
                raw.connect_timeout.as_ref(),
                "server.connect_timeout",
                DEFAULT_CONNECT_TIMEOUT,
                false,
            )?,
            idle_timeout: self.duration_or(
                raw.idle_timeout.as_ref(),
                "server.idle_timeout",
                DEFAULT_IDLE_TIMEOUT,
                false,
            )?,
            upstream_idle_timeout: self.duration_or(
                raw.upstream_idle_timeout.as_ref(),
                "server.upstream_idle_timeout",
                DEFAULT_UPSTREAM_IDLE_TIMEOUT,
                false,
            )?,
            drain_timeout: self.duration_or(
                raw.drain_timeout.as_ref(),
                "server.drain_timeout",
                DEFAULT_DRAIN_TIMEOUT,
                false,
            )?,
            shutdown_delay: self.duration_or(
                raw.shutdown_delay.as_ref(),
                "server.shutdown_delay",
                DEFAULT_SHUTDOWN_DELAY,
                true,
            )?,
            max_request_header_bytes: to_usize(max_request_header_bytes),
            header_read_timeout: self.duration_or(
                raw.header_read_timeout.as_ref(),
                "server.header_read_timeout",
                DEFAULT_HEADER_READ_TIMEOUT,
                false,
            )?,
            body_read_timeout: self.duration_or(
                raw.body_read_timeout.as_ref(),
                "server.body_read_timeout",
                DEFAULT_BODY_READ_TIMEOUT,
                false,
            )?,
            send_timeout: self.duration_or(
                raw.send_timeout.as_ref(),
                "server.send_timeout",
                DEFAULT_SEND_TIMEOUT,
                false,
            )?,
            workers: workers.map(to_usize),
            allow_underscores_in_headers: raw.allow_underscores_in_headers.unwrap_or(false),
            tls: tls.as_ref().map(|(tls, _)| tls.clone()),
            requests,
        };
        let mut traffic: Vec<SocketAddr> = listen.iter().map(|(addr, _)| *addr).collect();
        traffic.extend(config.tls.as_ref().map(|tls| tls.listen));
        Ok(Server { config, traffic, listen, tls_listen_span: tls.map(|(_, span)| span) })
    }

    /// `[server.tls]`; also returns the span of its `listen` for the admin
    /// clash check.
    pub(super) fn tls(
        &self,
        raw: Spanned<RawTls>,
        plain: &[(SocketAddr, Option<Range<usize>>)],
    ) -> Result<(TlsConfig, Range<usize>)> {
        let table = raw.span();
        let raw = raw.into_inner();
        let missing = |key: &str, example: &str| {
            self.err(table.clone(), format!("server.tls has no {key}; add {key} = \"{example}\""))
        };
        let listen = raw.listen.ok_or_else(|| missing("listen", "0.0.0.0:8443"))?;
        let cert = raw.cert.ok_or_else(|| missing("cert", "certs/server.pem"))?;
        let key = raw.key.ok_or_else(|| missing("key", "certs/server.key"))?;

        let addr = self.socket_addr(&listen, "server.tls.listen")?;
        if let Some((prev, _)) = plain.iter().find(|(prev, _)| clash(*prev, addr)) {
            return Err(self.err(
                listen.span(),
                format!("server.tls.listen: {addr} clashes with {prev} in server.listen; use another port"),
            ));
        }
        let tls = TlsConfig {
            listen: addr,
            cert: self.file_path(&cert, "server.tls.cert")?,
            key: self.file_path(&key, "server.tls.key")?,
        };
        Ok((tls, listen.span()))
    }

    // ----- [admin] ----------------------------------------------------------

    pub(super) fn admin(&self, raw: RawAdmin, server: &Server) -> Result<AdminConfig> {
        let (listen, listen_span) = match &raw.listen {
            None => (SocketAddr::from(DEFAULT_ADMIN_LISTEN), None),
            Some(v) => (self.socket_addr(v, "admin.listen")?, Some(v.span())),
        };
        // The admin API must not share a socket with the traffic side. Point
        // at the admin address when the operator wrote it, else at the
        // traffic address that walked into the default.
        let tls = server.config.tls.as_ref().map(|t| (t.listen, server.tls_listen_span.clone(), "server.tls.listen"));
        let traffic = server.listen.iter().map(|(addr, span)| (*addr, span.clone(), "server.listen")).chain(tls);
        for (addr, span, key) in traffic {
            if !clash(addr, listen) {
                continue;
            }
            return Err(match (listen_span.clone(), span) {
                (Some(admin_span), _) => self
                    .err(admin_span, format!("admin.listen: {listen} clashes with {addr} in {key}; use another port")),
                (None, Some(span)) => self.err(
                    span,
                    format!(
                        "{key}: {addr} clashes with the default admin.listen {listen}; \
                         use another port or set [admin] listen"
                    ),
                ),
                // Both defaults: they never clash.
                (None, None) => continue,
            });
        }
        Ok(AdminConfig {
            listen,
            token_file: raw.token_file.as_ref().map(|v| self.file_path(v, "admin.token_file")).transpose()?,
            state_file: raw.state_file.as_ref().map(|v| self.file_path(v, "admin.state_file")).transpose()?,
            allowed_hosts: raw
                .allowed_hosts
                .iter()
                .flatten()
                .map(|v| {
                    let name = v.get_ref().trim_end_matches('.').to_ascii_lowercase();
                    if is_dns_name(&name) {
                        Ok(name)
                    } else {
                        Err(self.err(
                            v.span(),
                            format!(
                                "admin.allowed_hosts: \"{}\" is not a host name; write a name without a port, \
                                 such as \"cutover-admin.internal\"",
                                v.get_ref()
                            ),
                        ))
                    }
                })
                .collect::<Result<Vec<_>>>()?,
        })
    }
}

/// The validated `[server]` plus what the admin clash check needs to point
/// at.
pub(super) struct Server {
    /// The section's values.
    pub(super) config: ServerConfig,
    /// Every traffic listener (plain and TLS), which `[access_log]
    /// listeners` may name.
    pub(super) traffic: Vec<SocketAddr>,
    listen: Vec<(SocketAddr, Option<Range<usize>>)>,
    tls_listen_span: Option<Range<usize>>,
}

/// Whether two listeners cannot both be bound: the same address, or the same
/// port where one is a wildcard covering the other. Port 0 (an ephemeral port,
/// as tests use) never clashes.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    if a.port() == 0 || a.port() != b.port() {
        return false;
    }
    let covers = |x: SocketAddr, y: SocketAddr| {
        // `0.0.0.0` covers IPv4; `[::]` covers IPv6 and, dual-stack, IPv4.
        x.ip().is_unspecified() && (x.is_ipv6() || y.is_ipv4())
    };
    a.ip() == b.ip() || covers(a, b) || covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::super::testing::*;
    use std::path::{Path, PathBuf};

    #[test]
    fn admin_allowed_hosts_are_names_without_a_port() {
        assert_err(
            &with_server("[admin]\nallowed_hosts = [\"ok.example\", \"admin.example:9901\"]\n"),
            "admin.allowed_hosts: \"admin.example:9901\" is not a host name",
            (2, 32),
        );
    }

    // ----- [server] -----------------------------------------------------------

    #[test]
    fn max_request_header_bytes_is_bounded() {
        assert_err(
            &with_server("[server]\nmax_request_header_bytes = 512\n"),
            "server.max_request_header_bytes is 512; it must be at least 1024",
            (2, 28),
        );
        assert_err(
            &with_server("[server]\nmax_request_header_bytes = 2000000\n"),
            "it must be at most 1048576",
            (2, 28),
        );
    }

    #[test]
    fn workers_must_be_at_least_one() {
        assert_err(&with_server("[server]\nworkers = 0\n"), "server.workers is 0; it must be at least 1", (2, 11));
        assert_eq!(parse_ok(&with_server("[server]\nworkers = 1\n")).server.workers, Some(1));
    }

    #[test]
    fn listen_addresses_must_parse() {
        assert_err(
            &with_server("[server]\nlisten = [\"0.0.0.0:8080\", \"localhost:8080\"]\n"),
            "server.listen: \"localhost:8080\" is not an ip:port address",
            (2, 27),
        );
        assert_err(&with_server("[server]\nlisten = []\n"), "server.listen is empty", (2, 10));
        let config = parse_ok(&with_server("[server]\nlisten = [\"[::1]:8080\"]\n"));
        assert_eq!(config.server.listen, vec!["[::1]:8080".parse().unwrap()]);
    }

    #[test]
    fn listen_addresses_must_not_clash() {
        assert_err(
            &with_server("[server]\nlisten = [\"0.0.0.0:8080\", \"0.0.0.0:8080\"]\n"),
            "server.listen: 0.0.0.0:8080 clashes with 0.0.0.0:8080",
            (2, 27),
        );
        assert_err(
            &with_server("[server]\nlisten = [\"0.0.0.0:8080\", \"127.0.0.1:8080\"]\n"),
            "server.listen: 127.0.0.1:8080 clashes with 0.0.0.0:8080",
            (2, 27),
        );
        // Different ports, or an IPv4 wildcard next to an IPv6 address, bind fine.
        parse_ok(&with_server("[server]\nlisten = [\"0.0.0.0:8080\", \"0.0.0.0:8081\", \"[::1]:8080\"]\n"));
        // Port 0 is an ephemeral port: tests bind it everywhere at once.
        parse_ok(&with_server(
            "[server]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n[server.tls]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        ));
    }

    #[test]
    fn tls_needs_listen_cert_and_key() {
        assert_err(
            &with_server("[server]\nlisten = [\"0.0.0.0:8080\"]\n[server.tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"certs/server.pem\"\n"),
            "server.tls has no key; add key = \"certs/server.key\"",
            (3, 1),
        );
        assert_err(&with_server("[server.tls]\ncert = \"c\"\nkey = \"k\"\n"), "server.tls has no listen", (1, 1));
        assert_err(
            &with_server("[server.tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"\"\nkey = \"k\"\n"),
            "server.tls.cert is empty",
            (3, 8),
        );
    }

    #[test]
    fn tls_listen_must_differ_from_plain_and_admin() {
        assert_err(
            &with_server("[server]\nlisten = [\"0.0.0.0:8080\"]\n[server.tls]\nlisten = \"127.0.0.1:8080\"\ncert = \"c\"\nkey = \"k\"\n"),
            "server.tls.listen: 127.0.0.1:8080 clashes with 0.0.0.0:8080 in server.listen; use another port",
            (4, 10),
        );
        assert_err(
            &with_server("[server.tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"c\"\nkey = \"k\"\n[admin]\nlisten = \"0.0.0.0:8443\"\n"),
            "admin.listen: 0.0.0.0:8443 clashes with 0.0.0.0:8443 in server.tls.listen",
            (6, 10),
        );
    }

    #[test]
    fn admin_listen_must_differ_from_traffic_listeners() {
        assert_err(
            &with_server("[server]\nlisten = [\"127.0.0.1:8080\"]\n[admin]\nlisten = \"127.0.0.1:8080\"\n"),
            "admin.listen: 127.0.0.1:8080 clashes with 127.0.0.1:8080 in server.listen",
            (4, 10),
        );
        // The operator did not write admin.listen: point at what walked into the default.
        assert_err(
            &with_server("[server]\nlisten = [\"127.0.0.1:8080\", \"127.0.0.1:9901\"]\n"),
            "server.listen: 127.0.0.1:9901 clashes with the default admin.listen 127.0.0.1:9901",
            (2, 29),
        );
        assert_err(
            &with_server("[admin]\nlisten = \"9901\"\n"),
            "admin.listen: \"9901\" is not an ip:port address",
            (2, 10),
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let text = with_server("[admin]\ntoken_file = \"token\"\nstate_file = \"../state/s.json\"\n");
        let config = parse(Path::new("conf/cutover.toml"), &text).unwrap();
        assert_eq!(config.admin.token_file, Some(PathBuf::from("conf/token")));
        assert_eq!(config.admin.state_file, Some(PathBuf::from("conf/../state/s.json")));
        // A bare file name has an empty parent: paths stay as written.
        let config = parse(Path::new("cutover.toml"), &text).unwrap();
        assert_eq!(config.admin.token_file, Some(PathBuf::from("token")));
        assert_err(&with_server("[admin]\nstate_file = \"\"\n"), "admin.state_file is empty", (2, 14));
    }
}
