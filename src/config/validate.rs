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

use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::UpstreamProtocol;
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue};
use toml::Spanned;

use super::raw::{
    OrderedMap, RawAdmin, RawConfig, RawDuration, RawForce, RawGuard, RawHealth, RawPool, RawRoute, RawServer,
    RawSticky, RawTls,
};
use super::{
    AdminConfig, BackendAddr, Config, ConfigError, ForceMatch, ForceRule, GuardConfig, HealthConfig, HostMatch,
    LbPolicy, PoolConfig, RouteConfig, Scheme, ServerConfig, StickyKey, TlsConfig,
};

type Result<T> = std::result::Result<T, ConfigError>;

const DEFAULT_LISTEN: ([u8; 4], u16) = ([0, 0, 0, 0], 8080);
const DEFAULT_ADMIN_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 9901);
pub(crate) const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// nginx's upstream `keepalive_timeout`; shorter than the idle timeouts of
/// the common cloud load balancers and NATs (Azure 4 min, AWS NLB 350 s), so
/// a pooled connection is closed by the proxy before a middlebox forgets it.
const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Slowloris: a whole request head within 10 s of its first byte (HAProxy's
/// usual `timeout http-request`).
const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Slow POST: at most 30 s of silence inside a request body.
const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// nginx's `send_timeout`: a client that takes no byte of a response for a
/// minute is not reading it.
const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::ZERO;
const DEFAULT_MAX_REQUEST_HEADER_BYTES: i64 = 65_536;
const MIN_REQUEST_HEADER_BYTES: i64 = 1024;
const MAX_REQUEST_HEADER_BYTES: i64 = 1_048_576;
const DEFAULT_HEALTH_PATH: &str = "/healthz";
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_UNHEALTHY_AFTER: i64 = 3;
const DEFAULT_HEALTHY_AFTER: i64 = 2;
const DEFAULT_GUARD_WINDOW: Duration = Duration::from_secs(30);
const DEFAULT_MIN_REQUESTS: i64 = 100;
/// Largest weight of one pool; keeps sums far from overflow in any integer
/// type the splitter may use.
const MAX_WEIGHT: i64 = 1_000_000;
/// Largest accepted duration. Nothing in a proxy needs more than a year, and
/// the cap keeps `Instant + duration` from overflowing anywhere downstream.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// What an operator should write when a duration is wrong.
const DURATION_HINT: &str = "write it like \"250ms\", \"30s\" or \"5m\"";

/// Parse and validate the text of a config file; `path` is used in errors and
/// to resolve relative file paths (TLS certificate and key, token and state
/// files) against the file's directory.
pub fn parse(path: &Path, text: &str) -> Result<Config> {
    let cx = Cx { path, text };
    let raw: RawConfig = toml::from_str(text).map_err(|e| cx.toml_error(&e))?;
    cx.config(raw)
}

/// 1-based `(line, column)` of `byte_offset` in `text`, the column counted in
/// characters (what an editor shows), not bytes. Offsets past the end, or
/// inside a multi-byte character, are clamped to the nearest position before.
pub(crate) fn line_col(text: &str, byte_offset: usize) -> (usize, usize) {
    let mut offset = byte_offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// The file being validated: everything an error needs to say where it is.
struct Cx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Cx<'_> {
    fn err(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            position: Some(line_col(self.text, span.start)),
            message: message.into(),
        }
    }

    /// A syntax, type or unknown-key error from the `toml` crate, reworded
    /// where its message talks about Rust types rather than TOML ones.
    fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let key = span.clone().and_then(|s| self.text.get(s));
        ConfigError {
            path: self.path.to_path_buf(),
            position: span.map(|s| line_col(self.text, s.start)),
            message: tidy_toml_message(e.message(), key),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config> {
        let server = self.server(raw.server.unwrap_or_default())?;
        let admin = self.admin(raw.admin.unwrap_or_default(), &server)?;
        let pools = self.pools(raw.pools)?;
        let routes = self.routes(raw.routes, &pools)?;
        Ok(Config { server: server.config, admin, pools, routes })
    }

    // ----- [server] ---------------------------------------------------------

    fn server(&self, raw: RawServer) -> Result<Server> {
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
        };
        Ok(Server { config, listen, tls_listen_span: tls.map(|(_, span)| span) })
    }

    /// `[server.tls]`; also returns the span of its `listen` for the admin
    /// clash check.
    fn tls(
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

    fn admin(&self, raw: RawAdmin, server: &Server) -> Result<AdminConfig> {
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

    // ----- [pools.NAME] -----------------------------------------------------

    fn pools(&self, raw: Option<Spanned<OrderedMap<Spanned<RawPool>>>>) -> Result<Vec<PoolConfig>> {
        const NO_POOLS: &str = "no pools defined; add a [pools.NAME] table with backends = [\"host:port\"]";
        let Some(raw) = raw else {
            return Err(self.err(0..0, NO_POOLS));
        };
        let span = raw.span();
        let entries = raw.into_inner().0;
        if entries.is_empty() {
            return Err(self.err(span, NO_POOLS));
        }
        let mut pools = Vec::with_capacity(entries.len());
        for (name, pool) in entries {
            self.check_name(&name, "pool")?;
            pools.push(self.pool(name.into_inner(), pool)?);
        }
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools)
    }

    fn pool(&self, name: String, raw: Spanned<RawPool>) -> Result<PoolConfig> {
        let table = raw.span();
        let raw = raw.into_inner();
        let no_backends = format!("pool \"{name}\" has no backends; add backends = [\"host:port\"]");
        let list = raw.backends.ok_or_else(|| self.err(table.clone(), no_backends.clone()))?;
        if list.get_ref().is_empty() {
            return Err(self.err(list.span(), no_backends));
        }
        let mut backends: Vec<BackendAddr> = Vec::with_capacity(list.get_ref().len());
        for item in list.get_ref() {
            let backend = parse_backend(item.get_ref()).map_err(|problem| {
                self.err(item.span(), format!("pool \"{name}\": backend \"{}\" {problem}", item.get_ref()))
            })?;
            if backends.contains(&backend) {
                return Err(self.err(
                    item.span(),
                    format!("pool \"{name}\": backend \"{}\" is listed twice; remove one", item.get_ref()),
                ));
            }
            backends.push(backend);
        }

        let lb = match &raw.lb {
            None => LbPolicy::default(),
            Some(v) => match v.get_ref().as_str() {
                "p2c" => LbPolicy::P2c,
                "round_robin" => LbPolicy::RoundRobin,
                "random" => LbPolicy::Random,
                other => {
                    return Err(self.err(
                        v.span(),
                        format!("pool \"{name}\": unknown lb \"{other}\"; use one of p2c, round_robin, random"),
                    ))
                }
            },
        };

        let protocol = match &raw.protocol {
            None => UpstreamProtocol::Http1,
            Some(v) => match v.get_ref().as_str() {
                "http1" => UpstreamProtocol::Http1,
                "h2" => UpstreamProtocol::H2,
                other => {
                    return Err(self.err(
                        v.span(),
                        format!("pool \"{name}\": unknown protocol \"{other}\"; use \"http1\" or \"h2\""),
                    ))
                }
            },
        };
        let ca_file = match &raw.ca_file {
            None => None,
            Some(v) => {
                let path = self.file_path(v, "ca_file")?;
                // Checked here so that `cutover check` and a reload catch an
                // unusable CA file before any backend connection needs it.
                if let Err(e) = crate::tls::client_config(Some(&path), &[]) {
                    return Err(self.err(v.span(), format!("pool \"{name}\": ca_file {e}")));
                }
                Some(path)
            }
        };
        if ca_file.is_some() && !backends.iter().any(|b| b.scheme == Scheme::Https) {
            let span = raw.ca_file.as_ref().map(|v| v.span()).unwrap_or(table.clone());
            return Err(self.err(span, format!("pool \"{name}\": ca_file is set but no backend is https://")));
        }
        let health = raw.health.map(|h| self.health(&name, h)).transpose()?;
        let guard = raw.guard.map(|g| self.guard(&name, g)).transpose()?;
        Ok(PoolConfig { name, backends, lb, protocol, ca_file, health, guard })
    }

    fn health(&self, pool: &str, raw: RawHealth) -> Result<HealthConfig> {
        let path = match &raw.path {
            None => DEFAULT_HEALTH_PATH.to_owned(),
            Some(v) => {
                let p = v.get_ref();
                let valid = p.starts_with('/')
                    && !p.contains('#')
                    && !p.chars().any(char::is_whitespace)
                    && p.parse::<PathAndQuery>().is_ok();
                if !valid {
                    return Err(self.err(
                        v.span(),
                        format!("pool \"{pool}\": health.path \"{p}\" must be a path starting with \"/\", e.g. \"/healthz\""),
                    ));
                }
                p.clone()
            }
        };
        let interval = self.duration_or(
            raw.interval.as_ref(),
            &format!("pool \"{pool}\": health.interval"),
            DEFAULT_HEALTH_INTERVAL,
            false,
        )?;
        let timeout = self.duration_or(
            raw.timeout.as_ref(),
            &format!("pool \"{pool}\": health.timeout"),
            DEFAULT_HEALTH_TIMEOUT,
            false,
        )?;
        if timeout > interval {
            // Point at whichever of the two the operator actually wrote.
            let span = raw.timeout.as_ref().or(raw.interval.as_ref()).map_or(0..0, Spanned::span);
            return Err(self.err(
                span,
                format!(
                    "pool \"{pool}\": health.timeout ({}) is longer than health.interval ({}); \
                     make the timeout at most the interval",
                    humantime::format_duration(timeout),
                    humantime::format_duration(interval),
                ),
            ));
        }
        let threshold = |v: &Option<Spanned<i64>>, key: &str, default: i64| match v {
            None => Ok(default),
            Some(v) => self.int_in(v, &format!("pool \"{pool}\": health.{key}"), 1, i64::from(u32::MAX)),
        };
        let unhealthy_after = threshold(&raw.unhealthy_after, "unhealthy_after", DEFAULT_UNHEALTHY_AFTER)?;
        let healthy_after = threshold(&raw.healthy_after, "healthy_after", DEFAULT_HEALTHY_AFTER)?;
        Ok(HealthConfig {
            path,
            interval,
            timeout,
            unhealthy_after: to_u32(unhealthy_after),
            healthy_after: to_u32(healthy_after),
        })
    }

    fn guard(&self, pool: &str, raw: Spanned<RawGuard>) -> Result<GuardConfig> {
        let table = raw.span();
        let raw = raw.into_inner();
        let rate = raw.max_error_rate.ok_or_else(|| {
            self.err(
                table,
                format!("pool \"{pool}\": guard has no max_error_rate; add e.g. max_error_rate = 0.01 (1%)"),
            )
        })?;
        let max_error_rate = *rate.get_ref();
        if !(0.0..=1.0).contains(&max_error_rate) {
            return Err(self.err(
                rate.span(),
                format!(
                    "pool \"{pool}\": guard.max_error_rate {max_error_rate} is outside 0..1; \
                     it is a share of requests, e.g. 0.01 for 1%"
                ),
            ));
        }
        let max_p99_latency = raw
            .max_p99_latency
            .as_ref()
            .map(|v| self.duration(v, &format!("pool \"{pool}\": guard.max_p99_latency"), false))
            .transpose()?;
        let window = self.duration_or(
            raw.window.as_ref(),
            &format!("pool \"{pool}\": guard.window"),
            DEFAULT_GUARD_WINDOW,
            false,
        )?;
        let min_requests = match &raw.min_requests {
            None => DEFAULT_MIN_REQUESTS,
            Some(v) => self.int_in(v, &format!("pool \"{pool}\": guard.min_requests"), 1, i64::MAX)?,
        };
        Ok(GuardConfig { max_error_rate, max_p99_latency, window, min_requests: min_requests.unsigned_abs() })
    }

    // ----- [[routes]] -------------------------------------------------------

    fn routes(&self, raw: Option<Spanned<Vec<Spanned<RawRoute>>>>, pools: &[PoolConfig]) -> Result<Vec<RouteConfig>> {
        const NO_ROUTES: &str = "no routes defined; add a [[routes]] table with a name and a split";
        let Some(raw) = raw else {
            return Err(self.err(0..0, NO_ROUTES));
        };
        let span = raw.span();
        let items = raw.into_inner();
        if items.is_empty() {
            return Err(self.err(span, NO_ROUTES));
        }
        let mut routes: Vec<RouteConfig> = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let table = item.span();
            let raw = item.into_inner();
            let name = raw.name.as_ref().ok_or_else(|| {
                self.err(table.clone(), format!("route #{} has no name; add name = \"...\"", index + 1))
            })?;
            self.check_name(name, "route")?;
            let name_str = name.get_ref().clone();
            if routes.iter().any(|r| r.name == name_str) {
                return Err(self
                    .err(name.span(), format!("route \"{name_str}\" is defined twice; give each route its own name")));
            }
            let route = self.route(name_str, table.clone(), &raw, pools)?;
            if let Some(earlier) = routes.iter().find(|r| r.host == route.host && r.path_prefix == route.path_prefix) {
                let span = raw.path_prefix.as_ref().or(raw.host.as_ref()).map_or(table, Spanned::span);
                return Err(self.err(
                    span,
                    format!(
                        "route \"{}\" has the same host and path_prefix as route \"{}\", so it can never match; \
                         change one of them",
                        route.name, earlier.name
                    ),
                ));
            }
            routes.push(route);
        }
        Ok(routes)
    }

    fn route(&self, name: String, table: Range<usize>, raw: &RawRoute, pools: &[PoolConfig]) -> Result<RouteConfig> {
        let host = match &raw.host {
            None => HostMatch::Any,
            Some(v) => self.host_match(&name, v)?,
        };
        let path_prefix = match &raw.path_prefix {
            None => "/".to_owned(),
            Some(v) => self.path_prefix(&name, v)?,
        };
        let split = self.split(&name, table, raw.split.as_ref(), pools)?;
        let sticky = raw.sticky.as_ref().map(|s| self.sticky(&name, s)).transpose()?;
        let force =
            raw.force.iter().flatten().map(|f| self.force(&name, f, &split, pools)).collect::<Result<Vec<_>>>()?;
        Ok(RouteConfig { name, host, path_prefix, split, sticky, force })
    }

    fn host_match(&self, route: &str, v: &Spanned<String>) -> Result<HostMatch> {
        let raw = v.get_ref();
        let host = raw.to_ascii_lowercase();
        let fail = |why: &str| self.err(v.span(), format!("route \"{route}\": host \"{raw}\" {why}"));
        if host.is_empty() {
            return Err(
                self.err(v.span(), format!("route \"{route}\": host is empty; remove the key to match any host"))
            );
        }
        if host.chars().any(char::is_whitespace) {
            return Err(fail("contains spaces; write one host name per route"));
        }
        if host.contains(['/', '?', '#', '@']) {
            return Err(fail("must be a host name, not a URL; put the path in path_prefix"));
        }
        if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.contains('*') {
                return Err(fail("may only use \"*\" as a leading \"*.\", e.g. \"*.example.com\""));
            }
            if suffix.contains(':') {
                return Err(fail("must not include a port; the port of the Host header is ignored"));
            }
            if !is_dns_name(suffix) {
                return Err(fail("is not a valid host name; write e.g. \"*.example.com\""));
            }
            return Ok(HostMatch::Wildcard(format!(".{suffix}")));
        }
        if host.contains('*') {
            return Err(fail("may only use \"*\" as a leading \"*.\", e.g. \"*.example.com\""));
        }
        if let Some(inner) = host.strip_prefix('[') {
            // An IPv6 literal: the only host with colons in it.
            return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
                Some(Ok(_)) => Ok(HostMatch::Exact(host)),
                _ if inner.contains("]:") => {
                    Err(fail("must not include a port; the port of the Host header is ignored"))
                }
                _ => Err(fail("is not a valid IPv6 literal; write e.g. \"[::1]\"")),
            };
        }
        if host.contains(':') {
            return Err(fail("must not include a port; the port of the Host header is ignored"));
        }
        if !is_dns_name(&host) {
            return Err(fail("is not a valid host name; write e.g. \"shop.example.com\""));
        }
        Ok(HostMatch::Exact(host))
    }

    fn path_prefix(&self, route: &str, v: &Spanned<String>) -> Result<String> {
        let p = v.get_ref();
        let why = if !p.starts_with('/') {
            "must start with \"/\""
        } else if p.contains(['?', '#']) {
            "must not contain \"?\" or \"#\"; it matches the path only"
        } else if p.chars().any(|c| c.is_whitespace() || c.is_control()) {
            "must not contain spaces or control characters"
        } else {
            return Ok(p.clone());
        };
        Err(self.err(v.span(), format!("route \"{route}\": path_prefix \"{p}\" {why}")))
    }

    fn split(
        &self,
        route: &str,
        table: Range<usize>,
        raw: Option<&Spanned<OrderedMap<Spanned<i64>>>>,
        pools: &[PoolConfig],
    ) -> Result<Vec<(String, u32)>> {
        let raw = raw.ok_or_else(|| {
            self.err(table, format!("route \"{route}\" has no split; add e.g. split = {{ blue = 100 }}"))
        })?;
        let entries = &raw.get_ref().0;
        if entries.is_empty() {
            return Err(
                self.err(raw.span(), format!("route \"{route}\": split is empty; give at least one pool a weight"))
            );
        }
        let mut split: Vec<(String, u32)> = Vec::with_capacity(entries.len());
        for (pool, weight) in entries {
            let pool_name = pool.get_ref();
            if !pools.iter().any(|p| &p.name == pool_name) {
                return Err(self.err(
                    pool.span(),
                    format!(
                        "route \"{route}\": split names unknown pool \"{pool_name}\" (known: {})",
                        known_pools(pools)
                    ),
                ));
            }
            if split.iter().any(|(p, _)| p == pool_name) {
                return Err(self.err(
                    pool.span(),
                    format!("route \"{route}\": pool \"{pool_name}\" appears twice in split; keep one"),
                ));
            }
            let w = *weight.get_ref();
            if w < 0 {
                return Err(self.err(
                    weight.span(),
                    format!("route \"{route}\": weight of \"{pool_name}\" is {w}; weights are integers >= 0"),
                ));
            }
            if w > MAX_WEIGHT {
                return Err(self.err(
                    weight.span(),
                    format!("route \"{route}\": weight of \"{pool_name}\" is {w}; the largest allowed is {MAX_WEIGHT}"),
                ));
            }
            split.push((pool_name.clone(), to_u32(w)));
        }
        if split.iter().all(|(_, w)| *w == 0) {
            return Err(self.err(
                raw.span(),
                format!("route \"{route}\": all weights are zero; at least one pool must take traffic"),
            ));
        }
        Ok(split)
    }

    fn sticky(&self, route: &str, raw: &Spanned<RawSticky>) -> Result<StickyKey> {
        match (&raw.get_ref().cookie, &raw.get_ref().header) {
            (Some(_), Some(_)) => Err(self.err(
                raw.span(),
                format!("route \"{route}\": sticky takes either cookie or header, not both; keep one"),
            )),
            (None, None) => {
                Err(self
                    .err(raw.span(), format!("route \"{route}\": sticky needs cookie = \"name\" or header = \"name\"")))
            }
            (Some(cookie), None) => Ok(StickyKey::Cookie(self.cookie_name(route, "sticky", cookie)?)),
            (None, Some(header)) => Ok(StickyKey::Header(self.header_name(route, "sticky", header)?)),
        }
    }

    fn force(
        &self,
        route: &str,
        raw: &Spanned<RawForce>,
        split: &[(String, u32)],
        pools: &[PoolConfig],
    ) -> Result<ForceRule> {
        let table = raw.span();
        let f = raw.get_ref();
        let missing_value =
            || self.err(table.clone(), format!("route \"{route}\": force rule has no value; add value = \"...\""));
        let matcher = match (&f.header, &f.cookie) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    table,
                    format!("route \"{route}\": a force rule takes either header or cookie, not both; keep one"),
                ))
            }
            (None, None) => {
                return Err(self
                    .err(table, format!("route \"{route}\": force rule needs header = \"name\" or cookie = \"name\"")))
            }
            (Some(header), None) => {
                let name = self.header_name(route, "force", header)?;
                let value = f.value.as_ref().ok_or_else(missing_value)?;
                let v = value.get_ref();
                if v.is_empty() || HeaderValue::from_str(v).is_err() {
                    return Err(self.err(
                        value.span(),
                        format!(
                            "route \"{route}\": force value \"{v}\" is not a valid header value; use visible ASCII"
                        ),
                    ));
                }
                ForceMatch::Header(name, v.clone())
            }
            (None, Some(cookie)) => {
                let name = self.cookie_name(route, "force", cookie)?;
                let value = f.value.as_ref().ok_or_else(missing_value)?;
                let v = value.get_ref();
                if v.is_empty() || !v.bytes().all(is_cookie_octet) {
                    return Err(self.err(
                        value.span(),
                        format!(
                            "route \"{route}\": force value \"{v}\" is not a valid cookie value; \
                             use visible ASCII without spaces, quotes, commas, semicolons or backslashes"
                        ),
                    ));
                }
                ForceMatch::Cookie(name, v.clone())
            }
        };
        let pool = f.pool.as_ref().ok_or_else(|| {
            self.err(table.clone(), format!("route \"{route}\": force rule has no pool; add pool = \"name\""))
        })?;
        let pool_name = pool.get_ref();
        if !split.iter().any(|(p, _)| p == pool_name) {
            let message = if pools.iter().any(|p| &p.name == pool_name) {
                format!("route \"{route}\": force pool \"{pool_name}\" is not in the route's split; add it to the split with weight 0")
            } else {
                format!("route \"{route}\": force names unknown pool \"{pool_name}\" (known: {})", known_pools(pools))
            };
            return Err(self.err(pool.span(), message));
        }
        Ok(ForceRule { matcher, pool: pool_name.clone() })
    }

    // ----- shared value checks ----------------------------------------------

    fn check_name(&self, name: &Spanned<String>, kind: &str) -> Result<()> {
        let n = name.get_ref();
        if n.is_empty() {
            return Err(
                self.err(name.span(), format!("{kind} name is empty; use ASCII letters, digits, '-', '_' or '.'"))
            );
        }
        if !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            // Names end up in admin URL paths and metric labels.
            return Err(self.err(
                name.span(),
                format!("{kind} name \"{n}\" may only contain ASCII letters, digits, '-', '_' and '.'"),
            ));
        }
        Ok(())
    }

    fn header_name(&self, route: &str, what: &str, v: &Spanned<String>) -> Result<HeaderName> {
        HeaderName::from_bytes(v.get_ref().to_ascii_lowercase().as_bytes()).map_err(|_| {
            self.err(
                v.span(),
                format!("route \"{route}\": {what} header \"{}\" is not a valid header name", v.get_ref()),
            )
        })
    }

    fn cookie_name(&self, route: &str, what: &str, v: &Spanned<String>) -> Result<String> {
        let n = v.get_ref();
        if n.is_empty() || !n.bytes().all(is_tchar) {
            return Err(self.err(
                v.span(),
                format!("route \"{route}\": {what} cookie \"{n}\" is not a valid cookie name; use e.g. letters, digits, '-' and '_'"),
            ));
        }
        Ok(n.clone())
    }

    fn socket_addr(&self, v: &Spanned<String>, key: &str) -> Result<SocketAddr> {
        v.get_ref().parse().map_err(|_| {
            self.err(
                v.span(),
                format!(
                    "{key}: \"{}\" is not an ip:port address; write e.g. \"0.0.0.0:8080\" or \"[::1]:8080\"",
                    v.get_ref()
                ),
            )
        })
    }

    fn file_path(&self, v: &Spanned<String>, key: &str) -> Result<PathBuf> {
        if v.get_ref().is_empty() {
            return Err(self.err(v.span(), format!("{key} is empty; give a file path or remove the key")));
        }
        let p = Path::new(v.get_ref());
        // Relative to the config file, not to wherever the proxy was started.
        Ok(match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        })
    }

    fn int_in(&self, v: &Spanned<i64>, what: &str, min: i64, max: i64) -> Result<i64> {
        let n = *v.get_ref();
        if n < min {
            return Err(self.err(v.span(), format!("{what} is {n}; it must be at least {min}")));
        }
        if n > max {
            return Err(self.err(v.span(), format!("{what} is {n}; it must be at most {max}")));
        }
        Ok(n)
    }

    fn duration_or(
        &self,
        v: Option<&Spanned<RawDuration>>,
        what: &str,
        default: Duration,
        zero_ok: bool,
    ) -> Result<Duration> {
        match v {
            None => Ok(default),
            Some(v) => self.duration(v, what, zero_ok),
        }
    }

    fn duration(&self, v: &Spanned<RawDuration>, what: &str, zero_ok: bool) -> Result<Duration> {
        let text = &v.get_ref().0;
        let d = humantime::parse_duration(text).map_err(|e| {
            let problem = match e {
                humantime::DurationError::Empty => "is empty".to_owned(),
                humantime::DurationError::UnknownUnit { unit, .. } if unit.is_empty() => {
                    format!("\"{text}\" has no unit")
                }
                humantime::DurationError::UnknownUnit { unit, .. } => {
                    format!("\"{text}\" has an unknown unit \"{unit}\"")
                }
                humantime::DurationError::NumberOverflow => format!("\"{text}\" is too large"),
                _ => format!("\"{text}\" is not a duration"),
            };
            self.err(v.span(), format!("{what}: {problem}; {DURATION_HINT}"))
        })?;
        if d.is_zero() && !zero_ok {
            return Err(self.err(v.span(), format!("{what} must be greater than zero; {DURATION_HINT}")));
        }
        if d > MAX_DURATION {
            return Err(self.err(v.span(), format!("{what}: \"{text}\" is too long; the most is 365 days")));
        }
        Ok(d)
    }
}

