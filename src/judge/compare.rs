//! Anytime-valid evidence on the excess of one pool's bad-outcome share over
//! its baseline's: the statistics under the error rule and the latency rule.
//!
//! The question is always the same: is `p − q`, the pool's share of bad
//! outcomes (failures, or answers slower than a threshold) minus its
//! baseline's share at the same time, above an allowance `a`? The judge
//! looks at the answer every tick, forever, so a fixed-sample test repeated
//! at each look would false-alarm far above its nominal level. The answer is
//! instead a family of **test martingales** (e-processes): products of one
//! factor per tick, each with mean at most 1 while the pool is within its
//! allowance. By Ville's inequality such a product reaches `1/α` at *any*
//! time with probability at most `α`, however often it is looked at.
//!
//! One factor, for a tick in which the pool served `n` requests with `x`
//! bad ones and the baseline `m` with `y` bad ones, is
//! `exp(θ·x − ψ·y − a·n·(e^θ − 1))`. Under the null (`p ≤ q + a`),
//! `E[e^{θx}] ≤ exp(n·(q + a)·(e^θ − 1))` and `E[e^{−ψy}] ≤ exp(−m·q·(1 − e^{−ψ}))`;
//! `ψ` is chosen so that `m·(1 − e^{−ψ}) = n·(e^θ − 1)`, which cancels the
//! unknown baseline share `q` exactly. So the baseline needs no estimate
//! and may change from tick to tick (a shared outage raises both shares and
//! cancels out): the null is only that **within each tick** the pool is no
//! worse than its baseline plus the allowance. When the baseline served too
//! few requests in a tick to cancel the pool's term (`1 − e^{−ψ}` is capped at
//! [`PAY_CAP`]), the rest is carried as a debt paid from later ticks, and
//! until it is paid it is charged at the worst case (`q ≤ 1`); this assumes
//! the baseline's share does not change while a debt is outstanding (a few
//! ticks, at low traffic only).
//!
//! `θ` is the size of the excess bet on; a fixed grid ([`THETAS`]) is mixed
//! with equal weights, so the mixture is an e-process too and adapts to small
//! and large excesses. The mirror image (`exp(−θ·x + ψ·y + a·n·(1 − e^{−θ}))`)
//! is evidence that the pool is *within* its allowance: the upper bound a
//! "healthy" verdict needs.
//!
//! Because the allowance enters linearly, each process is a whole confidence
//! sequence: the lower bound on the excess is the largest `a'` still rejected.
//!
//! A change after a long good run is caught by a CUSUM over the same factors:
//! the lower-side process is restarted at its running minimum (only at
//! restart points a few seconds apart, and only with no debt outstanding). The
//! restarted statistic is bounded by the Shiryaev–Roberts sum of processes
//! started at each restart point, whose mean grows by one per restart; so
//! with threshold `c` the chance of a false alarm within a period holding
//! `r` restart points is at most `r / c`. The judge sets `c` from the
//! confidence per hour.

/// Mixed bets `θ`: `ln 1.5`, `ln 2`, `ln 4`, `ln 8` — from an excess of a
/// few tenths of the null share to an order of magnitude.
const THETAS: [f64; 4] =
    [0.405_465_108_108_164_4, std::f64::consts::LN_2, 2.0 * std::f64::consts::LN_2, 3.0 * std::f64::consts::LN_2];

/// Largest `1 − e^{−ψ}` paid per baseline request (so `ψ ≤ ln 10`): one bad
/// baseline answer never wipes a bet out.
const PAY_CAP: f64 = 0.9;

/// Requests and bad outcomes of one pool over some span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests that ended.
    pub requests: u64,
    /// Of which bad (failed, or slower than the latency rule's threshold).
    pub bad: u64,
}

