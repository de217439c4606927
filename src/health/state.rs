//! Active checks' verdict: a small pure state machine that turns a stream
//! of probe results into transitions. `unhealthy_after` consecutive
//! failures take a backend out, `healthy_after` consecutive successes bring
//! it back; results that agree with the verdict never transition.

use crate::config::HealthConfig;

/// A change of a backend's health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Enough consecutive failures: take it out.
    BecameUnhealthy,
    /// Enough consecutive successes: put it back.
    BecameHealthy,
}

/// Consecutive-result counting for one backend, free of I/O and clocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    /// The current verdict.
    healthy: bool,
    /// Consecutive results that disagree with the verdict.
    streak: u32,
    /// Failures in a row that flip a healthy backend.
    unhealthy_after: u32,
    /// Successes in a row that flip an unhealthy backend.
    healthy_after: u32,
}

impl HealthState {
    /// Counting from verdict `healthy`, with the given thresholds (a
    /// threshold of 0 is treated as 1: one result always suffices).
    pub fn new(healthy: bool, unhealthy_after: u32, healthy_after: u32) -> HealthState {
        HealthState { healthy, streak: 0, unhealthy_after: unhealthy_after.max(1), healthy_after: healthy_after.max(1) }
    }

    /// Counting with `config`'s thresholds from verdict `healthy`.
    pub fn from_config(healthy: bool, config: &HealthConfig) -> HealthState {
        HealthState::new(healthy, config.unhealthy_after, config.healthy_after)
    }

    /// The current verdict.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Count one probe result; returns the transition it completes, if any.
    pub fn observe(&mut self, ok: bool) -> Option<Transition> {
        if ok == self.healthy {
            // A result that agrees with the verdict breaks any streak
            // against it: only *consecutive* disagreement flips it.
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let needed = if self.healthy { self.unhealthy_after } else { self.healthy_after };
        if self.streak < needed {
            return None;
        }
        self.healthy = ok;
        self.streak = 0;
        Some(if ok { Transition::BecameHealthy } else { Transition::BecameUnhealthy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- the state machine ---

    #[test]
    fn failures_must_be_consecutive_to_mark_unhealthy() {
        let mut s = HealthState::new(true, 3, 2);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(true), None, "a success breaks the streak");
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), None);
        assert_eq!(s.observe(false), Some(Transition::BecameUnhealthy));
        assert!(!s.is_healthy());
        assert_eq!(s.observe(false), None, "already unhealthy: no new transition");
    }

    #[test]
    fn successes_must_be_consecutive_to_recover() {
        let mut s = HealthState::new(false, 3, 2);
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(false), None, "a failure breaks the streak");
        assert_eq!(s.observe(true), None);
        assert_eq!(s.observe(true), Some(Transition::BecameHealthy));
        assert!(s.is_healthy());
        assert_eq!(s.observe(true), None);
    }

    #[test]
    fn thresholds_of_one_flip_at_once_and_zero_counts_as_one() {
        let mut s = HealthState::new(true, 1, 1);
        assert_eq!(s.observe(false), Some(Transition::BecameUnhealthy));
        assert_eq!(s.observe(true), Some(Transition::BecameHealthy));
        let mut z = HealthState::new(true, 0, 0);
        assert_eq!(z.observe(false), Some(Transition::BecameUnhealthy));
        assert_eq!(z.observe(true), Some(Transition::BecameHealthy));
    }

    #[test]
    fn results_that_agree_never_transition() {
        let mut s = HealthState::new(true, 2, 2);
        for _ in 0..100 {
            assert_eq!(s.observe(true), None);
        }
    }
}