/// The validated `[server]` plus what the admin clash check needs to point
/// at.
struct Server {
    config: ServerConfig,
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

/// `host:port`, `http://host:port` or `https://host:port`, optionally with a
/// trailing `/`; the error says what is wrong, after the quoted backend.
fn parse_backend(s: &str) -> std::result::Result<BackendAddr, String> {
    const FORMS: &str = "use host:port, http://host:port or https://host:port";
    let lower = s.to_ascii_lowercase();
    let (scheme, rest) = if let Some(rest) = lower.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = lower.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some((scheme, _)) = lower.split_once("://") {
        return Err(format!("has unsupported scheme \"{scheme}\"; {FORMS}"));
    } else {
        (Scheme::Http, lower.as_str())
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(format!("has no host; {FORMS}"));
    }
    if rest.contains('@') {
        return Err(format!("must not contain user info; {FORMS}"));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(format!("must not have a path or query (the request's own path is forwarded); {FORMS}"));
    }
    let (host, port) = if rest.starts_with('[') {
        let end = rest.find(']').ok_or_else(|| format!("has an unclosed IPv6 bracket; {FORMS}"))?;
        let (host, after) = rest.split_at(end + 1);
        if host[1..end].parse::<Ipv6Addr>().is_err() {
            return Err("has an invalid IPv6 address; write e.g. \"[::1]:9001\"".to_owned());
        }
        if !after.is_empty() && !after.starts_with(':') {
            return Err("has text after the IPv6 address; write e.g. \"[::1]:9001\"".to_owned());
        }
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err("has an IPv6 address without brackets; write e.g. \"[::1]:9001\"".to_owned())
            }
            Some((host, port)) => {
                if !is_dns_name(host) {
                    return Err(format!("has an invalid host \"{host}\"; {FORMS}"));
                }
                (host, Some(port))
            }
            None => (rest, None),
        }
    };
    let port = port.ok_or_else(|| format!("has no port; write e.g. \"{host}:80\""))?;
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(format!("has an invalid port \"{port}\"; use 1 to 65535")),
    };
    Ok(BackendAddr { scheme, authority: format!("{host}:{port}") })
}

