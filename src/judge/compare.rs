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
//! [`PAY_CAP`]), the rest is carried as a debt paid from later ticks'
//! baseline requests, the oldest tick's first: that tick's factor then spans
//! from it to the tick that pays its charge off, and its winnings count from
//! then on (the baseline's payments count at once: each is a factor of at
//! most 1, so counting it early can only lower the evidence). This assumes
//! the baseline's share does not change while a tick's charge is owed (a
//! few ticks, at low traffic only) and does not depend on the pool's
//! outcomes; the points where a tick is paid off depend on request counts
//! alone, so Ville's inequality holds over them. Each tick counts as soon as
//! its own charge is paid, not when every debt is: at low traffic the pool's
//! charges use most of what the baseline can cancel, so some debt is owed
//! much of the time, and a pool failing from its start would otherwise wait
//! for a lull. The other way round, a tick with baseline requests but none
//! of the pool's cancels a little in advance (up to [`BANK`] pool requests'
//! worth, each tick's deposit kept [`BANK_TICKS`]), so at low traffic a lone
//! pool request rarely waits for baseline requests to come.
//!
//! `θ` is the size of the excess bet on; a fixed grid ([`THETAS`]) is mixed
//! with fixed weights ([`WEIGHTS`], the prior), so the mixture is an
//! e-process too and adapts to small and large excesses. A tick in which
//! the baseline cannot cancel a bet (`n·(e^θ − 1)` above [`PAY_CAP`]·`m` plus
//! the bank, less what is owed) takes a smaller bet instead, the largest it
//! can cancel, when that is at least [`SHRINK`] of the bet: the bet of a tick
//! may depend on request counts, which do not depend on outcomes, so the
//! factor keeps its mean. A bet that would shrink further is kept whole and
//! leaves a debt (above). The mirror image (`exp(−θ·x + ψ·y + a·n·(1 − e^{−θ}))`)
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

use std::collections::VecDeque;

use super::math;

/// Mixed bets `θ`: `ln 1.5`, `ln 2`, `ln 4`, `ln 8` — from an excess of a
/// few tenths of the null share to an order of magnitude.
const THETAS: [f64; 4] =
    [0.405_465_108_108_164_4, std::f64::consts::LN_2, 2.0 * std::f64::consts::LN_2, 3.0 * std::f64::consts::LN_2];

/// The prior of the mixture: half on the largest bet, which is the one
/// that fits a canary failing many times more than its baseline (the case
/// an absolute limit's gate and a fast trip need), the rest spread so a
/// small excess, and a pool as large as its baseline (where only the small
/// bets can be cancelled), are still seen.
const WEIGHTS: [f64; 4] = [0.15, 0.15, 0.2, 0.5];

/// Most ticks whose pool charge waits for baseline requests, each counted
/// as soon as its own charge is cancelled; a longer queue merges its newest
/// ticks, which then count together (memory stays fixed).
const OWED_TICKS: usize = 16;

/// What is left of a tick's charge when it counts as paid: rounding, not
/// a debt.
const PAID: f64 = 1e-12;

/// Least share of its bet a tick takes rather than leave a debt.
const SHRINK: f64 = 0.75;

/// How many pool requests' worth of a bet the baseline may cancel in
/// advance.
const BANK: f64 = 2.0;

/// Ticks each deposit in the bank is kept before it is given up: the
/// baseline's share is assumed steady that long.
const BANK_TICKS: u64 = 16;

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
    /// The lower side's winnings at that point.
    won: f64,
    /// The lower side's charges at that point.
    charged: f64,
}

/// The lower side's sums over the ticks whose pool charge is cancelled.
#[derive(Debug, Clone, Copy, Default)]
struct Settled {
    won: f64,
    paid: f64,
    charged: f64,
}

/// A tick whose pool charge is not yet all cancelled.
#[derive(Debug, Clone, Copy)]
struct Owed {
    /// Its `θ·x`.
    won: f64,
    /// Its `n·(e^θ − 1)`.
    charged: f64,
    /// What is still to be cancelled.
    left: f64,
}

