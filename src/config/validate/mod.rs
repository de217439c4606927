//! Validation: turns the [`raw`](super::raw) tree into the domain types of
//! [`super`], or into one [`ConfigError`] that points at the offending value.
//!
//! This is the only place where a config value gets its meaning: defaults,
//! ranges, address syntax and the cross references between routes and pools.
//! It stops at the first problem, because the operator fixes one thing at a
//! time and an error that names the exact `line:col` and says what to write
//! instead is worth more than a list. When a required value is missing, the
//! error points at the table that should hold it. Messages are short, lower
//! case, name the route or pool they are about, and end with what to do.
//!
//! One file per section of the file, each with the tests of its rules:
//! [`server`] (`[server]`, `[server.tls]`, `[admin]`), [`pools`]
//! (`[pools.NAME]` with its health check and guard, and backend addresses),
//! [`routes`] (`[[routes]]`: hosts, paths, splits, sticky keys and force
//! rules), [`rollout`] (`[routes.rollout]`: a route's rollout plan), [`fleet`]
//! (`[fleet]`: etcd, prefix and identity of a replica in fleet mode). [`values`] holds the checks every section uses (names,
//! addresses, paths, integers, durations) and what makes an error point at
//! its `line:col`. This file assembles them in the file's order.

mod access_log;
mod fleet;
mod pools;
mod rollout;
mod routes;
mod server;
#[cfg(test)]
mod testing;
mod values;

use std::path::Path;

use super::raw::RawConfig;
use super::Config;
use values::{Cx, Result};

pub(crate) use server::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};

/// Parse and validate the text of a config file; `path` is used in errors and
/// to resolve relative file paths (TLS certificate and key, token and state
/// files) against the file's directory.
pub fn parse(path: &Path, text: &str) -> Result<Config> {
    let cx = Cx { path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    cx.config(raw)
}

impl Cx<'_> {
    fn config(&self, raw: RawConfig) -> Result<Config> {
        let server = self.server(raw.server.unwrap_or_default())?;
        let admin = self.admin(raw.admin.unwrap_or_default(), &server)?;
        let pools = self.pools(raw.pools)?;
        let routes = self.routes(raw.routes, &pools)?;
        let access_log = match raw.access_log {
            None => None,
            Some(log) => Some(self.access_log(log, &server)?),
        };
        let fleet = match raw.fleet {
            None => None,
            Some(fleet) => Some(self.fleet(fleet)?),
        };
        Ok(Config { server: server.config, admin, access_log, pools, routes, fleet })
    }
}

#[cfg(test)]
mod tests {
    use super::server::*;
    use super::testing::*;
    use super::values::line_col;
    use super::*;
    use crate::config::*;
    use std::path::PathBuf;
    use std::time::Duration;

    const FULL: &str = r#"
[server]
listen = ["0.0.0.0:8080", "[::1]:8081"]
request_timeout = "15s"
connect_timeout = "500ms"
idle_timeout = "2m"
upstream_idle_timeout = "45s"
drain_timeout = "45s"
shutdown_delay = "5s"
max_request_header_bytes = 32768
workers = 4
[server.tls]
listen = "0.0.0.0:8443"
cert = "certs/server.pem"
key = "/secure/server.key"

[admin]
listen = "127.0.0.1:9902"
token_file = "secrets/admin-token"
state_file = "/var/lib/cutover/state.json"
allowed_hosts = ["Cutover-Admin.internal."]

[pools.green]
backends = ["HTTPS://Green.Internal:9443/", "[::1]:9011"]
lb = "round_robin"
[pools.green.health]
path = "/ready"
interval = "5s"
timeout = "5s"
unhealthy_after = 5
healthy_after = 1
[pools.green.guard]
max_error_rate = 0.05
max_p99_latency = "250ms"
window = "1m"
min_requests = 20

[pools.blue]
backends = ["http://127.0.0.1:9001", "127.0.0.1:9002"]
[pools.blue.health]
[pools.blue.guard]
max_error_rate = 0

[[routes]]
name = "shop"
host = "Shop.Example.com"
path_prefix = "/v2"
split = { green = 10, blue = 90 }
sticky = { header = "X-User-Id" }
[[routes.force]]
header = "X-Beta"
value = "yes"
pool = "green"
[[routes.force]]
cookie = "beta"
value = "1"
pool = "green"

[[routes]]
name = "tenants"
host = "*.Example.COM"
split = { blue = 1, green = 0 }
sticky = { cookie = "cutover-tenants" }

[[routes]]
name = "rest"
split = { blue = 1 }
"#;