impl Counts {
    /// Bad share, 0 when empty.
    pub fn share(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.bad as f64 / self.requests as f64
        }
    }

    fn add(&mut self, other: Counts) {
        self.requests += other.requests;
        self.bad += other.bad;
    }

    /// `self − earlier`, for counts of a later span.
    pub fn since(&self, earlier: Counts) -> Counts {
        Counts { requests: self.requests - earlier.requests, bad: self.bad - earlier.bad }
    }
}

/// Where a restarted (CUSUM) process begins: the totals at that point.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    /// Tick at whose end the process restarted.
    tick: u64,
    pool: Counts,
    base: Counts,
    /// The lower side's baseline payments at that point.
    paid: f64,
}

/// One bet `θ` of the mixture.
#[derive(Debug, Clone)]
struct Arm {
    theta: f64,
    /// `e^θ − 1`: what the lower side charges per pool request.
    g: f64,
    /// `1 − e^{−θ}`: what the upper side credits per pool request.
    h: f64,
    /// Lower side: `Σ ψ·y` over the baseline's bad answers.
    low_paid: f64,
    /// Lower side: pool charge not yet cancelled by baseline traffic.
    debt: f64,
    /// Upper side: `Σ ψ·y`.
    up_paid: f64,
    /// Upper side: pool credit not yet spent on baseline traffic.
    credit: f64,
    /// Start of the restarted lower-side process.
    mark: Mark,
}

impl Arm {
    fn new(theta: f64) -> Arm {
        Arm {
            theta,
            g: theta.exp_m1(),
            h: -(-theta).exp_m1(),
            low_paid: 0.0,
            debt: 0.0,
            up_paid: 0.0,
            credit: 0.0,
            mark: Mark::default(),
        }
    }

    /// Log of the lower-side process at allowance `a`, over `pool`.
    fn lower(&self, pool: Counts, a: f64) -> f64 {
        self.theta * pool.bad as f64 - self.low_paid - a * self.g * pool.requests as f64 - self.debt
    }

    /// Log of the restarted lower-side process at allowance `a`.
    fn restarted(&self, pool: Counts, a: f64) -> f64 {
        let span = pool.since(self.mark.pool);
        self.theta * span.bad as f64 - (self.low_paid - self.mark.paid) - a * self.g * span.requests as f64 - self.debt
    }

    /// Log of the upper-side process at allowance `a`.
    fn upper(&self, pool: Counts, a: f64) -> f64 {
        -self.theta * pool.bad as f64 + self.up_paid + a * self.h * pool.requests as f64
    }
}

/// The evidence comparing a pool with its baseline on one kind of bad
/// outcome, since the pool's current version began.
#[derive(Debug, Clone)]
pub(crate) struct Comparison {
    arms: Vec<Arm>,
    /// The allowance the CUSUM restarts are chosen for.
    allowed: f64,
    /// Totals since the version began.
    pool: Counts,
    base: Counts,
}

/// What the restarted process looked at: the recent span that decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Tick at whose end the span begins.
    pub(crate) from_tick: u64,
    /// The pool over the span.
    pub(crate) pool: Counts,
    /// The baseline over the span.
    pub(crate) base: Counts,
}

impl Comparison {
    /// No evidence yet, for an allowance `allowed`.
    pub(crate) fn new(allowed: f64) -> Comparison {
        Comparison {
            arms: THETAS.iter().map(|&t| Arm::new(t)).collect(),
            allowed,
            pool: Counts::default(),
            base: Counts::default(),
        }
    }

    /// Totals of the pool and of the baseline since the version began.
    pub(crate) fn totals(&self) -> (Counts, Counts) {
        (self.pool, self.base)
    }