/// One bet `θ` of the mixture.
#[derive(Debug, Clone)]
struct Arm {
    theta: f64,
    /// `e^θ − 1`: what the lower side charges per pool request.
    g: f64,
    /// `1 − e^{−θ}`: what the upper side credits per pool request.
    h: f64,
    /// Lower side: `Σ θ·x` over the pool's bad answers, each tick's `θ`
    /// the bet it took.
    won: f64,
    /// Lower side: `Σ n·(e^θ − 1)`, what the allowance is charged on.
    charged: f64,
    /// Lower side: `Σ ψ·y` over the baseline's bad answers.
    low_paid: f64,
    /// Lower side: the ticks whose pool charge is not yet cancelled by
    /// baseline traffic, oldest first (at most [`OWED_TICKS`]).
    owed: VecDeque<Owed>,
    /// The lower side over the ticks whose charge is cancelled, and every
    /// baseline payment: what it shows.
    settled: Settled,
    /// Cancelling paid in advance by baseline requests of ticks that had
    /// room to spare, for the pool's next requests: each tick's deposit,
    /// oldest first, as `(tick, amount)`; at most one per tick of the last
    /// [`BANK_TICKS`].
    bank: VecDeque<(u64, f64)>,
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
            g: math::exp_m1(theta),
            h: -math::exp_m1(-theta),
            won: 0.0,
            charged: 0.0,
            low_paid: 0.0,
            owed: VecDeque::new(),
            settled: Settled::default(),
            bank: VecDeque::new(),
            up_paid: 0.0,
            credit: 0.0,
            mark: Mark::default(),
        }
    }

    /// The bet of a tick with `n` pool requests when the baseline can
    /// cancel `cover` (its room in the tick and the bank, less what is
    /// owed), as `θ` and `e^θ − 1`: the arm's own, or the largest `cover`
    /// pays for when that is not much smaller.
    fn bet(&self, n: f64, cover: f64) -> (f64, f64) {
        if n > 0.0 && cover > 0.0 && n * self.g > cover {
            let g = cover / n;
            let theta = math::ln_1p(g);
            if theta >= SHRINK * self.theta {
                return (theta, g);
            }
        }
        (self.theta, self.g)
    }

    /// Pool charge not yet cancelled by baseline traffic.
    fn debt(&self) -> f64 {
        self.owed.iter().map(|owed| owed.left).sum()
    }

    /// Count the oldest owed tick, now cancelled, in what the lower side
    /// shows.
    fn settle(&mut self) {
        if let Some(owed) = self.owed.pop_front() {
            self.settled.won += owed.won;
            self.settled.charged += owed.charged;
        }
    }

    /// Log of the lower-side process at allowance `a`, over the ticks
    /// whose charge is cancelled.
    fn lower(&self, a: f64) -> f64 {
        let s = &self.settled;
        s.won - s.paid - a * s.charged
    }

    /// Log of the restarted lower-side process at allowance `a`, over the
    /// ticks whose charge is cancelled.
    fn restarted(&self, a: f64) -> f64 {
        let (s, mark) = (&self.settled, &self.mark);
        (s.won - mark.won) - (s.paid - mark.paid) - a * (s.charged - mark.charged)
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
        let x = pool.bad as f64;
        let m = base.requests as f64;
        let y = base.bad as f64;
        for arm in &mut self.arms {
            // Credit older than BANK_TICKS may predate a change of the
            // baseline's share: given up.
            while arm.bank.front().is_some_and(|&(at, _)| tick > at + BANK_TICKS) {
                arm.bank.pop_front();
            }
            let banked: f64 = arm.bank.iter().map(|&(_, amount)| amount).sum();
            let (theta, g) = arm.bet(n, banked + PAY_CAP * m - arm.debt());
            arm.won += theta * x;
            arm.charged += n * g;
            if n > 0.0 {
                let this = Owed { won: theta * x, charged: n * g, left: n * g };
                let full = arm.owed.len() >= OWED_TICKS;
                match arm.owed.back_mut() {
                    // A long queue merges its newest ticks: they are
                    // cancelled together, as one.
                    Some(last) if full => {
                        last.won += this.won;
                        last.charged += this.charged;
                        last.left += this.left;
                    }
                    _ => arm.owed.push_back(this),
                }
            }
            // The bank pays first, oldest credit first.
            while let (Some(owed), Some(credit)) = (arm.owed.front_mut(), arm.bank.front_mut()) {
                let drawn = owed.left.min(credit.1);
                owed.left -= drawn;
                credit.1 -= drawn;
                if credit.1 <= 0.0 {
                    arm.bank.pop_front();
                }
                if owed.left <= PAID {
                    arm.settle();
                }
            }
            if m > 0.0 {
                let room = PAY_CAP * m;
                let debt = arm.debt();
                // Only a tick without pool requests saves up: at low traffic
                // most ticks are such, and a busy tick keeps its ψ small.
                let banked: f64 = arm.bank.iter().map(|&(_, amount)| amount).sum();
                let deposit = if n == 0.0 { (room - debt).min(BANK * arm.g - banked).max(0.0) } else { 0.0 };
                let cancelled = (debt + deposit).min(room);
                if cancelled > 0.0 {
                    arm.low_paid += -math::ln_1p(-cancelled / m) * y;
                }
                // Paying everything owed settles every tick, whatever the
                // rounding of the sum.
                let mut pay = if cancelled >= debt { f64::INFINITY } else { cancelled };
                while let Some(owed) = arm.owed.front_mut() {
                    if pay <= 0.0 {
                        break;
                    }
                    let drawn = owed.left.min(pay);
                    owed.left -= drawn;
                    pay -= drawn;
                    if owed.left <= PAID {
                        arm.settle();
                    }
                }
                if deposit > 0.0 {
                    arm.bank.push_back((tick, deposit));
                }
            }
            arm.settled.paid = arm.low_paid;
            arm.credit += n * arm.h;
            if m > 0.0 && arm.credit > 0.0 {
                arm.up_paid += math::ln_1p(arm.credit / m) * y;
                arm.credit = 0.0;
            }
        }
        self.pool.add(pool);
        self.base.add(base);
        if restart_point {
            let (total_pool, total_base, allowed) = (self.pool, self.base, self.allowed);
            for arm in &mut self.arms {
                if arm.owed.is_empty() && arm.restarted(allowed) < 0.0 {
                    arm.mark = Mark {
                        tick,
                        pool: total_pool,
                        base: total_base,
                        paid: arm.low_paid,
                        won: arm.won,
                        charged: arm.charged,
                    };
                }
            }
        }
    }

    /// Log of the mixed lower-side process at allowance `a`: evidence that
    /// the excess is above `a`, since the version began.
    pub(crate) fn lower(&self, a: f64) -> f64 {
        mix(self.arms.iter().map(|arm| arm.lower(a)))
    }

    /// Log of the mixed restarted process at allowance `a`: evidence that
    /// the excess is above `a` over the recent span.
    pub(crate) fn recent(&self, a: f64) -> f64 {
        mix(self.arms.iter().map(|arm| arm.restarted(a)))
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
        let best = self.arms.iter().max_by(|x, y| x.restarted(self.allowed).total_cmp(&y.restarted(self.allowed)));
        let mark = best.map(|arm| arm.mark).unwrap_or_default();
        Span { from_tick: mark.tick, pool: self.pool.since(mark.pool), base: self.base.since(mark.base) }
    }
}