    #[test]
    fn full_config_round_trip() {
        let config = parse_ok(FULL);
        let expected = Config {
            server: ServerConfig {
                listen: vec!["0.0.0.0:8080".parse().unwrap(), "[::1]:8081".parse().unwrap()],
                request_timeout: Duration::from_secs(15),
                connect_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_secs(120),
                upstream_idle_timeout: Duration::from_secs(45),
                drain_timeout: Duration::from_secs(45),
                shutdown_delay: Duration::from_secs(5),
                max_request_header_bytes: 32768,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
                send_timeout: DEFAULT_SEND_TIMEOUT,
                workers: Some(4),
                allow_underscores_in_headers: false,
                tls: Some(TlsConfig {
                    listen: "0.0.0.0:8443".parse().unwrap(),
                    cert: PathBuf::from("/etc/cutover/certs/server.pem"),
                    key: PathBuf::from("/secure/server.key"),
                }),
                requests: RequestHeaders::default(),
            },
            admin: AdminConfig {
                listen: "127.0.0.1:9902".parse().unwrap(),
                token_file: Some(PathBuf::from("/etc/cutover/secrets/admin-token")),
                state_file: Some(PathBuf::from("/var/lib/cutover/state.json")),
                allowed_hosts: vec!["cutover-admin.internal".to_string()],
            },
            access_log: None,
            pools: vec![
                PoolConfig {
                    name: "blue".into(),
                    backends: vec![
                        BackendAddr { scheme: Scheme::Http, authority: "127.0.0.1:9001".into() },
                        BackendAddr { scheme: Scheme::Http, authority: "127.0.0.1:9002".into() },
                    ],
                    lb: LbPolicy::P2c,
                    protocol: UpstreamProtocol::Http1,
                    ca_file: None,
                    health: Some(HealthConfig {
                        path: "/healthz".into(),
                        interval: Duration::from_secs(2),
                        timeout: Duration::from_secs(1),
                        unhealthy_after: 3,
                        healthy_after: 2,
                    }),
                    guard: Some(GuardConfig {
                        max_error_rate: Some(0.0),
                        max_p99_latency: None,
                        window: Duration::from_secs(30),
                        min_requests: 100,
                        ..GuardConfig::default()
                    }),
                    slow_start: None,
                    retry_unanswered: true,
                    grpc_failure_codes: crate::grpc::GrpcCodes::SERVER,
                },
                PoolConfig {
                    name: "green".into(),
                    backends: vec![
                        BackendAddr { scheme: Scheme::Https, authority: "green.internal:9443".into() },
                        BackendAddr { scheme: Scheme::Http, authority: "[::1]:9011".into() },
                    ],
                    lb: LbPolicy::RoundRobin,
                    protocol: UpstreamProtocol::Http1,
                    ca_file: None,
                    health: Some(HealthConfig {
                        path: "/ready".into(),
                        interval: Duration::from_secs(5),
                        timeout: Duration::from_secs(5),
                        unhealthy_after: 5,
                        healthy_after: 1,
                    }),
                    guard: Some(GuardConfig {
                        max_error_rate: Some(0.05),
                        max_p99_latency: Some(Duration::from_millis(250)),
                        window: Duration::from_secs(60),
                        min_requests: 20,
                        ..GuardConfig::default()
                    }),
                    slow_start: None,
                    retry_unanswered: true,
                    grpc_failure_codes: crate::grpc::GrpcCodes::SERVER,
                },
            ],
            routes: vec![
                RouteConfig {
                    name: "shop".into(),
                    host: HostMatch::Exact("shop.example.com".into()),
                    path_prefix: "/v2".into(),
                    split: vec![("green".into(), 10), ("blue".into(), 90)],
                    sticky: Some(StickyKey::Header(HeaderName::from_static("x-user-id"))),
                    rollout: None,
                    force: vec![
                        ForceRule {
                            matcher: ForceMatch::Header(HeaderName::from_static("x-beta"), "yes".into()),
                            pool: "green".into(),
                        },
                        ForceRule { matcher: ForceMatch::Cookie("beta".into(), "1".into()), pool: "green".into() },
                    ],
                    mirror: None,
                },
                RouteConfig {
                    name: "tenants".into(),
                    host: HostMatch::Wildcard(".example.com".into()),
                    path_prefix: "/".into(),
                    split: vec![("blue".into(), 1), ("green".into(), 0)],
                    sticky: Some(StickyKey::Cookie("cutover-tenants".into())),
                    force: vec![],
                    rollout: None,
                    mirror: None,
                },
                RouteConfig {
                    name: "rest".into(),
                    host: HostMatch::Any,
                    path_prefix: "/".into(),
                    split: vec![("blue".into(), 1)],
                    sticky: None,
                    force: vec![],
                    rollout: None,
                    mirror: None,
                },
            ],
            fleet: None,
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn minimal_config_gets_every_default() {
        let config = parse_ok(&with_server(""));
        assert_eq!(
            config.server,
            ServerConfig {
                listen: vec!["0.0.0.0:8080".parse().unwrap()],
                request_timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(60),
                upstream_idle_timeout: Duration::from_secs(60),
                drain_timeout: Duration::from_secs(30),
                shutdown_delay: Duration::ZERO,
                max_request_header_bytes: 65536,
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
                send_timeout: DEFAULT_SEND_TIMEOUT,
                workers: None,
                allow_underscores_in_headers: false,
                tls: None,
                requests: RequestHeaders::default(),
            }
        );
        assert_eq!(
            config.admin,
            AdminConfig {
                listen: "127.0.0.1:9901".parse().unwrap(),
                token_file: None,
                state_file: None,
                allowed_hosts: Vec::new()
            }
        );
        let blue = config.pool("blue").unwrap();
        assert_eq!(blue.lb, LbPolicy::P2c);
        assert_eq!(blue.health, None);
        assert_eq!(blue.guard, None);
        let route = &config.routes[0];
        assert_eq!(route.host, HostMatch::Any);
        assert_eq!(route.path_prefix, "/");
        assert_eq!(route.sticky, None);
        assert!(route.force.is_empty());
    }

    #[test]
    fn example_configs_are_valid() {
        for file in [
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/cutover.toml"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/blue-green.toml"),
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/canary.toml"),
        ] {
            let text = std::fs::read_to_string(file).unwrap();
            if let Err(e) = parse(Path::new(file), &text) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn default_example_has_the_documented_shape() {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cutover.toml");
        let config = parse_ok(&std::fs::read_to_string(file).unwrap());
        assert_eq!(config.server.listen, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(config.admin.listen, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(config.routes[0].split, vec![("blue".into(), 90), ("canary".into(), 10)]);
        assert!(config.pool("canary").unwrap().guard.is_some());
    }

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let text = "a = 1\n# héllo wörld\nb = 2";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        let after = text.find("wörld").unwrap() + "wörld".len();
        assert_eq!(line_col(text, after), (2, 14));
        // Inside a multi-byte character: clamped to its start.
        let o = text.find('ö').unwrap();
        assert_eq!(line_col(text, o + 1), line_col(text, o));
        assert_eq!(line_col(text, text.len() + 10), (3, 6));
    }

    #[test]
    fn error_renders_as_file_line_col() {
        let e = parse(Path::new(FILE), "[server]\nworkers = 0\n").unwrap_err();
        assert_eq!(e.to_string(), "/etc/cutover/cutover.toml:2:11: server.workers is 0; it must be at least 1");
    }

    #[test]
    fn position_counts_characters_after_non_ascii() {
        // "é" is two bytes but one column.
        assert_err(
            &with_server("[server]\nlisten = [\"é\"]\n"),
            "server.listen: \"é\" is not an ip:port address",
            (2, 11),
        );
        assert_err(
            &with_routes("[[routes]]\nname = \"shop\"\nsplit = { \"bl\u{e9}\" = 1, x = 1 }\n"),
            "unknown pool \"blé\"",
            (7, 11),
        );
    }

    // ----- shape: unknown keys, wrong types, syntax ---------------------------

    #[test]
    fn unknown_keys_are_named_at_their_position() {
        assert_err(&with_server("[server]\nlisen = [\"0.0.0.0:8080\"]\n"), "unknown field `lisen`", (2, 1));
        assert_err(&with_server("[sever]\n"), "unknown field `sever`", (1, 2));
        assert_err(
            &with_pools("[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\nweight = 1\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"),
            "unknown field `weight`",
            (3, 1),
        );
        assert_err(
            &with_routes("[[routes]]\nname = \"shop\"\nsplit = { blue = 1 }\nsticky = { cookies = \"x\" }\n"),
            "unknown field `cookies`",
            (8, 12),
        );
        assert_err(
            &with_routes("[[routes]]\nname = \"shop\"\nsplit = { blue = 1 }\n[[routes.force]]\nheader = \"x\"\nvalue = \"1\"\npoool = \"blue\"\n"),
            "unknown field `poool`",
            (11, 1),
        );
        assert_err(
            &with_pools("[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.blue.health]\nintervall = \"1s\"\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"),
            "unknown field `intervall`",
            (4, 1),
        );
    }

    #[test]
    fn wrong_types_are_rejected_in_toml_terms() {
        assert_err(
            &with_server("[server]\nworkers = \"4\"\n"),
            "invalid type: string \"4\", expected an integer",
            (2, 11),
        );
        assert_err(&with_server("[server]\nlisten = \"0.0.0.0:8080\"\n"), "expected an array", (2, 10));
        assert_err(
            &with_routes("[[routes]]\nname = \"shop\"\nsplit = { blue = 0.5 }\n"),
            "invalid type: floating point `0.5`, expected an integer",
            (7, 18),
        );
        assert_err(&with_routes("[[routes]]\nname = \"shop\"\nsplit = 3\n"), "expected a table", (7, 9));
        assert_err(
            &with_routes("[[routes]]\nname = \"shop\"\nsplit = { blue = 1 }\nsticky = \"cookie\"\n"),
            "expected a table",
            (8, 10),
        );
        assert_err(
            &with_pools("[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.blue.guard]\nmax_error_rate = \"1%\"\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"),
            "expected a number",
            (4, 18),
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        assert_err("[server\nworkers = 1\n", "expected `]`", (1, 8));
        assert_err(&with_server("[server]\nworkers = \n"), "string values must be quoted", (2, 11));
        assert_err(
            &with_server("[server]\nrequest_timeout = \"1s\" junk\n"),
            "unexpected key or value, expected newline",
            (2, 24),
        );
    }

    #[test]
    fn duplicate_keys_are_named() {
        assert_err(
            &with_routes("[[routes]]\nname = \"shop\"\nsplit = { blue = 1, blue = 2 }\n"),
            "duplicate key `blue`",
            (7, 21),
        );
    }
}