    /// Fold one tick: the pool's and the baseline's outcomes in it. With
    /// `restart_point`, the tick ends on a point where the recent-change
    /// process may restart.
    pub(crate) fn fold(&mut self, tick: u64, pool: Counts, base: Counts, restart_point: bool) {
        let n = pool.requests as f64;
        let m = base.requests as f64;
        let y = base.bad as f64;
        for arm in &mut self.arms {
            arm.debt += n * arm.g;
            if m > 0.0 && arm.debt > 0.0 {
                let wanted = arm.debt / m;
                let q = wanted.min(PAY_CAP);
                arm.low_paid += -(-q).ln_1p() * y;
                arm.debt = if wanted <= PAY_CAP { 0.0 } else { arm.debt - q * m };
            }
            arm.credit += n * arm.h;
            if m > 0.0 && arm.credit > 0.0 {
                arm.up_paid += (arm.credit / m).ln_1p() * y;
                arm.credit = 0.0;
            }
        }
        self.pool.add(pool);
        self.base.add(base);
        if restart_point {
            let (total_pool, total_base, allowed) = (self.pool, self.base, self.allowed);
            for arm in &mut self.arms {
                if arm.debt == 0.0 && arm.restarted(total_pool, allowed) < 0.0 {
                    arm.mark = Mark { tick, pool: total_pool, base: total_base, paid: arm.low_paid };
                }
            }
        }
    }

    /// Log of the mixed lower-side process at allowance `a`: evidence that
    /// the excess is above `a`, since the version began.
    pub(crate) fn lower(&self, a: f64) -> f64 {
        mix(self.arms.iter().map(|arm| arm.lower(self.pool, a)))
    }

    /// Log of the mixed restarted process at allowance `a`: evidence that
    /// the excess is above `a` over the recent span.
    pub(crate) fn recent(&self, a: f64) -> f64 {
        mix(self.arms.iter().map(|arm| arm.restarted(self.pool, a)))
    }

    /// Log of the mixed upper-side process at allowance `a`: evidence that
    /// the excess is below `a`, since the version began.
    pub(crate) fn upper(&self, a: f64) -> f64 {
        mix(self.arms.iter().map(|arm| arm.upper(self.pool, a)))
    }

    /// The largest excess still shown at `level` since the version began
    /// (a lower confidence bound), if any in `-1..=1`.
    pub(crate) fn lower_bound(&self, level: f64) -> Option<f64> {
        decreasing_root(|a| self.lower(a), level)
    }

    /// The lower confidence bound over the recent span.
    pub(crate) fn recent_lower_bound(&self, level: f64) -> Option<f64> {
        decreasing_root(|a| self.recent(a), level)
    }

    /// The smallest excess still excluded at `level` from below (an upper
    /// confidence bound), if any in `-1..=1`.
    pub(crate) fn upper_bound(&self, level: f64) -> Option<f64> {
        decreasing_root(|b| self.upper(-b), level).map(|b| -b)
    }

    /// The recent span of the bet that weighs most in [`Comparison::recent`].
    pub(crate) fn recent_span(&self) -> Span {
        let best = self
            .arms
            .iter()
            .max_by(|x, y| x.restarted(self.pool, self.allowed).total_cmp(&y.restarted(self.pool, self.allowed)));
        let mark = best.map(|arm| arm.mark).unwrap_or_default();
        Span { from_tick: mark.tick, pool: self.pool.since(mark.pool), base: self.base.since(mark.base) }
    }
}

/// `ln(mean(exp(x)))`, without overflow.
fn mix(logs: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = logs.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let (sum, count): (f64, f64) = logs.fold((0.0, 0.0), |(s, c), x| (s + (x - max).exp(), c + 1.0));
    max + (sum / count).ln()
}

