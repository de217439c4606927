//! The trip rule: a route's effective weights, computed from its split, an
//! admin override, the tripped pools and the history (SPEC §3).
//!
//! A pure computation with no lock, clock or I/O, so that every case of the
//! rule is a unit test: a tripped pool goes to weight 0 wherever another
//! untripped pool of nonzero weight can take its share; where it serves
//! alone, the route falls back to its most recent earlier split in which
//! that pool had weight 0 and another pool served; where no such split
//! exists the weight stays, and the pool is reported as stranded.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::rollouts::with_canary_share;
use super::state::{Override, Revision, Trip, Weights};
use crate::config::{Config, RouteConfig};

/// Effective weights of all routes.
#[derive(Debug)]
pub(super) struct Effective {
    /// By route, aligned with the route's split (for building snapshots).
    pub(super) weights: HashMap<String, Vec<u32>>,
    /// By route, with pool names (for history and status).
    pub(super) splits: BTreeMap<String, Weights>,
    /// (route, pool) pairs where a tripped pool keeps serving.
    pub(super) stranded: Vec<(String, String)>,
}

/// Every route's effective weights: its override, else its rollout's canary
/// share over the file's split (`shares`: route → (canary, percent)), else
/// the file's split, with the trip rule applied.
pub(super) fn all_effective(
    config: &Config,
    overrides: &BTreeMap<String, Override>,
    trips: &BTreeMap<String, Trip>,
    history: &VecDeque<Revision>,
    shares: &BTreeMap<String, (String, u32)>,
) -> Effective {
    let mut out = Effective { weights: HashMap::new(), splits: BTreeMap::new(), stranded: Vec::new() };
    for rc in &config.routes {
        let base = match (overrides.get(&rc.name), shares.get(&rc.name)) {
            (Some(ov), _) => align(&ov.split, rc),
            (None, Some((canary, share))) => with_canary_share(&rc.split, canary, *share),
            (None, None) => rc.split.clone(),
        };
        let (split, stranded) = effective_weights(rc, base, trips, history);
        out.stranded.extend(stranded.into_iter().map(|p| (rc.name.clone(), p)));
        out.weights.insert(rc.name.clone(), split.iter().map(|(_, w)| *w).collect());
        out.splits.insert(rc.name.clone(), split);
    }
    out
}

/// The trip rule for one route (see the module docs). Returns the effective
/// weights and the tripped pools that had to keep serving.
pub fn effective_weights(
    route: &RouteConfig,
    base: Weights,
    trips: &BTreeMap<String, Trip>,
    history: &VecDeque<Revision>,
) -> (Weights, Vec<String>) {
    let tripped = |pool: &str| trips.contains_key(pool);
    let mut split = base;
    let mut stranded = Vec::new();
    for i in 0..split.len() {
        let (pool, weight) = (split[i].0.clone(), split[i].1);
        let Some(trip) = trips.get(&pool) else { continue };
        if weight == 0 {
            continue;
        }
        let others_serve = split.iter().enumerate().any(|(j, (p, w))| j != i && *w > 0 && !tripped(p));
        if others_serve {
            split[i].1 = 0;
            continue;
        }
        // Serving alone: switch back to the latest earlier split without it.
        let fallback = history
            .iter()
            .rev()
            .filter(|rev| rev.revision < trip.revision)
            .filter_map(|rev| rev.splits.get(&route.name))
            .map(|s| align(s, route))
            .find(|s| s.iter().any(|(p, w)| *p == pool && *w == 0) && s.iter().any(|(p, w)| *w > 0 && !tripped(p)));
        match fallback {
            Some(earlier) => split = earlier,
            None => stranded.push(pool),
        }
    }
    // A fallback taken for one pool may give weight back to a tripped pool
    // looked at before it; an untripped pool serves in every fallback, so
    // those go to 0 as well.
    if split.iter().any(|(p, w)| *w > 0 && !tripped(p)) {
        for (pool, weight) in split.iter_mut() {
            if tripped(pool) {
                *weight = 0;
            }
        }
    }
    (split, stranded)
}

