//! `[pools.NAME]`: backends and their addresses, balancing, and each
//! pool's active health check and guard.

use std::net::Ipv6Addr;
use std::time::Duration;

use http::uri::PathAndQuery;
use toml::Spanned;

use super::super::raw::{OrderedMap, RawDuration, RawGuard, RawHealth, RawPool};
use super::values::{is_dns_name, to_u32, Cx, Result};
use crate::config::{
    BackendAddr, GuardConfig, HealthConfig, LbPolicy, PoolConfig, Scheme, SlowStartConfig, UpstreamProtocol,
};
use crate::grpc::GrpcCodes;

pub(super) const DEFAULT_HEALTH_PATH: &str = "/healthz";
pub(super) const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub(super) const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const DEFAULT_UNHEALTHY_AFTER: i64 = 3;
pub(super) const DEFAULT_HEALTHY_AFTER: i64 = 2;
pub(super) const DEFAULT_GUARD_WINDOW: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_MIN_REQUESTS: i64 = 100;
pub(super) const DEFAULT_SLOW_START_AGGRESSION: f64 = 1.0;
pub(super) const MAX_SLOW_START_AGGRESSION: f64 = 10.0;

impl Cx<'_> {
    // ----- [pools.NAME] -----------------------------------------------------

    pub(super) fn pools(&self, raw: Option<Spanned<OrderedMap<Spanned<RawPool>>>>) -> Result<Vec<PoolConfig>> {
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
        let mut baselines = Vec::new();
        for (name, pool) in entries {
            self.check_name(&name, "pool")?;
            if let Some(baseline) = pool.get_ref().guard.as_ref().and_then(|g| g.get_ref().baseline.clone()) {
                baselines.push((name.get_ref().clone(), baseline));
            }
            pools.push(self.pool(name.into_inner(), pool)?);
        }
        self.baselines_exist(&pools, &baselines)?;
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pools)
    }

    pub(super) fn pool(&self, name: String, raw: Spanned<RawPool>) -> Result<PoolConfig> {
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
        let slow_start = self.slow_start(&name, raw.slow_start.as_ref(), raw.slow_start_aggression.as_ref())?;
        let retry_unanswered = raw.retry_unanswered.unwrap_or(true);
        let grpc_failure_codes = match &raw.grpc_failure_codes {
            None => GrpcCodes::default(),
            Some(list) => {
                let mut codes = GrpcCodes::NONE;
                for item in list.get_ref() {
                    let Some(code) = GrpcCodes::code_of(item.get_ref()) else {
                        return Err(self.err(
                            item.span(),
                            format!(
                                "pool \"{name}\": grpc_failure_codes: \"{}\" is not a gRPC status code; use names such as {}",
                                item.get_ref(),
                                GrpcCodes::SERVER.names().collect::<Vec<_>>().join(", "),
                            ),
                        ));
                    };
                    codes = codes.with(code);
                }
                codes
            }
        };
        Ok(PoolConfig {
            name,
            backends,
            lb,
            protocol,
            ca_file,
            health,
            guard,
            slow_start,
            retry_unanswered,
            grpc_failure_codes,
        })
    }

    pub(super) fn slow_start(
        &self,
        pool: &str,
        window: Option<&Spanned<RawDuration>>,
        aggression: Option<&Spanned<f64>>,
    ) -> Result<Option<SlowStartConfig>> {
        let Some(window) = window else {
            if let Some(a) = aggression {
                return Err(self.err(
                    a.span(),
                    format!("pool \"{pool}\": slow_start_aggression needs slow_start, e.g. slow_start = \"30s\""),
                ));
            }
            return Ok(None);
        };
        let window = self.duration(window, &format!("pool \"{pool}\": slow_start"), false)?;
        let aggression = match aggression {
            None => DEFAULT_SLOW_START_AGGRESSION,
            Some(a) => {
                let v = *a.get_ref();
                if !(v.is_finite() && v > 0.0 && v <= MAX_SLOW_START_AGGRESSION) {
                    return Err(self.err(
                        a.span(),
                        format!(
                            "pool \"{pool}\": slow_start_aggression is {v}; it must be above 0 and at most {MAX_SLOW_START_AGGRESSION}"
                        ),
                    ));
                }
                v
            }
        };
        Ok(Some(SlowStartConfig { window, aggression }))
    }

    pub(super) fn health(&self, pool: &str, raw: RawHealth) -> Result<HealthConfig> {
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
        // A timeout longer than the interval is fine: the next probe starts
        // when the previous one ended or timed out (health::checks), as
        // Kubernetes and Envoy do, so probes of a backend never overlap.
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

    pub(super) fn guard(&self, pool: &str, raw: Spanned<RawGuard>) -> Result<GuardConfig> {
        let table = raw.span();
        let raw = raw.into_inner();
        let baseline = raw.baseline.as_ref().map(|b| b.get_ref().clone());
        let max_error_rate = match &raw.max_error_rate {
            None if baseline.is_none() => {
                return Err(self.err(
                    table,
                    format!(
                        "pool \"{pool}\": guard has no max_error_rate; add e.g. max_error_rate = 0.01 (1%), \
                         or a baseline = \"POOL\" to judge it against"
                    ),
                ))
            }
            None => None,
            Some(rate) => {
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
                Some(max_error_rate)
            }
        };
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
        let defaults = GuardConfig::default();
        let guard = GuardConfig {
            max_error_rate,
            max_p99_latency,
            window,
            min_requests: min_requests.unsigned_abs(),
            baseline,
            max_error_increase: raw.max_error_increase.as_ref().map_or(defaults.max_error_increase, |v| *v.get_ref()),
            max_latency_ratio: raw.max_latency_ratio.as_ref().map(|v| *v.get_ref()),
            confidence: raw.confidence.as_ref().map_or(defaults.confidence, |v| *v.get_ref()),
        };
        // The judge knows what it can work with; the span is the key's own.
        guard.judge().check(pool).map_err(|e| {
            let span = match e.field {
                "baseline" => raw.baseline.as_ref().map(Spanned::span),
                "max_error_increase" => raw.max_error_increase.as_ref().map(Spanned::span),
                "max_latency_ratio" => raw.max_latency_ratio.as_ref().map(Spanned::span),
                "confidence" => raw.confidence.as_ref().map(Spanned::span),
                "max_error_rate" => raw.max_error_rate.as_ref().map(Spanned::span),
                "min_requests" => raw.min_requests.as_ref().map(Spanned::span),
                "window" => raw.window.as_ref().map(Spanned::span),
                _ => None,
            };
            self.err(span.unwrap_or(table), format!("pool \"{pool}\": {e}"))
        })?;
        Ok(guard)
    }

    /// Every guard's baseline names another pool of `pools`: `baselines`
    /// holds (pool, its guard's `baseline` as written).
    pub(super) fn baselines_exist(&self, pools: &[PoolConfig], baselines: &[(String, Spanned<String>)]) -> Result<()> {
        for (pool, baseline) in baselines {
            let name = baseline.get_ref();
            if !pools.iter().any(|p| &p.name == name) {
                let known: Vec<&str> = pools.iter().map(|p| p.name.as_str()).filter(|p| p != pool).collect();
                return Err(self.err(
                    baseline.span(),
                    format!(
                        "pool \"{pool}\": guard.baseline \"{name}\" is not a pool; name one of: {}",
                        known.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

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
    fn slow_start_is_a_window_and_an_aggression() {
        let config = parse_ok(&with_pools(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\nslow_start = \"30s\"\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\nslow_start = \"3s\"\nslow_start_aggression = 2.5\n",
        ));
        let blue = config.pool("blue").unwrap();
        assert_eq!(blue.slow_start, Some(SlowStartConfig { window: Duration::from_secs(30), aggression: 1.0 }));
        let canary = config.pool("canary").unwrap();
        assert_eq!(canary.slow_start, Some(SlowStartConfig { window: Duration::from_secs(3), aggression: 2.5 }));
        assert_eq!(parse_ok(&with_pools(POOLS)).pool("blue").unwrap().slow_start, None);

        let pool = |extra: &str| {
            with_pools(&format!(
                "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n{extra}[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n"
            ))
        };
        assert_err(&pool("slow_start = \"0s\"\n"), "pool \"blue\": slow_start must be greater than zero", (3, 14));
        assert_err(&pool("slow_start = \"3\"\n"), "pool \"blue\": slow_start: \"3\" has no unit", (3, 14));
        assert_err(
            &pool("slow_start = \"3s\"\nslow_start_aggression = 0\n"),
            "pool \"blue\": slow_start_aggression is 0; it must be above 0",
            (4, 25),
        );
        assert_err(
            &pool("slow_start = \"3s\"\nslow_start_aggression = 11.0\n"),
            "it must be above 0 and at most 10",
            (4, 25),
        );
        assert_err(
            &pool("slow_start_aggression = 2.0\n"),
            "pool \"blue\": slow_start_aggression needs slow_start",
            (3, 25),
        );
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
    fn grpc_failure_codes_default_to_the_server_side_ones_and_take_names() {
        const CANARY: &str = "[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n";
        let default = parse_ok(&with_pools(&format!("[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n{CANARY}")));
        assert_eq!(default.pools[0].grpc_failure_codes, GrpcCodes::SERVER);
        let named = parse_ok(&with_pools(&format!(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\ngrpc_failure_codes = [\"internal\", \"NOT_FOUND\"]\n{CANARY}",
        )));
        assert_eq!(named.pools[0].grpc_failure_codes, GrpcCodes::NONE.with(13).with(5));
        let none = parse_ok(&with_pools(&format!(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\ngrpc_failure_codes = []\n{CANARY}"
        )));
        assert_eq!(none.pools[0].grpc_failure_codes, GrpcCodes::NONE);
        assert_err(
            &with_pools(&format!("[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\ngrpc_failure_codes = [\"INTERNAL\", \"BROKEN\"]\n{CANARY}")),
            "pool \"blue\": grpc_failure_codes: \"BROKEN\" is not a gRPC status code",
            (3, 35),
        );
    }

    #[test]
    fn retry_unanswered_defaults_to_on_and_can_be_turned_off() {
        let on = parse_ok(&with_pools(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n",
        ));
        assert!(on.pools.iter().all(|p| p.retry_unanswered));
        let off = parse_ok(&with_pools(
            "[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\nretry_unanswered = false\n[pools.canary]\nbackends = [\"127.0.0.1:9003\"]\n",
        ));
        assert!(!off.pools[0].retry_unanswered);
        assert!(off.pools[1].retry_unanswered);
        assert_err(
            &with_pools("[pools.blue]\nbackends = [\"127.0.0.1:9001\"]\nretry_unanswered = \"no\"\n"),
            "invalid type: string \"no\", expected a boolean",
            (3, 20),
        );
    }

    #[test]
    fn health_timeout_may_exceed_interval() {
        let config = parse_ok(&with_health("interval = \"1s\"\ntimeout = \"2s\"\n"));
        let health = config.pools[0].health.as_ref().expect("blue has [health]");
        assert_eq!((health.interval, health.timeout), (Duration::from_secs(1), Duration::from_secs(2)));
        // Only the interval written, shorter than the default timeout (1s).
        let config = parse_ok(&with_health("interval = \"500ms\"\n"));
        let health = config.pools[0].health.as_ref().expect("blue has [health]");
        assert_eq!((health.interval, health.timeout), (Duration::from_millis(500), Duration::from_secs(1)));
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
    fn a_baseline_makes_max_error_rate_optional_and_takes_the_defaults() {
        let config = parse_ok(&with_guard("baseline = \"canary\"\n"));
        let guard = config.pools[0].guard.as_ref().unwrap();
        assert_eq!(guard.baseline.as_deref(), Some("canary"));
        assert_eq!(guard.max_error_rate, None);
        assert_eq!((guard.max_error_increase, guard.confidence, guard.max_latency_ratio), (0.01, 0.99, None));
        let config = parse_ok(&with_guard(
            "baseline = \"canary\"\nmax_error_increase = 0.02\nmax_latency_ratio = 1.5\nconfidence = 0.95\nmax_error_rate = 0.1\n",
        ));
        let guard = config.pools[0].guard.as_ref().unwrap();
        assert_eq!(guard.max_error_rate, Some(0.1));
        assert_eq!((guard.max_error_increase, guard.confidence, guard.max_latency_ratio), (0.02, 0.95, Some(1.5)));
    }

    #[test]
    fn a_baseline_must_be_another_pool() {
        assert_err(
            &with_guard("baseline = \"stable\"\n"),
            "pool \"blue\": guard.baseline \"stable\" is not a pool; name one of: canary",
            (4, 12),
        );
        assert_err(
            &with_guard("baseline = \"blue\"\n"),
            "pool \"blue\": guard.baseline: pool \"blue\" cannot be its own baseline",
            (4, 12),
        );
    }

    #[test]
    fn judge_settings_are_checked_where_written() {
        assert_err(
            &with_guard("baseline = \"canary\"\nconfidence = 1.0\n"),
            "pool \"blue\": guard.confidence: 1 is outside 0.5..1",
            (5, 14),
        );
        assert_err(
            &with_guard("baseline = \"canary\"\nmax_error_increase = 1.5\n"),
            "guard.max_error_increase: 1.5 is outside 0..1",
            (5, 22),
        );
        assert_err(
            &with_guard("baseline = \"canary\"\nmax_latency_ratio = 0.5\n"),
            "guard.max_latency_ratio: 0.5 is below 1",
            (5, 21),
        );
        // Beyond any latency the histogram holds: refused, rather than a
        // threshold no `Duration` can hold.
        assert_err(
            &with_guard("baseline = \"canary\"\nmax_latency_ratio = 1e300\n"),
            "guard.max_latency_ratio: 1e300 is above 1000",
            (5, 21),
        );
        assert_err(
            &with_guard("max_error_rate = 0.1\nmax_latency_ratio = 1.5\n"),
            "guard.max_latency_ratio: needs a baseline",
            (5, 21),
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
        assert_eq!(config.pools[0].guard.as_ref().unwrap().max_error_rate, Some(1.0));
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
}
