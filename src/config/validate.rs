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
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
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
        Ok(Config {
            server: server.config,
            admin,
            pools,
            routes,
        })
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
            Some(v) => self.int_in(
                v,
                "server.max_request_header_bytes",
                MIN_REQUEST_HEADER_BYTES,
                MAX_REQUEST_HEADER_BYTES,
            )?,
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
            idle_timeout: self.duration_or(raw.idle_timeout.as_ref(), "server.idle_timeout", DEFAULT_IDLE_TIMEOUT, false)?,
            drain_timeout: self.duration_or(raw.drain_timeout.as_ref(), "server.drain_timeout", DEFAULT_DRAIN_TIMEOUT, false)?,
            shutdown_delay: self.duration_or(
                raw.shutdown_delay.as_ref(),
                "server.shutdown_delay",
                DEFAULT_SHUTDOWN_DELAY,
                true,
            )?,
            max_request_header_bytes: to_usize(max_request_header_bytes),
            workers: workers.map(to_usize),
            tls: tls.as_ref().map(|(tls, _)| tls.clone()),
        };
        Ok(Server {
            config,
            listen,
            tls_listen_span: tls.map(|(_, span)| span),
        })
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
            self.err(
                table.clone(),
                format!("server.tls has no {key}; add {key} = \"{example}\""),
            )
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
        let tls = server
            .config
            .tls
            .as_ref()
            .map(|t| (t.listen, server.tls_listen_span.clone(), "server.tls.listen"));
        let traffic = server
            .listen
            .iter()
            .map(|(addr, span)| (*addr, span.clone(), "server.listen"))
            .chain(tls);
        for (addr, span, key) in traffic {
            if !clash(addr, listen) {
                continue;
            }
            return Err(match (listen_span.clone(), span) {
                (Some(admin_span), _) => self.err(
                    admin_span,
                    format!("admin.listen: {listen} clashes with {addr} in {key}; use another port"),
                ),
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
            let backend = parse_backend(item.get_ref())
                .map_err(|problem| self.err(item.span(), format!("pool \"{name}\": backend \"{}\" {problem}", item.get_ref())))?;
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

        let health = raw.health.map(|h| self.health(&name, h)).transpose()?;
        let guard = raw.guard.map(|g| self.guard(&name, g)).transpose()?;
        Ok(PoolConfig {
            name,
            backends,
            lb,
            health,
            guard,
        })
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
        Ok(GuardConfig {
            max_error_rate,
            max_p99_latency,
            window,
            min_requests: min_requests.unsigned_abs(),
        })
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
                self.err(
                    table.clone(),
                    format!("route #{} has no name; add name = \"...\"", index + 1),
                )
            })?;
            self.check_name(name, "route")?;
            let name_str = name.get_ref().clone();
            if routes.iter().any(|r| r.name == name_str) {
                return Err(self.err(
                    name.span(),
                    format!("route \"{name_str}\" is defined twice; give each route its own name"),
                ));
            }
            let route = self.route(name_str, table.clone(), &raw, pools)?;
            if let Some(earlier) = routes
                .iter()
                .find(|r| r.host == route.host && r.path_prefix == route.path_prefix)
            {
                let span = raw
                    .path_prefix
                    .as_ref()
                    .or(raw.host.as_ref())
                    .map_or(table, Spanned::span);
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
        let force = raw
            .force
            .iter()
            .flatten()
            .map(|f| self.force(&name, f, &split, pools))
            .collect::<Result<Vec<_>>>()?;
        Ok(RouteConfig {
            name,
            host,
            path_prefix,
            split,
            sticky,
            force,
        })
    }

    fn host_match(&self, route: &str, v: &Spanned<String>) -> Result<HostMatch> {
        let raw = v.get_ref();
        let host = raw.to_ascii_lowercase();
        let fail = |why: &str| self.err(v.span(), format!("route \"{route}\": host \"{raw}\" {why}"));
        if host.is_empty() {
            return Err(self.err(
                v.span(),
                format!("route \"{route}\": host is empty; remove the key to match any host"),
            ));
        }
        if host.chars().any(char::is_whitespace) {
            return Err(fail("contains spaces; write one host name per route"));
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
                _ if inner.contains("]:") => Err(fail("must not include a port; the port of the Host header is ignored")),
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
            self.err(
                table,
                format!("route \"{route}\" has no split; add e.g. split = {{ blue = 100 }}"),
            )
        })?;
        let entries = &raw.get_ref().0;
        if entries.is_empty() {
            return Err(self.err(
                raw.span(),
                format!("route \"{route}\": split is empty; give at least one pool a weight"),
            ));
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
            (None, None) => Err(self.err(
                raw.span(),
                format!("route \"{route}\": sticky needs cookie = \"name\" or header = \"name\""),
            )),
            (Some(cookie), None) => Ok(StickyKey::Cookie(self.cookie_name(route, "sticky", cookie)?)),
            (None, Some(header)) => Ok(StickyKey::Header(self.header_name(route, "sticky", header)?)),
        }
    }

    fn force(&self, route: &str, raw: &Spanned<RawForce>, split: &[(String, u32)], pools: &[PoolConfig]) -> Result<ForceRule> {
        let table = raw.span();
        let f = raw.get_ref();
        let missing_value = || {
            self.err(
                table.clone(),
                format!("route \"{route}\": force rule has no value; add value = \"...\""),
            )
        };
        let matcher = match (&f.header, &f.cookie) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    table,
                    format!("route \"{route}\": a force rule takes either header or cookie, not both; keep one"),
                ))
            }
            (None, None) => {
                return Err(self.err(
                    table,
                    format!("route \"{route}\": force rule needs header = \"name\" or cookie = \"name\""),
                ))
            }
            (Some(header), None) => {
                let name = self.header_name(route, "force", header)?;
                let value = f.value.as_ref().ok_or_else(missing_value)?;
                let v = value.get_ref();
                if v.is_empty() || HeaderValue::from_str(v).is_err() {
                    return Err(self.err(
                        value.span(),
                        format!("route \"{route}\": force value \"{v}\" is not a valid header value; use visible ASCII"),
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
            self.err(
                table.clone(),
                format!("route \"{route}\": force rule has no pool; add pool = \"name\""),
            )
        })?;
        let pool_name = pool.get_ref();
        if !split.iter().any(|(p, _)| p == pool_name) {
            let message = if pools.iter().any(|p| &p.name == pool_name) {
                format!("route \"{route}\": force pool \"{pool_name}\" is not in the route's split; add it to the split with weight 0")
            } else {
                format!(
                    "route \"{route}\": force names unknown pool \"{pool_name}\" (known: {})",
                    known_pools(pools)
                )
            };
            return Err(self.err(pool.span(), message));
        }
        Ok(ForceRule {
            matcher,
            pool: pool_name.clone(),
        })
    }

    // ----- shared value checks ----------------------------------------------

    fn check_name(&self, name: &Spanned<String>, kind: &str) -> Result<()> {
        let n = name.get_ref();
        if n.is_empty() {
            return Err(self.err(
                name.span(),
                format!("{kind} name is empty; use ASCII letters, digits, '-', '_' or '.'"),
            ));
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
    Ok(BackendAddr {
        scheme,
        authority: format!("{host}:{port}"),
    })
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
        let name_len = m[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(m.len() - name_start);
        m.replace_range(i + "expected ".len()..name_start + name_len, "a table");
    }
    if m == "duplicate key" {
        if let Some(key) = key {
            m = format!("duplicate key `{}`; each key may appear only once in a table", key.trim());
        }
    }
    m
}