/// `split` laid out in the route's pool order; pools the route does not
/// have are dropped, pools it has and `split` lacks get 0.
pub(super) fn align(split: &[(String, u32)], route: &RouteConfig) -> Weights {
    route
        .split
        .iter()
        .map(|(pool, _)| (pool.clone(), split.iter().find(|(p, _)| p == pool).map_or(0, |(_, w)| *w)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HostMatch;
    use crate::control::state::TripReason;

    fn route(split: &[(&str, u32)]) -> RouteConfig {
        RouteConfig {
            name: "shop".into(),
            host: HostMatch::Any,
            path_prefix: "/".into(),
            split: w(split),
            sticky: None,
            force: Vec::new(),
            rollout: None,
            mirror: None,
        }
    }

    fn w(split: &[(&str, u32)]) -> Weights {
        split.iter().map(|(p, w)| (p.to_string(), *w)).collect()
    }

    fn tripped(pool: &str, revision: u64) -> BTreeMap<String, Trip> {
        let trip = Trip { reason: TripReason::ErrorRate, detail: String::new(), revision, backends: Vec::new() };
        BTreeMap::from([(pool.to_string(), trip)])
    }

    fn rev(revision: u64, split: &[(&str, u32)]) -> Revision {
        Revision {
            revision,
            time: String::new(),
            cause: String::new(),
            splits: BTreeMap::from([("shop".to_string(), w(split))]),
        }
    }

    #[test]
    fn a_tripped_canary_goes_to_zero_and_its_share_to_the_others() {
        let r = route(&[("blue", 90), ("canary", 10)]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("canary", 5), &VecDeque::new());
        assert_eq!(split, w(&[("blue", 90), ("canary", 0)]));
        assert!(stranded.is_empty());
    }

    #[test]
    fn a_pool_serving_alone_switches_back_to_the_last_split_without_it() {
        let r = route(&[("blue", 0), ("green", 100)]);
        let history = VecDeque::from([
            rev(1, &[("blue", 100), ("green", 0)]),
            rev(2, &[("blue", 50), ("green", 50)]),
            rev(3, &[("blue", 0), ("green", 100)]),
        ]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("green", 4), &history);
        assert_eq!(split, w(&[("blue", 100), ("green", 0)]));
        assert!(stranded.is_empty());
    }

    /// The fallback chosen for a pool serving alone gives weight back to
    /// another tripped pool (looked at before it): that one still goes to 0.
    #[test]
    fn a_fallback_gives_no_weight_back_to_another_tripped_pool() {
        let r = route(&[("v1", 0), ("v2", 0), ("v3", 100)]);
        let history = VecDeque::from([
            rev(5, &[("v1", 50), ("v2", 50), ("v3", 0)]),
            rev(6, &[("v1", 0), ("v2", 0), ("v3", 100)]),
        ]);
        let mut trips = tripped("v1", 7);
        trips.extend(tripped("v3", 8));
        let (split, stranded) = effective_weights(&r, r.split.clone(), &trips, &history);
        assert_eq!(split, w(&[("v1", 0), ("v2", 50), ("v3", 0)]));
        assert!(stranded.is_empty());
    }

    #[test]
    fn history_after_the_trip_is_not_a_fallback() {
        let r = route(&[("blue", 0), ("green", 100)]);
        let history = VecDeque::from([rev(1, &[("blue", 0), ("green", 100)]), rev(5, &[("blue", 100), ("green", 0)])]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("green", 2), &history);
        assert_eq!(split, r.split);
        assert_eq!(stranded, vec!["green".to_string()]);
    }

    #[test]
    fn a_route_is_never_left_with_nothing() {
        let r = route(&[("green", 100)]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("green", 2), &VecDeque::new());
        assert_eq!(split, w(&[("green", 100)]));
        assert_eq!(stranded, vec!["green".to_string()]);
    }

    #[test]
    fn weight_zero_pools_are_untouched() {
        let r = route(&[("blue", 100), ("canary", 0)]);
        let (split, stranded) = effective_weights(&r, r.split.clone(), &tripped("canary", 2), &VecDeque::new());
        assert_eq!(split, r.split);
        assert!(stranded.is_empty());
    }
}
