//! `[[routes]]`: which requests a route takes (host and path prefix), its
//! split over pools, its sticky key and its force rules, cross-checked
//! against the pools. Its rollout plan is [`super::rollout`]'s.

use std::net::Ipv6Addr;
use std::ops::Range;

use http::HeaderValue;
use toml::Spanned;

use super::super::raw::{OrderedMap, RawForce, RawMirror, RawRoute, RawSticky};
use super::values::{is_cookie_octet, is_dns_name, to_u32, Cx, Result};
use crate::config::{ForceMatch, ForceRule, HostMatch, MirrorConfig, PoolConfig, RouteConfig, StickyKey};

/// Largest weight of one pool; keeps sums far from overflow in any integer
/// type the splitter may use.
pub(super) const MAX_WEIGHT: i64 = 1_000_000;

impl Cx<'_> {
    // ----- [[routes]] -------------------------------------------------------

    pub(super) fn routes(
        &self,
        raw: Option<Spanned<Vec<Spanned<RawRoute>>>>,
        pools: &[PoolConfig],
    ) -> Result<Vec<RouteConfig>> {
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

    pub(super) fn route(
        &self,
        name: String,
        table: Range<usize>,
        raw: &RawRoute,
        pools: &[PoolConfig],
    ) -> Result<RouteConfig> {
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
        let rollout = raw.rollout.as_ref().map(|r| self.rollout(&name, r, &split)).transpose()?;
        let mirror = raw.mirror.as_ref().map(|m| self.mirror(&name, m, pools)).transpose()?;
        Ok(RouteConfig { name, host, path_prefix, split, sticky, force, rollout, mirror })
    }

    pub(super) fn mirror(&self, route: &str, raw: &Spanned<RawMirror>, pools: &[PoolConfig]) -> Result<MirrorConfig> {
        let table = raw.span();
        let raw = raw.get_ref();
        let pool = raw.pool.as_ref().ok_or_else(|| {
            self.err(table.clone(), format!("route \"{route}\": mirror needs pool = \"NAME\", the shadow pool"))
        })?;
        if !pools.iter().any(|p| p.name == *pool.get_ref()) {
            return Err(self.err(
                pool.span(),
                format!(
                    "route \"{route}\": mirror names unknown pool \"{}\" (known: {})",
                    pool.get_ref(),
                    known_pools(pools)
                ),
            ));
        }
        let percent = match &raw.percent {
            None => 100,
            Some(v) => self.int_in(v, &format!("route \"{route}\": mirror.percent"), 0, 100)?,
        };
        let header = raw.header.as_ref().map(|h| self.header_name(route, "mirror.header", h)).transpose()?;
        let max_body = match &raw.max_body {
            None => DEFAULT_MIRROR_MAX_BODY,
            Some(v) => parse_size(v.get_ref()).ok_or_else(|| {
                self.err(
                    v.span(),
                    format!(
                        "route \"{route}\": mirror.max_body \"{}\" is not a size; write bytes with a unit, e.g. \"64KiB\", \"1MiB\" or \"512B\"",
                        v.get_ref()
                    ),
                )
            })?,
        };
        Ok(MirrorConfig { pool: pool.get_ref().clone(), percent: to_u32(percent), header, max_body })
    }

    pub(super) fn host_match(&self, route: &str, v: &Spanned<String>) -> Result<HostMatch> {
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

    pub(super) fn path_prefix(&self, route: &str, v: &Spanned<String>) -> Result<String> {
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

    pub(super) fn split(
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

    pub(super) fn sticky(&self, route: &str, raw: &Spanned<RawSticky>) -> Result<StickyKey> {
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

    pub(super) fn force(
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
}

/// The default `mirror.max_body`: 64 KiB.
pub(super) const DEFAULT_MIRROR_MAX_BODY: usize = 64 * 1024;

/// `"64KiB"`, `"1MiB"`, `"512B"` (or `"512"`) as bytes, at most 1 GiB.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: usize = number.parse().ok()?;
    let scale: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        _ => return None,
    };
    number.checked_mul(scale).filter(|n| *n <= 1024 * 1024 * 1024)
}

fn known_pools(pools: &[PoolConfig]) -> String {
    pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use http::HeaderName;

    // ----- [[routes]] ---------------------------------------------------------

    #[test]
    fn mirror_names_a_pool_a_percent_a_header_and_a_bound() {
        let route = "[[routes]]\nname = \"shop\"\nsplit = { blue = 1 }\n[routes.mirror]\n";
        let config = parse_ok(&with_routes(&format!(
            "{route}pool = \"canary\"\npercent = 10\nheader = \"X-Mirror\"\nmax_body = \"1MiB\"\n"
        )));
        let mirror = config.routes[0].mirror.clone().unwrap();
        assert_eq!(mirror.pool, "canary");
        assert_eq!(mirror.percent, 10);
        assert_eq!(mirror.header.unwrap().as_str(), "x-mirror");
        assert_eq!(mirror.max_body, 1024 * 1024);
        let defaults = parse_ok(&with_routes(&format!("{route}pool = \"canary\"\n"))).routes[0].mirror.clone().unwrap();
        assert_eq!((defaults.percent, defaults.header, defaults.max_body), (100, None, DEFAULT_MIRROR_MAX_BODY));
        assert_eq!(parse_ok(&with_routes(ROUTE)).routes[0].mirror, None);

        assert_err(&with_routes(&format!("{route}percent = 10\n")), "route \"shop\": mirror needs pool", (8, 1));
        assert_err(
            &with_routes(&format!("{route}pool = \"shadow\"\n")),
            "route \"shop\": mirror names unknown pool \"shadow\" (known: blue, canary)",
            (9, 8),
        );
        assert_err(
            &with_routes(&format!("{route}pool = \"canary\"\npercent = 101\n")),
            "route \"shop\": mirror.percent is 101; it must be at most 100",
            (10, 11),
        );
        assert_err(
            &with_routes(&format!("{route}pool = \"canary\"\nmax_body = \"64KB\"\n")),
            "route \"shop\": mirror.max_body \"64KB\" is not a size",
            (10, 12),
        );
        assert_err(
            &with_routes(&format!("{route}pool = \"canary\"\nfraction = 1\n")),
            "unknown field `fraction`",
            (10, 1),
        );
    }

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