/// A lowercase DNS-style name or IPv4 address: dot-separated non-empty labels
/// of letters, digits, `-` and `_`.
fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        })
}

/// RFC 9110 `tchar`, which is what a cookie name (RFC 6265 `token`) is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 6265 `cookie-octet`: visible ASCII except `"`, `,`, `;` and `\`.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E)
}

fn known_pools(pools: &[PoolConfig]) -> String {
    pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

/// Callers range-check first; saturate rather than panic if they did not.
fn to_u32(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The `toml` crate's messages speak serde ("expected i64", "expected struct
/// RawPool"); say it in TOML terms, on one line.
fn tidy_toml_message(message: &str, key: Option<&str>) -> String {
    let mut m = message
        .trim()
        .replace('\n', "; ")
        .replace("expected i64", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a sequence", "expected an array")
        .replace("expected a map", "expected a table");
    if let Some(i) = m.find("expected struct ") {
        let name_start = i + "expected struct ".len();
        let name_len =
            m[name_start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(m.len() - name_start);
        m.replace_range(i + "expected ".len()..name_start + name_len, "a table");
    }
    if m == "duplicate key" {
        if let Some(key) = key {
            m = format!("duplicate key `{}`; each key may appear only once in a table", key.trim());
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/cutover/cutover.toml";

    /// Two pools, lines 1-4.
    const POOLS: &str = r#"[pools.blue]
backends = ["127.0.0.1:9001"]
[pools.canary]
backends = ["127.0.0.1:9003"]
"#;

    /// One route, three lines.
    const ROUTE: &str = r#"[[routes]]
name = "shop"
split = { blue = 90, canary = 10 }
"#;

    fn parse_ok(text: &str) -> Config {
        match parse(Path::new(FILE), text) {
            Ok(config) => config,
            Err(e) => panic!("unexpected error: {e}\n--- config ---\n{text}"),
        }
    }

    #[track_caller]
    fn assert_err(text: &str, needle: &str, position: (usize, usize)) {
        let e = match parse(Path::new(FILE), text) {
            Ok(_) => panic!("config should be rejected ({needle}):\n{text}"),
            Err(e) => e,
        };
        assert!(e.message.contains(needle), "message {:?} does not contain {:?}", e.message, needle);
        assert_eq!(e.position, Some(position), "position of {:?}", e.message);
        assert_eq!(e.path, Path::new(FILE));
    }

    /// `head` (the part under test) followed by valid pools and a route.
    fn with_server(head: &str) -> String {
        format!("{head}{POOLS}{ROUTE}")
    }

    /// Valid pools (lines 1-4) followed by `routes` from line 5.
    fn with_routes(routes: &str) -> String {
        format!("{POOLS}{routes}")
    }

    /// `pools` followed by a route over blue and canary.
    fn with_pools(pools: &str) -> String {
        format!("{pools}{ROUTE}")
    }

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
            },
            admin: AdminConfig {
                listen: "127.0.0.1:9902".parse().unwrap(),
                token_file: Some(PathBuf::from("/etc/cutover/secrets/admin-token")),
                state_file: Some(PathBuf::from("/var/lib/cutover/state.json")),
                allowed_hosts: vec!["cutover-admin.internal".to_string()],
            },
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
                        max_error_rate: 0.0,
                        max_p99_latency: None,
                        window: Duration::from_secs(30),
                        min_requests: 100,
                    }),
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
                        max_error_rate: 0.05,
                        max_p99_latency: Some(Duration::from_millis(250)),
                        window: Duration::from_secs(60),
                        min_requests: 20,
                    }),
                },
            ],
            routes: vec![
                RouteConfig {
                    name: "shop".into(),
                    host: HostMatch::Exact("shop.example.com".into()),
                    path_prefix: "/v2".into(),
                    split: vec![("green".into(), 10), ("blue".into(), 90)],
                    sticky: Some(StickyKey::Header(HeaderName::from_static("x-user-id"))),
                    force: vec![
                        ForceRule {
                            matcher: ForceMatch::Header(HeaderName::from_static("x-beta"), "yes".into()),
                            pool: "green".into(),
                        },
                        ForceRule { matcher: ForceMatch::Cookie("beta".into(), "1".into()), pool: "green".into() },
                    ],
                },
                RouteConfig {
                    name: "tenants".into(),
                    host: HostMatch::Wildcard(".example.com".into()),
                    path_prefix: "/".into(),
                    split: vec![("blue".into(), 1), ("green".into(), 0)],
                    sticky: Some(StickyKey::Cookie("cutover-tenants".into())),
                    force: vec![],
                },
                RouteConfig {
                    name: "rest".into(),
                    host: HostMatch::Any,
                    path_prefix: "/".into(),
                    split: vec![("blue".into(), 1)],
                    sticky: None,
                    force: vec![],
                },
            ],
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
    fn admin_allowed_hosts_are_names_without_a_port() {
        assert_err(
            &with_server("[admin]\nallowed_hosts = [\"ok.example\", \"admin.example:9901\"]\n"),
            "admin.allowed_hosts: \"admin.example:9901\" is not a host name",
            (2, 32),
        );
    }

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

    // ----- durations ----------------------------------------------------------

    #[test]
    fn durations_must_parse() {
        assert_err(
            &with_server("[server]\nrequest_timeout = \"3x\"\n"),
            "server.request_timeout: \"3x\" has an unknown unit \"x\"; write it like \"250ms\"",
            (2, 19),
        );
        assert_err(&with_server("[server]\nconnect_timeout = \"\"\n"), "server.connect_timeout: is empty", (2, 19));
        assert_err(&with_server("[server]\nidle_timeout = \"30\"\n"), "\"30\" has no unit", (2, 16));
        assert_err(
            &with_server("[server]\ndrain_timeout = 30\n"),
            "expected a duration string like \"250ms\"",
            (2, 17),
        );
        assert_err(
            &with_server("[server]\nidle_timeout = \"400days\"\n"),
            "server.idle_timeout: \"400days\" is too long",
            (2, 16),
        );
    }

    #[test]
    fn durations_may_be_zero_only_for_shutdown_delay() {
        assert_err(
            &with_server("[server]\nrequest_timeout = \"0s\"\n"),
            "server.request_timeout must be greater than zero",
            (2, 19),
        );
        let config = parse_ok(&with_server("[server]\nshutdown_delay = \"0s\"\n"));
        assert_eq!(config.server.shutdown_delay, Duration::ZERO);
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

    // ----- [pools] ------------------------------------------------------------

    #[test]
    fn at_least_one_pool() {
        assert_err(ROUTE, "no pools defined; add a [pools.NAME] table", (1, 1));
        assert_err(&format!("pools = {{}}\n{ROUTE}"), "no pools defined", (1, 9));
    }

    #[test]
    fn pool_names_are_restricted() {
        assert_err(
            &with_pools("[pools.\"blue green\"]\nbackends = [\"127.0.0.1:9001\"]\n"),
            "pool name \"blue green\" may only contain ASCII letters, digits, '-', '_' and '.'",
            (1, 8),
        );
        assert_err(&with_pools("[pools.\"\"]\nbackends = [\"127.0.0.1:9001\"]\n"), "pool name is empty", (1, 8));
        let config = parse_ok(
            "[pools.\"blue-2_a.b\"]\nbackends = [\"127.0.0.1:9001\"]\n[[routes]]\nname = \"r\"\nsplit = { \"blue-2_a.b\" = 1 }\n",
        );
        assert_eq!(config.pools[0].name, "blue-2_a.b");
    }

    #[test]
    fn pool_needs_backends() {
        assert_err(
            &with_pools("[pools.blue]\nlb = \"p2c\"\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"),
            "pool \"blue\" has no backends; add backends = [\"host:port\"]",
            (1, 1),
        );
        assert_err(
            &with_pools("[pools.blue]\nbackends = []\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"),
            "pool \"blue\" has no backends",
            (2, 12),
        );
    }

    #[test]
    fn backend_forms() {
        let config = parse_ok(&with_pools(
            "[pools.blue]\nbackends = [\"HTTP://App.Internal:8080/\", \"https://[::1]:9443\", \"10.0.0.1:80\", \"[FE80::1]:81/\"]\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n",
        ));
        let backends: Vec<(Scheme, &str)> =
            config.pools[0].backends.iter().map(|b| (b.scheme, b.authority.as_str())).collect();
        assert_eq!(
            backends,
            vec![
                (Scheme::Http, "app.internal:8080"),
                (Scheme::Https, "[::1]:9443"),
                (Scheme::Http, "10.0.0.1:80"),
                (Scheme::Http, "[fe80::1]:81"),
            ]
        );
    }

    #[test]
    fn malformed_backends_are_rejected() {
        let cases = [
            ("http://127.0.0.1:9001/api", "must not have a path or query"),
            ("127.0.0.1:9001?x=1", "must not have a path or query"),
            ("http://user@host:80", "must not contain user info"),
            ("127.0.0.1", "has no port; write e.g. \"127.0.0.1:80\""),
            ("127.0.0.1:0", "has an invalid port \"0\"; use 1 to 65535"),
            ("127.0.0.1:70000", "has an invalid port \"70000\""),
            ("127.0.0.1:+80", "has an invalid port \"+80\""),
            ("ftp://host:21", "has unsupported scheme \"ftp\""),
            ("::1:9001", "has an IPv6 address without brackets"),
            ("[::1]", "has no port"),
            ("[zz::1]:80", "has an invalid IPv6 address"),
            ("bad host:80", "has an invalid host \"bad host\""),
            ("", "has no host"),
        ];
        for (backend, needle) in cases {
            assert_err(
                &with_pools(&format!(
                    "[pools.blue]\nbackends = [\"{backend}\"]\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"
                )),
                &format!("pool \"blue\": backend \"{backend}\" {needle}"),
                (2, 13),
            );
        }
    }

    #[test]
    fn duplicate_backends_are_rejected_at_the_second() {
        assert_err(
            &with_pools("[pools.blue]\nbackends = [\"127.0.0.1:9001\", \"http://127.0.0.1:9001/\"]\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"),
            "pool \"blue\": backend \"http://127.0.0.1:9001/\" is listed twice; remove one",
            (2, 31),
        );
        // The same address over plain and TLS is two backends.
        parse_ok(&with_pools(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\", \"https://127.0.0.1:9001\"]\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n",
        ));
    }

    #[test]
    fn lb_must_be_known() {
        assert_err(
            &with_pools("[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\nlb = \"rr\"\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"),
            "pool \"blue\": unknown lb \"rr\"; use one of p2c, round_robin, random",
            (3, 6),
        );
        let config = parse_ok(&with_pools(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\nlb = \"random\"\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n",
        ));
        assert_eq!(config.pools[0].lb, LbPolicy::Random);
    }

    /// Blue with a `[pools.blue.health]` table whose body starts on line 4.
    fn with_health(body: &str) -> String {
        with_pools(&format!(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.blue.health]\n{body}[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"
        ))
    }

    #[test]
    fn health_timeout_must_not_exceed_interval() {
        assert_err(
            &with_health("interval = \"1s\"\ntimeout = \"2s\"\n"),
            "pool \"blue\": health.timeout (2s) is longer than health.interval (1s)",
            (5, 11),
        );
        // Only the interval written: the default timeout (1s) is too long for it.
        assert_err(
            &with_health("interval = \"500ms\"\n"),
            "health.timeout (1s) is longer than health.interval (500ms)",
            (4, 12),
        );
        assert_err(
            &with_health("interval = \"0s\"\n"),
            "pool \"blue\": health.interval must be greater than zero",
            (4, 12),
        );
    }

    #[test]
    fn health_thresholds_are_at_least_one() {
        assert_err(
            &with_health("unhealthy_after = 0\n"),
            "pool \"blue\": health.unhealthy_after is 0; it must be at least 1",
            (4, 19),
        );
        assert_err(
            &with_health("healthy_after = -1\n"),
            "pool \"blue\": health.healthy_after is -1; it must be at least 1",
            (4, 17),
        );
    }

    #[test]
    fn health_path_must_be_a_path() {
        assert_err(
            &with_health("path = \"healthz\"\n"),
            "pool \"blue\": health.path \"healthz\" must be a path starting with \"/\"",
            (4, 8),
        );
        assert_err(&with_health("path = \"/a b\"\n"), "health.path \"/a b\"", (4, 8));
        let config = parse_ok(&with_health("path = \"/status?full=1\"\n"));
        assert_eq!(config.pools[0].health.as_ref().unwrap().path, "/status?full=1");
    }

    /// Blue with a `[pools.blue.guard]` table whose body starts on line 4.
    fn with_guard(body: &str) -> String {
        with_pools(&format!(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.blue.guard]\n{body}[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"
        ))
    }

    #[test]
    fn guard_needs_max_error_rate() {
        assert_err(
            &with_guard("window = \"30s\"\n"),
            "pool \"blue\": guard has no max_error_rate; add e.g. max_error_rate = 0.01",
            (3, 1),
        );
    }

    #[test]
    fn guard_rate_must_be_within_zero_and_one() {
        assert_err(
            &with_guard("max_error_rate = 1.5\n"),
            "pool \"blue\": guard.max_error_rate 1.5 is outside 0..1",
            (4, 18),
        );
        assert_err(&with_guard("max_error_rate = -0.1\n"), "is outside 0..1", (4, 18));
        assert_err(&with_guard("max_error_rate = nan\n"), "is outside 0..1", (4, 18));
        // An integer 0 or 1 is a rate too.
        let config = parse_ok(&with_guard("max_error_rate = 1\n"));
        assert_eq!(config.pools[0].guard.as_ref().unwrap().max_error_rate, 1.0);
    }

    #[test]
    fn guard_window_and_min_requests() {
        assert_err(
            &with_guard("max_error_rate = 0.01\nwindow = \"0s\"\n"),
            "pool \"blue\": guard.window must be greater than zero",
            (5, 10),
        );
        assert_err(
            &with_guard("max_error_rate = 0.01\nmin_requests = 0\n"),
            "pool \"blue\": guard.min_requests is 0; it must be at least 1",
            (5, 16),
        );
        assert_err(
            &with_guard("max_error_rate = 0.01\nmax_p99_latency = \"fast\"\n"),
            "pool \"blue\": guard.max_p99_latency: \"fast\" is not a duration",
            (5, 19),
        );
    }

    #[test]
    fn pools_are_sorted_by_name_and_routes_keep_file_order() {
        let config = parse_ok(
            "[pools.zeta]\nbackends = [\"127.0.0.1:1\"]\n[pools.alpha]\nbackends = [\"127.0.0.1:2\"]\n\
             [[routes]]\nname = \"z\"\npath_prefix = \"/z\"\nsplit = { zeta = 1 }\n\
             [[routes]]\nname = \"a\"\nsplit = { alpha = 1 }\n",
        );
        let pools: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pools, ["alpha", "zeta"]);
        let routes: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(routes, ["z", "a"]);
    }

    // ----- [[routes]] ---------------------------------------------------------

    #[test]
    fn at_least_one_route() {
        assert_err(POOLS, "no routes defined; add a [[routes]] table", (1, 1));
        assert_err(&format!("routes = []\n{POOLS}"), "no routes defined", (1, 10));
    }

    #[test]
    fn route_needs_a_valid_unique_name() {
        assert_err(
            &with_routes("[[routes]]\nsplit = { blue = 1 }\n"),
            "route #1 has no name; add name = \"...\"",
            (5, 1),
        );
        assert_err(
            &with_routes("[[routes]]\nname = \"shop/v2\"\nsplit = { blue = 1 }\n"),
            "route name \"shop/v2\" may only contain ASCII letters, digits, '-', '_' and '.'",
            (6, 8),
        );
        assert_err(&with_routes("[[routes]]\nname = \"\"\nsplit = { blue = 1 }\n"), "route name is empty", (6, 8));
        assert_err(
            &with_routes(
                "[[routes]]\nname = \"shop\"\nsplit = { blue = 1 }\n[[routes]]\nname = \"shop\"\npath_prefix = \"/x\"\nsplit = { blue = 1 }\n",
            ),
            "route \"shop\" is defined twice; give each route its own name",
            (9, 8),
        );
    }

    /// A route "shop" whose `host` is on line 7, column 8.
    fn with_host(host: &str) -> String {
        with_routes(&format!("[[routes]]\nname = \"shop\"\nhost = \"{host}\"\nsplit = {{ blue = 1 }}\n"))
    }

    #[test]
    fn hosts_are_exact_or_leading_wildcard() {
        let host = |h: &str| parse_ok(&with_host(h)).routes[0].host.clone();
        assert_eq!(host("Shop.Example.COM"), HostMatch::Exact("shop.example.com".into()));
        assert_eq!(host("*.Example.com"), HostMatch::Wildcard(".example.com".into()));
        assert_eq!(host("10.0.0.1"), HostMatch::Exact("10.0.0.1".into()));
        assert_eq!(host("[::1]"), HostMatch::Exact("[::1]".into()));
    }

    #[test]
    fn malformed_hosts_are_rejected() {
        let cases = [
            ("shop.example.com:8080", "must not include a port"),
            ("[::1]:8080", "must not include a port"),
            ("*.example.com:80", "must not include a port"),
            ("shop.*.com", "may only use \"*\" as a leading \"*.\""),
            ("*", "may only use \"*\" as a leading \"*.\""),
            ("*.*.com", "may only use \"*\" as a leading \"*.\""),
            ("*example.com", "may only use \"*\" as a leading \"*.\""),
            ("*.", "is not a valid host name"),
            ("shop example.com", "contains spaces"),
            ("shop..example.com", "is not a valid host name"),
            ("https://shop.example.com", "must be a host name, not a URL"),
            ("shop.example.com/api", "must be a host name, not a URL"),
        ];
        for (host, needle) in cases {
            assert_err(&with_host(host), &format!("route \"shop\": host \"{host}\" {needle}"), (7, 8));
        }
        assert_err(&with_host(""), "route \"shop\": host is empty; remove the key to match any host", (7, 8));
    }

    #[test]
    fn path_prefix_must_be_a_path() {
        let prefix = |p: &str| {
            with_routes(&format!("[[routes]]\nname = \"shop\"\npath_prefix = \"{p}\"\nsplit = {{ blue = 1 }}\n"))
        };
        assert_err(&prefix("api"), "route \"shop\": path_prefix \"api\" must start with \"/\"", (7, 15));
        assert_err(&prefix("/api?x=1"), "must not contain \"?\" or \"#\"", (7, 15));
        assert_err(&prefix("/api#top"), "must not contain \"?\" or \"#\"", (7, 15));
        assert_err(&prefix("/a b"), "must not contain spaces", (7, 15));
        assert_eq!(parse_ok(&prefix("/api/")).routes[0].path_prefix, "/api/");
    }

    #[test]
    fn a_route_that_can_never_match_is_rejected() {
        assert_err(
            &with_routes(
                "[[routes]]\nname = \"a\"\nhost = \"x.example.com\"\npath_prefix = \"/api\"\nsplit = { blue = 1 }\n\
                 [[routes]]\nname = \"b\"\nhost = \"X.example.com\"\npath_prefix = \"/api\"\nsplit = { blue = 1 }\n",
            ),
            "route \"b\" has the same host and path_prefix as route \"a\", so it can never match",
            (13, 15),
        );
        // Neither has host or path_prefix: point at the second route's table.
        assert_err(
            &with_routes(
                "[[routes]]\nname = \"a\"\nsplit = { blue = 1 }\n[[routes]]\nname = \"b\"\nsplit = { blue = 1 }\n",
            ),
            "route \"b\" has the same host and path_prefix as route \"a\"",
            (8, 1),
        );
        // An explicit "/" is the default prefix.
        assert_err(
            &with_routes("[[routes]]\nname = \"a\"\nsplit = { blue = 1 }\n[[routes]]\nname = \"b\"\npath_prefix = \"/\"\nsplit = { blue = 1 }\n"),
            "route \"b\" has the same host and path_prefix as route \"a\"",
            (10, 15),
        );
        // Different hosts or prefixes are fine.
        parse_ok(&with_routes(
            "[[routes]]\nname = \"a\"\nsplit = { blue = 1 }\n[[routes]]\nname = \"b\"\nhost = \"*.example.com\"\nsplit = { blue = 1 }\n\
             [[routes]]\nname = \"c\"\npath_prefix = \"/api\"\nsplit = { blue = 1 }\n",
        ));
    }

    /// A route "shop" whose split is `split` on line 7, column 9.
    fn with_split(split: &str) -> String {
        with_routes(&format!("[[routes]]\nname = \"shop\"\nsplit = {split}\n"))
    }

    #[test]
    fn split_is_required_and_non_empty() {
        assert_err(
            &with_routes("[[routes]]\nname = \"shop\"\n"),
            "route \"shop\" has no split; add e.g. split = { blue = 100 }",
            (5, 1),
        );
        assert_err(&with_split("{}"), "route \"shop\": split is empty; give at least one pool a weight", (7, 9));
    }

    #[test]
    fn split_names_known_pools_only() {
        assert_err(
            &with_split("{ blue = 90, cnary = 10 }"),
            "route \"shop\": split names unknown pool \"cnary\" (known: blue, canary)",
            (7, 22),
        );
    }

    #[test]
    fn split_weights_are_bounded_integers() {
        assert_err(
            &with_split("{ blue = -1, canary = 10 }"),
            "route \"shop\": weight of \"blue\" is -1; weights are integers >= 0",
            (7, 18),
        );
        assert_err(
            &with_split("{ blue = 1000001 }"),
            "route \"shop\": weight of \"blue\" is 1000001; the largest allowed is 1000000",
            (7, 18),
        );
        assert_eq!(parse_ok(&with_split("{ blue = 1000000 }")).routes[0].split, vec![("blue".into(), 1_000_000)]);
    }

    #[test]
    fn split_with_all_weights_zero_is_rejected() {
        assert_err(
            &with_split("{ blue = 0, canary = 0 }"),
            "route \"shop\": all weights are zero; at least one pool must take traffic",
            (7, 9),
        );
    }

    #[test]
    fn split_keeps_file_order() {
        let config = parse_ok(&with_split("{ canary = 10, blue = 90 }"));
        assert_eq!(config.routes[0].split, vec![("canary".into(), 10), ("blue".into(), 90)]);
        // Dotted keys and a standard table keep their order too.
        let config = parse_ok(&with_routes("[[routes]]\nname = \"shop\"\n[routes.split]\ncanary = 1\nblue = 2\n"));
        assert_eq!(config.routes[0].split, vec![("canary".into(), 1), ("blue".into(), 2)]);
    }

    /// A route "shop" with `sticky = {sticky}` on line 8, column 10.
    fn with_sticky(sticky: &str) -> String {
        with_routes(&format!("[[routes]]\nname = \"shop\"\nsplit = {{ blue = 1 }}\nsticky = {sticky}\n"))
    }

    #[test]
    fn sticky_is_one_cookie_or_one_header() {
        assert_err(
            &with_sticky("{ cookie = \"a\", header = \"x\" }"),
            "route \"shop\": sticky takes either cookie or header, not both",
            (8, 10),
        );
        assert_err(&with_sticky("{}"), "route \"shop\": sticky needs cookie = \"name\" or header = \"name\"", (8, 10));
        assert_eq!(
            parse_ok(&with_sticky("{ header = \"X-User-Id\" }")).routes[0].sticky,
            Some(StickyKey::Header(HeaderName::from_static("x-user-id")))
        );
        assert_eq!(
            parse_ok(&with_sticky("{ cookie = \"Cutover-Shop\" }")).routes[0].sticky,
            Some(StickyKey::Cookie("Cutover-Shop".into()))
        );
    }

    #[test]
    fn sticky_names_must_be_valid() {
        assert_err(
            &with_sticky("{ header = \"x user\" }"),
            "route \"shop\": sticky header \"x user\" is not a valid header name",
            (8, 21),
        );
        assert_err(
            &with_sticky("{ cookie = \"a;b\" }"),
            "route \"shop\": sticky cookie \"a;b\" is not a valid cookie name",
            (8, 21),
        );
        assert_err(&with_sticky("{ cookie = \"\" }"), "sticky cookie \"\" is not a valid cookie name", (8, 21));
    }

    /// A route "shop" over blue 90 / canary 10 with one force rule whose body
    /// starts on line 9 (the `[[routes.force]]` header is line 8).
    fn with_force(body: &str) -> String {
        with_routes(&format!(
            "[[routes]]\nname = \"shop\"\nsplit = {{ blue = 90, canary = 10 }}\n[[routes.force]]\n{body}"
        ))
    }

    #[test]
    fn force_rule_is_one_header_or_one_cookie() {
        assert_err(
            &with_force("header = \"x-beta\"\ncookie = \"beta\"\nvalue = \"1\"\npool = \"canary\"\n"),
            "route \"shop\": a force rule takes either header or cookie, not both",
            (8, 1),
        );
        assert_err(
            &with_force("value = \"1\"\npool = \"canary\"\n"),
            "route \"shop\": force rule needs header = \"name\" or cookie = \"name\"",
            (8, 1),
        );
        assert_err(
            &with_force("header = \"x beta\"\nvalue = \"1\"\npool = \"canary\"\n"),
            "route \"shop\": force header \"x beta\" is not a valid header name",
            (9, 10),
        );
        assert_err(
            &with_force("cookie = \"be ta\"\nvalue = \"1\"\npool = \"canary\"\n"),
            "route \"shop\": force cookie \"be ta\" is not a valid cookie name",
            (9, 10),
        );
    }

    #[test]
    fn force_rule_needs_a_valid_value() {
        assert_err(
            &with_force("header = \"x-beta\"\npool = \"canary\"\n"),
            "route \"shop\": force rule has no value; add value = \"...\"",
            (8, 1),
        );
        assert_err(
            &with_force("header = \"x-beta\"\nvalue = \"\"\npool = \"canary\"\n"),
            "force value \"\" is not a valid header value",
            (10, 9),
        );
        assert_err(
            &with_force("header = \"x-beta\"\nvalue = \"a\\u0007\"\npool = \"canary\"\n"),
            "is not a valid header value",
            (10, 9),
        );
        assert_err(
            &with_force("cookie = \"beta\"\nvalue = \"a b\"\npool = \"canary\"\n"),
            "force value \"a b\" is not a valid cookie value",
            (10, 9),
        );
    }

    #[test]
    fn force_pool_must_be_in_the_split() {
        assert_err(
            &with_force("header = \"x-beta\"\nvalue = \"1\"\n"),
            "route \"shop\": force rule has no pool; add pool = \"name\"",
            (8, 1),
        );
        assert_err(
            &with_routes(
                "[[routes]]\nname = \"shop\"\nsplit = { blue = 100 }\n[[routes.force]]\nheader = \"x-beta\"\nvalue = \"1\"\npool = \"canary\"\n",
            ),
            "route \"shop\": force pool \"canary\" is not in the route's split; add it to the split with weight 0",
            (11, 8),
        );
        assert_err(
            &with_force("header = \"x-beta\"\nvalue = \"1\"\npool = \"green\"\n"),
            "route \"shop\": force names unknown pool \"green\" (known: blue, canary)",
            (11, 8),
        );
        // A pool at weight 0 is a fine force target: that is how testers reach
        // a version no one else sees yet.
        let config = parse_ok(&with_routes(
            "[[routes]]\nname = \"shop\"\nsplit = { blue = 100, canary = 0 }\n[[routes.force]]\nheader = \"X-Beta\"\nvalue = \"1\"\npool = \"canary\"\n",
        ));
        assert_eq!(
            config.routes[0].force,
            vec![ForceRule {
                matcher: ForceMatch::Header(HeaderName::from_static("x-beta"), "1".into()),
                pool: "canary".into(),
            }]
        );
    }
}
