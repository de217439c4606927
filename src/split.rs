//! Pool choice inside a route: forced, sticky or weighted.
//!
//! A [`Split`] is a route's *effective* weights, frozen into a snapshot. It
//! answers two questions, both without allocating:
//!
//! - **weighted**: draw a number in `0..total` from the request's RNG and
//!   find the pool whose cumulative range holds it, so shares match weights;
//! - **sticky**: hash the user's key into one of [`BUCKETS`] buckets; each
//!   pool owns one *contiguous* range of buckets, laid out in the order the
//!   split lists the pools. Raising the last pool's weight (list the canary
//!   last) only grows its range at the expense of its neighbour, so users move
//!   *into* the canary and never back and forth.
//!
//! The hash is FNV-1a, fixed here rather than taken from the standard
//! library, so a user keeps their bucket across restarts and releases.

use rand::Rng;

/// Number of sticky buckets; a user's key lands in one of them.
pub const BUCKETS: u32 = 10_000;

/// A route's effective weights over its targets (positions `0..n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Weights in target order.
    weights: Vec<u32>,
    /// Running sum of `weights`: target `i` owns `cumulative[i-1]..cumulative[i]`.
    cumulative: Vec<u64>,
    /// Exclusive end of each target's bucket range.
    bucket_ends: Vec<u32>,
}

impl Split {
    /// Weights in target order. A split that is all zero is valid here (every
    /// pick answers `None`): runtime state such as trips and health can leave
    /// a route with nothing to serve, and the proxy then answers 503.
    pub fn new(weights: Vec<u32>) -> Split {
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut sum = 0u64;
        for &w in &weights {
            sum += u64::from(w);
            cumulative.push(sum);
        }
        let bucket_ends =
            cumulative.iter().map(|&c| (c * u64::from(BUCKETS)).checked_div(sum).unwrap_or(0) as u32).collect();
        Split { weights, cumulative, bucket_ends }
    }

    /// The weights, in target order.
    pub fn weights(&self) -> &[u32] {
        &self.weights
    }

    /// Sum of all weights.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// A target drawn in proportion to the weights; `None` if all are zero.
    pub fn pick_weighted<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let point = rng.random_range(0..total);
        // Few targets per route: a linear scan beats a binary search here.
        self.cumulative.iter().position(|&end| point < end)
    }

    /// The target owning `bucket` (`0..BUCKETS`); `None` if all weights are zero.
    pub fn pick_bucket(&self, bucket: u32) -> Option<usize> {
        if self.total() == 0 {
            return None;
        }
        let bucket = bucket % BUCKETS;
        self.bucket_ends.iter().position(|&end| bucket < end).filter(|&i| self.weights[i] > 0)
    }
}

/// FNV-1a of `bytes`: the same value in every process, version and
/// platform (sticky buckets, digests of files replicas compare).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The sticky bucket of a user key: stable across processes and versions.
pub fn bucket_of(key: &[u8]) -> u32 {
    let hash = fnv1a(key);
    // Fold the high bits in: FNV's low bits alone are weak for short keys.
    ((hash ^ (hash >> 32)) % u64::from(BUCKETS)) as u32
}

/// The value of cookie `name` in a `Cookie` header value (`a=1; b=2`).
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn weighted_shares_follow_weights() {
        let split = Split::new(vec![90, 10]);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut counts = [0u32; 2];
        for _ in 0..100_000 {
            counts[split.pick_weighted(&mut rng).unwrap()] += 1;
        }
        let share = f64::from(counts[1]) / 100_000.0;
        assert!((share - 0.10).abs() < 0.01, "canary share {share}");
    }

    #[test]
    fn zero_weight_is_never_picked() {
        let split = Split::new(vec![0, 5, 0]);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..10_000 {
            assert_eq!(split.pick_weighted(&mut rng), Some(1));
        }
        for b in 0..BUCKETS {
            assert_eq!(split.pick_bucket(b), Some(1));
        }
    }

    #[test]
    fn all_zero_picks_nothing() {
        let split = Split::new(vec![0, 0]);
        let mut rng = SmallRng::seed_from_u64(1);
        assert_eq!(split.pick_weighted(&mut rng), None);
        assert_eq!(split.pick_bucket(3), None);
    }

    #[test]
    fn same_seed_same_choices() {
        let split = Split::new(vec![1, 1, 1]);
        let draw = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..50).map(|_| split.pick_weighted(&mut rng).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
    }

    #[test]
    fn bucket_ranges_are_contiguous_and_proportional() {
        let split = Split::new(vec![90, 10]);
        assert_eq!(split.pick_bucket(0), Some(0));
        assert_eq!(split.pick_bucket(8_999), Some(0));
        assert_eq!(split.pick_bucket(9_000), Some(1));
        assert_eq!(split.pick_bucket(9_999), Some(1));
    }

    #[test]
    fn raising_the_last_weight_only_moves_users_into_it() {
        let steps = [0u32, 1, 5, 10, 30, 50, 100];
        for pair in steps.windows(2) {
            let before = Split::new(vec![100 - pair[0], pair[0]]);
            let after = Split::new(vec![100 - pair[1], pair[1]]);
            for user in 0..5_000u32 {
                let b = bucket_of(format!("user-{user}").as_bytes());
                if before.pick_bucket(b) == Some(1) {
                    assert_eq!(after.pick_bucket(b), Some(1), "user {user} left the canary");
                }
            }
        }
    }

    #[test]
    fn buckets_spread_evenly() {
        let mut low = 0;
        for user in 0..20_000u32 {
            if bucket_of(format!("u{user}").as_bytes()) < BUCKETS / 10 {
                low += 1;
            }
        }
        let share = f64::from(low) / 20_000.0;
        assert!((share - 0.10).abs() < 0.015, "share {share}");
    }

    #[test]
    fn bucket_is_stable() {
        // Pinned: changing the hash would move every sticky user at upgrade.
        assert_eq!(bucket_of(b"alice"), bucket_of(b"alice"));
        assert_eq!(bucket_of(b""), ((0xcbf2_9ce4_8422_2325u64 ^ (0xcbf2_9ce4_8422_2325u64 >> 32)) % 10_000) as u32);
    }

    #[test]
    fn cookies_parse() {
        assert_eq!(cookie_value("a=1; b=2", "b"), Some("2"));
        assert_eq!(cookie_value("a=1;b=\"x\"", "b"), Some("x"));
        assert_eq!(cookie_value("ab=1", "a"), None);
        assert_eq!(cookie_value("", "a"), None);
    }
}