/// `ln(Σ wᵢ·exp(xᵢ))` over the arms' logs `xᵢ` and the [`WEIGHTS`], without
/// overflow.
fn mix(logs: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = logs.clone().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = logs.zip(WEIGHTS).map(|(x, w)| w * math::exp(x - max)).sum();
    max + math::ln(sum)
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
    fn mixing_is_the_log_of_the_weighted_mean() {
        assert!((WEIGHTS.iter().sum::<f64>() - 1.0).abs() < 1e-12, "the prior sums to one");
        let logs = [0.0, 0.0, 0.0, 3.0_f64.ln()];
        let mean = WEIGHTS[0] + WEIGHTS[1] + WEIGHTS[2] + 3.0 * WEIGHTS[3];
        assert!((mix(logs.iter().copied()) - mean.ln()).abs() < 1e-12);
        assert_eq!(mix([f64::NEG_INFINITY].iter().copied()), f64::NEG_INFINITY);
    }

    #[test]
    fn a_bet_the_baseline_cannot_cancel_shrinks_or_leaves_a_debt() {
        let arm = Arm::new(THETAS[3]);
        // Room enough: the whole bet.
        assert_eq!(arm.bet(5.0, PAY_CAP * 45.0), (arm.theta, arm.g));
        // A little short: the largest bet 42 baseline requests cancel.
        let (theta, g) = arm.bet(8.0, PAY_CAP * 42.0);
        assert!((g - 0.9 * 42.0 / 8.0).abs() < 1e-12 && theta < arm.theta && theta >= SHRINK * arm.theta);
        // Far short: the whole bet, and a debt.
        assert_eq!(arm.bet(1.0, PAY_CAP), (arm.theta, arm.g));
        let mut cmp = Comparison::new(0.01);
        cmp.fold(0, c(8, 0), c(42, 0), false);
        assert_eq!(cmp.arms[3].debt(), 0.0, "a shrunk bet is paid in its tick");
        cmp.fold(1, c(1, 0), c(1, 0), false);
        assert!(cmp.arms[3].debt() > 0.0);
        // What the bank holds counts as room: a pool request after quiet
        // ticks bets no more than it and the tick's baseline can cancel.
        let mut banked = Comparison::new(0.01);
        banked.fold(0, c(0, 0), c(5, 0), false);
        banked.fold(1, c(1, 1), c(0, 0), false);
        let arm = &banked.arms[3];
        assert_eq!(arm.debt(), 0.0, "{arm:?}");
        assert!((arm.won - (1.0 + 0.9 * 5.0_f64).ln()).abs() < 1e-12, "{arm:?}");
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
    fn quiet_ticks_pay_a_later_bet_in_advance_for_a_while() {
        let mut cmp = Comparison::new(0.01);
        for tick in 0..4 {
            cmp.fold(tick, c(0, 0), c(5, 0), false);
        }
        // One failed pool request with no baseline request in its tick:
        // the bank cancels it, so it counts at once.
        cmp.fold(4, c(1, 1), c(0, 0), false);
        assert_eq!(cmp.arms[3].debt(), 0.0);
        assert!(cmp.lower(0.01) > 0.5, "{}", cmp.lower(0.01));
        // Credit older than BANK_TICKS is given up.
        let mut stale = Comparison::new(0.01);
        stale.fold(0, c(0, 0), c(50, 0), false);
        stale.fold(BANK_TICKS + 1, c(1, 1), c(0, 0), false);
        assert!(stale.arms[3].debt() > 0.0);
        assert_eq!(stale.lower(0.01), 0.0);
    }

    #[test]
    fn each_deposit_in_the_bank_is_kept_its_own_while() {
        // One baseline request a tick fills the bank a little at a time; at
        // the tick where the first deposit is given up, the later ones still
        // pay a pool request whole.
        let mut cmp = Comparison::new(0.01);
        for tick in 0..=BANK_TICKS {
            cmp.fold(tick, c(0, 0), c(1, 0), false);
        }
        cmp.fold(BANK_TICKS + 1, c(1, 1), c(0, 0), false);
        let arm = &cmp.arms[3];
        assert_eq!(arm.debt(), 0.0, "{arm:?}");
        assert!((arm.won - arm.theta).abs() < 1e-12, "the whole bet: {arm:?}");
        assert!(cmp.lower(0.01) > 0.5, "{}", cmp.lower(0.01));
    }

    #[test]
    fn an_owed_tick_counts_once_its_own_charge_is_paid() {
        // Two pool requests with no baseline around: two owed ticks. Eight
        // baseline requests then pay the first off, not yet the second: the
        // first's failure counts while the second is still owed.
        let mut cmp = Comparison::new(0.01);
        cmp.fold(0, c(1, 1), c(0, 0), false);
        cmp.fold(1, c(1, 0), c(0, 0), false);
        assert_eq!(cmp.lower(0.01), 0.0, "nothing paid yet");
        cmp.fold(2, c(0, 0), c(8, 0), false);
        let arm = &cmp.arms[3];
        assert_eq!(arm.owed.len(), 1, "{arm:?}");
        assert!((arm.debt() - (2.0 * arm.g - 0.9 * 8.0)).abs() < 1e-9, "{arm:?}");
        assert!((arm.lower(0.01) - (arm.theta - 0.01 * arm.g)).abs() < 1e-12, "{arm:?}");
        // A baseline failure counts against the evidence at once.
        let before = arm.lower(0.01);
        cmp.fold(3, c(0, 0), c(1, 1), false);
        assert!(cmp.arms[3].lower(0.01) < before, "{:?}", cmp.arms[3]);
    }

    #[test]
    fn a_long_queue_of_owed_ticks_merges_its_newest() {
        let mut cmp = Comparison::new(0.01);
        for tick in 0..(OWED_TICKS as u64 + 10) {
            cmp.fold(tick, c(1, 1), c(0, 0), false);
        }
        let arm = &cmp.arms[3];
        assert_eq!(arm.owed.len(), OWED_TICKS);
        assert!((arm.debt() - (OWED_TICKS as f64 + 10.0) * arm.g).abs() < 1e-9, "nothing is lost: {arm:?}");
        cmp.fold(100, c(0, 0), c(1_000, 0), false);
        assert!(cmp.arms[3].owed.is_empty());
        let won = cmp.arms[3].settled.won;
        assert!((won - (OWED_TICKS as f64 + 10.0) * THETAS[3]).abs() < 1e-9, "all of it counts once paid: {won}");
    }

    #[test]
    fn a_baseline_too_small_to_cancel_carries_a_debt() {
        let mut cmp = Comparison::new(0.01);
        // The pool alone: nothing cancels its term, so its failures count
        // only once the baseline's requests have paid the debt off.
        cmp.fold(0, c(10, 10), c(0, 0), true);
        assert_eq!(cmp.lower(0.01), 0.0, "no evidence while the debt is outstanding");
        cmp.fold(1, c(0, 0), c(5, 0), true);
        assert_eq!(cmp.lower(0.01), 0.0, "nor while it is paid in part");
        cmp.fold(2, c(0, 0), c(1_000, 0), true);
        assert!(cmp.lower(0.01) > 5.0, "paid off: ten failures of ten count {}", cmp.lower(0.01));
    }
}
