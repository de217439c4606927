//! The choice of a route's pool for one request: force rules, then the
//! sticky bucket, then a weighted draw, skipping pools that cannot serve.

use http::header;
use http::request::Parts;
use rand::rngs::SmallRng;
use rand::Rng;

pub(super) use crate::access_log::Choice as How;
use crate::config::ForceMatch;
use crate::snapshot::{Route, Sticky};
use crate::split::{self, Split};

/// The pool a request goes to, and a new sticky token to set, if any.
pub(super) struct Choice {
    pub(super) target: usize,
    pub(super) new_cookie: Option<String>,
    /// How the pool was chosen, for the access log.
    pub(super) how: How,
}

/// Force rules first, then stickiness, then weights; a pool that cannot serve
/// (no eligible backend) is skipped and its share goes to the others. A force
/// rule never sends traffic to a tripped or unhealthy pool: such a request is
/// split as if no rule matched (SPEC §3).
pub(super) fn choose_target(route: &Route, parts: &Parts, rng: &mut SmallRng) -> Option<Choice> {
    let serving = |t: usize| route.targets[t].can_serve();
    for (matcher, target) in &route.force {
        if force_matches(matcher, parts) && !route.targets[*target].tripped && serving(*target) {
            return Some(Choice { target: *target, new_cookie: None, how: How::Forced });
        }
    }
    let mut new_cookie = None;
    let sticky_pick = match &route.sticky {
        Some(Sticky::Cookie { name }) => match cookie(parts, name) {
            Some(value) => route.split.pick_bucket(split::bucket_of(value.as_bytes())),
            None => {
                let token = format!("{:016x}", rng.random::<u64>());
                let pick = route.split.pick_bucket(split::bucket_of(token.as_bytes()));
                new_cookie = Some(token);
                pick
            }
        },
        Some(Sticky::Header(name)) => {
            parts.headers.get(name).and_then(|v| route.split.pick_bucket(split::bucket_of(v.as_bytes())))
        }
        None => None,
    };
    let how = if sticky_pick.is_some() { How::Sticky } else { How::Weighted };
    let (target, how) = match sticky_pick.or_else(|| route.split.pick_weighted(rng)) {
        Some(t) if serving(t) => (t, how),
        _ => (shed(route, rng)?, How::Weighted),
    };
    Some(Choice { target, new_cookie, how })
}

/// A weighted pick among the targets that can serve: the rare path when a
/// pool has no eligible backend.
fn shed(route: &Route, rng: &mut SmallRng) -> Option<usize> {
    let weights = route
        .split
        .weights()
        .iter()
        .enumerate()
        .map(|(t, &w)| if route.targets[t].can_serve() { w } else { 0 })
        .collect();
    Split::new(weights).pick_weighted(rng)
}

fn force_matches(matcher: &ForceMatch, parts: &Parts) -> bool {
    match matcher {
        ForceMatch::Header(name, value) => parts.headers.get_all(name).iter().any(|v| v.as_bytes() == value.as_bytes()),
        ForceMatch::Cookie(name, value) => cookie(parts, name).is_some_and(|v| v == value),
    }
}

/// The value of cookie `name` across all `Cookie` headers.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| split::cookie_value(v, name))
}