/// The largest `a` in `-1..=1` with `f(a) ≥ level`, for `f` non-increasing;
/// `None` when even `f(-1)` is below `level`.
fn decreasing_root(f: impl Fn(f64) -> f64, level: f64) -> Option<f64> {
    let (mut lo, mut hi) = (-1.0, 1.0);
    if f(lo) < level {
        return None;
    }
    if f(hi) >= level {
        return Some(hi);
    }
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if f(mid) >= level {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(requests: u64, bad: u64) -> Counts {
        Counts { requests, bad }
    }

    #[test]
    fn mixing_is_the_log_of_the_mean() {
        let logs = [0.0, 3.0_f64.ln()];
        assert!((mix(logs.iter().copied()) - 2.0_f64.ln()).abs() < 1e-12);
        assert_eq!(mix([f64::NEG_INFINITY].iter().copied()), f64::NEG_INFINITY);
    }

    #[test]
    fn a_worse_pool_builds_lower_side_evidence_and_a_bound_above_the_allowance() {
        let mut cmp = Comparison::new(0.01);
        for tick in 0..200 {
            cmp.fold(tick, c(5, 1), c(45, 0), tick % 4 == 3);
        }
        // 20% against 0%: far beyond an allowance of 1 point.
        assert!(cmp.lower(0.01) > 20.0, "{}", cmp.lower(0.01));
        let bound = cmp.lower_bound(200.0_f64.ln()).expect("a bound");
        assert!(bound > 0.1 && bound < 0.2, "{bound}");
        assert!(cmp.upper(0.01) < 0.0);
    }

    #[test]
    fn a_shared_rise_cancels_out() {
        let mut cmp = Comparison::new(0.01);
        // Both pools at 30% bad: the pool is no worse than its baseline.
        for tick in 0..400 {
            let pool = c(10, 3);
            let base = c(90, 27);
            cmp.fold(tick, pool, base, tick % 4 == 3);
        }
        assert!(cmp.lower(0.01) < 0.0, "{}", cmp.lower(0.01));
        assert!(cmp.recent(0.01) < 100.0_f64.ln(), "{}", cmp.recent(0.01));
        // The bound is loose at shares this high (the exponential bounds on
        // each factor lose more as the share grows), but it exists.
        let upper = cmp.upper_bound(100.0_f64.ln()).expect("an upper bound");
        assert!(upper > 0.0 && upper < 0.1, "{upper}");
    }

    #[test]
    fn the_lower_bound_is_monotone_in_the_level() {
        let mut cmp = Comparison::new(0.01);
        for tick in 0..100 {
            cmp.fold(tick, c(4, 1), c(40, 1), false);
        }
        let loose = cmp.lower_bound(10.0_f64.ln()).unwrap();
        let tight = cmp.lower_bound(1000.0_f64.ln()).unwrap();
        assert!(loose > tight, "{loose} {tight}");
        assert!((cmp.lower(loose) - 10.0_f64.ln()).abs() < 1e-6);
    }

    #[test]
    fn the_recent_process_forgets_a_good_past() {
        let mut cmp = Comparison::new(0.01);
        // An hour's worth of good ticks, then 5% bad.
        for tick in 0..14_400 {
            cmp.fold(tick, c(5, u64::from(tick % 1000 == 0)), c(45, u64::from(tick % 22 == 0)), tick % 4 == 3);
        }
        let before = cmp.recent(0.01);
        assert!(before <= 0.0 + 1e-9 + 3.0, "restarted near zero: {before}");
        for tick in 14_400..14_440 {
            // 10 s at one bad in four ticks (5%).
            cmp.fold(tick, c(5, u64::from(tick % 4 == 0)), c(45, 0), tick % 4 == 3);
        }
        assert!(cmp.recent(0.01) > 5.0, "recent {}", cmp.recent(0.01));
        assert!(cmp.lower(0.01) < -100.0, "the since-version process is diluted: {}", cmp.lower(0.01));
        let span = cmp.recent_span();
        assert!(span.from_tick >= 14_395 && span.pool.requests <= 205, "{span:?}");
    }

    #[test]
    fn a_baseline_too_small_to_cancel_carries_a_debt() {
        let mut cmp = Comparison::new(0.01);
        // The pool alone: nothing cancels its term, so no evidence accrues
        // beyond what the worst case allows.
        cmp.fold(0, c(10, 10), c(0, 0), true);
        let owed = cmp.lower(0.01);
        cmp.fold(1, c(0, 0), c(1_000, 0), true);
        assert!(cmp.lower(0.01) > owed, "paying the debt restores the evidence");
    }
}
