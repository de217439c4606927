//! One route's rollout: where it stands, and how time, the canary's
//! verdict and operators move it.
//!
//! ```text
//!            start / new version            hold passed and healthy
//!   idle ───────────────────────▶ progressing(i) ─────────────────▶ progressing(i+1) … ─▶ promoted
//!                                   │   ▲     │                                            (bake)
//!                   inconclusive    │   │     │ failing / operator abort / switchback         │
//!                   past max_hold,  ▼   │     ▼                                               │ failing
//!                   pause step,  paused ─┘  aborted ◀────────────────────────────────────────┘
//!                   operator     (resume)
//! ```
//!
//! A step advances only when its hold has passed **and** the verdict is
//! `healthy`: time alone never moves a canary forward. A `failing` verdict
//! aborts at any step, and during the bake after promotion. The hold served
//! at the current step is kept as a duration, so a restart that reads the
//! state back resumes the step with the hold already served counted.

use std::time::Duration;

use tokio::time::Instant;

use super::plan::{Plan, Start, Step};

/// The canary's verdict, as the rollout needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No worse than allowed, with the configured confidence.
    Healthy,
    /// Not enough evidence either way yet.
    Inconclusive,
    /// Worse than allowed; the one-line reason.
    Failing(String),
}

/// Why a rollout is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseReason {
    /// A pause step waits for an operator to resume.
    Step,
    /// An operator paused it.
    Operator,
    /// The verdict stayed inconclusive for `max_hold` after the hold.
    Inconclusive,
    /// An operator's manual override of the route's split.
    Override,
}

impl PauseReason {
    /// As shown in `/rollouts` and the history.
    pub fn as_str(&self) -> &'static str {
        match self {
            PauseReason::Step => "pause step: waiting for an operator",
            PauseReason::Operator => "paused by an operator",
            PauseReason::Inconclusive => "verdict inconclusive longer than max_hold",
            PauseReason::Override => "the route's split was overridden",
        }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Not started: the route runs on its configured split.
    Idle,
    /// At step `step`, judged.
    Progressing {
        /// The current step's index.
        step: usize,
    },
    /// Held at step `step` until resumed.
    Paused {
        /// The current step's index.
        step: usize,
        /// Why.
        reason: PauseReason,
    },
    /// Stopped: the canary is tripped and the route back where it came from.
    Aborted {
        /// The step it was aborted at.
        step: usize,
        /// Why, in one line.
        reason: String,
    },
    /// The canary serves the route's whole share.
    Promoted {
        /// Still judged until the bake ends.
        baking: bool,
    },
}

impl State {
    /// The state's name, as the metric label and in `/rollouts`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Progressing { .. } => "progressing",
            State::Paused { .. } => "paused",
            State::Aborted { .. } => "aborted",
            State::Promoted { .. } => "promoted",
        }
    }

    /// Every state name, for metrics that publish one series per state.
    pub const NAMES: [&'static str; 5] = ["idle", "progressing", "paused", "aborted", "promoted"];
}

/// What happened, for the control plane to apply and record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Started (or restarted) at the first step.
    Started,
    /// Moved to step `step`, with the canary at `share` percent.
    Advanced {
        /// The new step's index.
        step: usize,
        /// The canary's share there.
        share: u32,
    },
    /// Paused.
    Paused(PauseReason),
    /// Resumed after a pause.
    Resumed,
    /// Aborted: trip the canary; the reason in one line.
    Aborted(String),
    /// Promoted: the canary takes the route's whole share.
    Promoted,
    /// The bake after promotion ended with the canary healthy throughout.
    Baked,
    /// The canary failed during the bake: switch back; the reason in one line.
    BakeFailed(String),
}

/// An operator's command (`POST /routes/{route}/rollout/{command}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Start from the first step (from idle, aborted or promoted).
    Start,
    /// Hold at the current step.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Skip the remaining steps.
    Promote,
    /// Stop and switch back.
    Abort,
    /// Back to the first step, whatever the state.
    Restart,
}

impl Command {
    /// Parse a command's path segment.
    pub fn parse(name: &str) -> Option<Command> {
        Some(match name {
            "start" => Command::Start,
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "promote" => Command::Promote,
            "abort" => Command::Abort,
            "restart" => Command::Restart,
            _ => return None,
        })
    }
}

/// A command that does not apply to the rollout's state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {command} a rollout that is {state}")]
pub struct CommandError {
    /// The command, as named in the API.
    pub command: &'static str,
    /// The state it was refused in.
    pub state: &'static str,
}

/// What survives a restart (the state file): the state, and the hold
/// already served at the current step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The state.
    pub state: State,
    /// Time already served at the current step (or of the bake).
    pub served: Duration,
    /// How far into the current step its current stretch of judging began
    /// (zero unless an operator resumed the step): `max_hold` counts from
    /// there, on whichever replica, or after whichever restart, goes on.
    pub judged_from: Duration,
}

/// One route's rollout.
#[derive(Debug, Clone)]
pub struct Rollout {
    plan: Plan,
    state: State,
    /// When the current step (or the bake) began, less the time it had
    /// already served before a restart.
    since: Instant,
    /// When the current stretch of judging began: a resume starts a new one,
    /// so that `max_hold` counts from there.
    judged_since: Instant,
}

impl Rollout {
    /// A rollout of `plan`, idle, or already started when its plan starts on
    /// a new version (a rollout appearing in the config is one).
    pub fn new(plan: Plan, now: Instant) -> (Rollout, Vec<Event>) {
        let mut rollout = Rollout { plan, state: State::Idle, since: now, judged_since: now };
        let events = match rollout.plan.start {
            Start::OnNewVersion => rollout.begin(now),
            Start::Manual => Vec::new(),
        };
        (rollout, events)
    }

    /// A rollout resumed from the state file: the same step, with the hold
    /// already served counted.
    pub fn restore(plan: Plan, saved: Saved, now: Instant) -> Rollout {
        let since = now.checked_sub(saved.served).unwrap_or(now);
        let mut state = saved.state;
        // A step index beyond an edited plan is clamped to its last step.
        let last = plan.steps.len().saturating_sub(1);
        match &mut state {
            State::Progressing { step } | State::Paused { step, .. } | State::Aborted { step, .. } => {
                *step = (*step).min(last)
            }
            State::Idle | State::Promoted { .. } => {}
        }
        Rollout { plan, state, since, judged_since: since + saved.judged_from }
    }

    /// What to write to the state file.
    pub fn save(&self, now: Instant) -> Saved {
        Saved {
            state: self.state.clone(),
            served: now.saturating_duration_since(self.since),
            judged_from: self.judged_from(),
        }
    }

    /// How far into the current step its current stretch of judging
    /// began (see [`Saved::judged_from`]).
    pub fn judged_from(&self) -> Duration {
        self.judged_since.saturating_duration_since(self.since)
    }

    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The canary's share of the route's traffic, in percent, while the
    /// rollout is under way; `None` when the route runs on its own split
    /// (idle, or aborted: the canary is tripped and the split is the
    /// configured one).
    pub fn canary_share(&self) -> Option<u32> {
        match &self.state {
            State::Idle | State::Aborted { .. } => None,
            State::Progressing { step } | State::Paused { step, .. } => Some(self.plan.share_at(*step)),
            State::Promoted { .. } => Some(100),
        }
    }

    /// Time left before the current step may advance (zero once served);
    /// `None` when no step is being held.
    pub fn hold_left(&self, now: Instant) -> Option<Duration> {
        match &self.state {
            State::Progressing { step } => {
                Some(self.plan.hold_of(*step).saturating_sub(now.saturating_duration_since(self.since)))
            }
            State::Promoted { baking: true } => {
                Some(self.plan.bake.saturating_sub(now.saturating_duration_since(self.since)))
            }
            _ => None,
        }
    }

    /// How long the current state has lasted.
    pub fn in_state_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.since)
    }

    /// Move on with time and the canary's current verdict: advance, pause,
    /// abort or promote, as the plan says.
    pub fn tick(&mut self, now: Instant, verdict: &Verdict) -> Vec<Event> {
        match self.state.clone() {
            State::Progressing { step } => {
                if let Verdict::Failing(reason) = verdict {
                    return self.abort(step, reason.clone());
                }
                let held = now.saturating_duration_since(self.since);
                if held < self.plan.hold_of(step) {
                    return Vec::new();
                }
                match verdict {
                    Verdict::Healthy => self.advance(step + 1, now),
                    Verdict::Inconclusive => {
                        let open = now.saturating_duration_since(self.judged_since.max(self.since));
                        if open >= self.plan.hold_of(step) + self.plan.max_hold {
                            self.pause(step, PauseReason::Inconclusive)
                        } else {
                            Vec::new()
                        }
                    }
                    Verdict::Failing(_) => Vec::new(),
                }
            }
            State::Paused { step, .. } => match verdict {
                // A canary that fails while paused still takes traffic: abort.
                Verdict::Failing(reason) => self.abort(step, reason.clone()),
                _ => Vec::new(),
            },
            State::Promoted { baking: true } => match verdict {
                Verdict::Failing(reason) => {
                    let step = self.plan.steps.len().saturating_sub(1);
                    self.state = State::Aborted { step, reason: format!("failed during bake: {reason}") };
                    vec![Event::BakeFailed(reason.clone())]
                }
                _ if now.saturating_duration_since(self.since) >= self.plan.bake => {
                    self.state = State::Promoted { baking: false };
                    vec![Event::Baked]
                }
                _ => Vec::new(),
            },
            State::Idle | State::Aborted { .. } | State::Promoted { baking: false } => Vec::new(),
        }
    }

    /// Apply an operator's command.
    pub fn command(&mut self, command: Command, now: Instant) -> Result<Vec<Event>, CommandError> {
        let refuse = |name| Err(CommandError { command: name, state: self.state.name() });
        match (command, self.state.clone()) {
            (Command::Start, State::Idle | State::Aborted { .. } | State::Promoted { .. }) | (Command::Restart, _) => {
                Ok(self.begin(now))
            }
            (Command::Start, _) => refuse("start"),
            (Command::Pause, State::Progressing { step }) => Ok(self.pause(step, PauseReason::Operator)),
            (Command::Pause, _) => refuse("pause"),
            (Command::Resume, State::Paused { step, reason }) => {
                self.judged_since = now;
                if reason == PauseReason::Step {
                    // The pause step is done: on to the next.
                    let mut events = vec![Event::Resumed];
                    events.extend(self.advance(step + 1, now));
                    Ok(events)
                } else {
                    self.state = State::Progressing { step };
                    Ok(vec![Event::Resumed])
                }
            }
            (Command::Resume, _) => refuse("resume"),
            (Command::Promote, State::Progressing { .. } | State::Paused { .. }) => Ok(self.promote(now)),
            (Command::Promote, _) => refuse("promote"),
            (Command::Abort, State::Progressing { step } | State::Paused { step, .. }) => {
                Ok(self.abort(step, "aborted by an operator".into()))
            }
            (Command::Abort, State::Promoted { baking: true }) => {
                Ok(self.abort(self.plan.steps.len().saturating_sub(1), "aborted by an operator during bake".into()))
            }
            (Command::Abort, _) => refuse("abort"),
        }
    }

    /// An operator overrode the route's split by hand: a rollout under way
    /// pauses, so that the two never fight over the weights.
    pub fn overridden(&mut self) -> Vec<Event> {
        match self.state.clone() {
            State::Progressing { step } => self.pause(step, PauseReason::Override),
            _ => Vec::new(),
        }
    }

    /// An operator switched the route back: a rollout under way aborts.
    pub fn switched_back(&mut self) -> Vec<Event> {
        match self.state.clone() {
            State::Progressing { step } | State::Paused { step, .. } => {
                self.abort(step, "the route was switched back".into())
            }
            State::Promoted { baking: true } => {
                self.abort(self.plan.steps.len().saturating_sub(1), "the route was switched back".into())
            }
            _ => Vec::new(),
        }
    }

    /// The canary pool got new backends: a new version starts over from the
    /// first step when the plan starts on new versions.
    pub fn new_version(&mut self, now: Instant) -> Vec<Event> {
        match self.plan.start {
            Start::OnNewVersion => self.begin(now),
            Start::Manual => {
                self.state = State::Idle;
                Vec::new()
            }
        }
    }

    /// A reload changed the plan: keep the current step when it still
    /// exists (by its share and kind), else start over from the first step.
    pub fn replan(&mut self, plan: Plan, now: Instant) -> Vec<Event> {
        let previous = std::mem::replace(&mut self.plan, plan);
        match self.state.clone() {
            State::Progressing { step } | State::Paused { step, .. } => match self.plan.position_of(step, &previous) {
                Some(kept) => {
                    match &mut self.state {
                        State::Progressing { step } | State::Paused { step, .. } => *step = kept,
                        _ => {}
                    }
                    Vec::new()
                }
                None => self.begin(now),
            },
            State::Aborted { step, reason } => {
                let step = step.min(self.plan.steps.len().saturating_sub(1));
                self.state = State::Aborted { step, reason };
                Vec::new()
            }
            State::Idle | State::Promoted { .. } => Vec::new(),
        }
    }

    fn begin(&mut self, now: Instant) -> Vec<Event> {
        self.judged_since = now;
        let mut events = vec![Event::Started];
        events.extend(self.enter(0, now));
        events
    }

    fn advance(&mut self, step: usize, now: Instant) -> Vec<Event> {
        if step >= self.plan.steps.len() {
            return self.promote(now);
        }
        self.enter(step, now)
    }

    fn enter(&mut self, step: usize, now: Instant) -> Vec<Event> {
        self.since = now;
        self.judged_since = now;
        match self.plan.steps.get(step) {
            Some(Step::Pause) => {
                self.state = State::Paused { step, reason: PauseReason::Step };
                vec![Event::Paused(PauseReason::Step)]
            }
            Some(Step::Weight { percent, .. }) => {
                self.state = State::Progressing { step };
                vec![Event::Advanced { step, share: *percent }]
            }
            None => self.promote(now),
        }
    }

    fn pause(&mut self, step: usize, reason: PauseReason) -> Vec<Event> {
        self.state = State::Paused { step, reason: reason.clone() };
        vec![Event::Paused(reason)]
    }

    fn abort(&mut self, step: usize, reason: String) -> Vec<Event> {
        self.state = State::Aborted { step, reason: reason.clone() };
        vec![Event::Aborted(reason)]
    }

    fn promote(&mut self, now: Instant) -> Vec<Event> {
        self.since = now;
        self.state = State::Promoted { baking: !self.plan.bake.is_zero() };
        vec![Event::Promoted]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(60);
    const MAX_HOLD: Duration = Duration::from_secs(300);

    fn weight(percent: u32) -> Step {
        Step::Weight { percent, hold: None }
    }

    fn plan(steps: Vec<Step>, start: Start, bake: Duration) -> Plan {
        Plan { pool: "canary".into(), steps, hold: HOLD, max_hold: MAX_HOLD, start, bake }
    }

    fn standard() -> Plan {
        plan(vec![weight(5), weight(25), weight(50), weight(100)], Start::OnNewVersion, Duration::ZERO)
    }

    fn failing() -> Verdict {
        Verdict::Failing("canary failing: 5.0% of 400 vs stable 0.1% of 3,600".into())
    }

    /// Advance paused time by `by` and tick with `verdict`.
    async fn after(rollout: &mut Rollout, by: Duration, verdict: &Verdict) -> Vec<Event> {
        tokio::time::advance(by).await;
        rollout.tick(Instant::now(), verdict)
    }

    #[tokio::test(start_paused = true)]
    async fn a_healthy_canary_climbs_every_step_and_is_promoted() {
        let (mut rollout, events) = Rollout::new(standard(), Instant::now());
        assert_eq!(events, vec![Event::Started, Event::Advanced { step: 0, share: 5 }]);
        assert_eq!(rollout.canary_share(), Some(5));
        for (next, share) in [(1, 25), (2, 50), (3, 100)] {
            // Healthy before the hold has passed: no move.
            assert!(after(&mut rollout, HOLD / 2, &Verdict::Healthy).await.is_empty());
            assert_eq!(
                after(&mut rollout, HOLD / 2, &Verdict::Healthy).await,
                vec![Event::Advanced { step: next, share }]
            );
        }
        assert_eq!(after(&mut rollout, HOLD, &Verdict::Healthy).await, vec![Event::Promoted]);
        assert_eq!(rollout.state(), &State::Promoted { baking: false });
        assert_eq!(rollout.canary_share(), Some(100));
    }

    #[tokio::test(start_paused = true)]
    async fn time_alone_never_advances() {
        let (mut rollout, _) = Rollout::new(standard(), Instant::now());
        assert!(after(&mut rollout, HOLD * 2, &Verdict::Inconclusive).await.is_empty());
        assert_eq!(rollout.state(), &State::Progressing { step: 0 });
        // And past the hold plus max_hold, it pauses instead.
        let events = after(&mut rollout, MAX_HOLD, &Verdict::Inconclusive).await;
        assert_eq!(events, vec![Event::Paused(PauseReason::Inconclusive)]);
        assert_eq!(rollout.canary_share(), Some(5), "a pause keeps the share");
        // Resuming gives it another max_hold, from the resume.
        assert_eq!(rollout.command(Command::Resume, Instant::now()), Ok(vec![Event::Resumed]));
        assert!(after(&mut rollout, MAX_HOLD / 2, &Verdict::Inconclusive).await.is_empty());
        assert_eq!(
            after(&mut rollout, Duration::ZERO, &Verdict::Healthy).await,
            vec![Event::Advanced { step: 1, share: 25 }]
        );
    }

    /// The max_hold a resume gives counts from the resume on whichever
    /// replica, or after whichever restart, restores the rollout: a
    /// restored rollout that lost it would pause again at its next tick.
    #[tokio::test(start_paused = true)]
    async fn a_restored_rollout_keeps_the_max_hold_a_resume_gave() {
        let (mut rollout, _) = Rollout::new(standard(), Instant::now());
        let events = after(&mut rollout, HOLD + MAX_HOLD, &Verdict::Inconclusive).await;
        assert_eq!(events, vec![Event::Paused(PauseReason::Inconclusive)]);
        assert_eq!(rollout.command(Command::Resume, Instant::now()), Ok(vec![Event::Resumed]));
        tokio::time::advance(MAX_HOLD / 4).await;
        let saved = rollout.save(Instant::now());
        assert_eq!(saved.judged_from, HOLD + MAX_HOLD, "the resume's offset into the step");
        let mut restored = Rollout::restore(standard(), saved, Instant::now());
        assert!(after(&mut restored, MAX_HOLD / 2, &Verdict::Inconclusive).await.is_empty(), "still within it");
        let events = after(&mut restored, MAX_HOLD / 2, &Verdict::Inconclusive).await;
        assert_eq!(events, vec![Event::Paused(PauseReason::Inconclusive)], "and paused once it has passed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_verdict_aborts_at_any_step_even_within_the_hold() {
        let (mut rollout, _) = Rollout::new(standard(), Instant::now());
        after(&mut rollout, HOLD, &Verdict::Healthy).await;
        assert_eq!(rollout.state(), &State::Progressing { step: 1 });
        let events = after(&mut rollout, Duration::from_secs(1), &failing()).await;
        assert_eq!(events, vec![Event::Aborted(failing_reason())]);
        assert_eq!(rollout.state(), &State::Aborted { step: 1, reason: failing_reason() });
        assert_eq!(rollout.canary_share(), None, "the route is back on its split");
        // Nothing moves an aborted rollout but an operator.
        assert!(after(&mut rollout, HOLD * 10, &Verdict::Healthy).await.is_empty());
    }

    fn failing_reason() -> String {
        match failing() {
            Verdict::Failing(reason) => reason,
            _ => unreachable!(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_step_waits_for_an_operator() {
        let plan = plan(vec![weight(10), Step::Pause, weight(50)], Start::OnNewVersion, Duration::ZERO);
        let (mut rollout, _) = Rollout::new(plan, Instant::now());
        assert_eq!(after(&mut rollout, HOLD, &Verdict::Healthy).await, vec![Event::Paused(PauseReason::Step)]);
        assert!(after(&mut rollout, HOLD * 100, &Verdict::Healthy).await.is_empty(), "waits however long");
        assert_eq!(rollout.canary_share(), Some(10));
        let events = rollout.command(Command::Resume, Instant::now()).expect("resume");
        assert_eq!(events, vec![Event::Resumed, Event::Advanced { step: 2, share: 50 }]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bake_keeps_judging_after_promotion() {
        let bake = Duration::from_secs(120);
        let plan = plan(vec![weight(100)], Start::OnNewVersion, bake);
        let (mut rollout, _) = Rollout::new(plan.clone(), Instant::now());
        assert_eq!(after(&mut rollout, HOLD, &Verdict::Healthy).await, vec![Event::Promoted]);
        assert_eq!(rollout.state(), &State::Promoted { baking: true });
        assert_eq!(rollout.hold_left(Instant::now()), Some(bake));
        let events = after(&mut rollout, bake / 2, &failing()).await;
        assert_eq!(events, vec![Event::BakeFailed(failing_reason())]);
        assert_eq!(rollout.canary_share(), None);

        let (mut rollout, _) = Rollout::new(plan, Instant::now());
        after(&mut rollout, HOLD, &Verdict::Healthy).await;
        assert!(after(&mut rollout, bake / 2, &Verdict::Inconclusive).await.is_empty());
        assert_eq!(after(&mut rollout, bake / 2, &Verdict::Healthy).await, vec![Event::Baked]);
        assert_eq!(rollout.state(), &State::Promoted { baking: false });
    }

    #[tokio::test(start_paused = true)]
    async fn operators_pause_resume_promote_abort_and_restart() {
        let now = Instant::now;
        let (mut rollout, _) = Rollout::new(standard(), now());
        assert_eq!(rollout.command(Command::Pause, now()), Ok(vec![Event::Paused(PauseReason::Operator)]));
        assert_eq!(rollout.command(Command::Pause, now()), Err(CommandError { command: "pause", state: "paused" }));
        assert!(after(&mut rollout, HOLD * 3, &Verdict::Healthy).await.is_empty(), "paused holds");
        assert_eq!(rollout.command(Command::Resume, now()), Ok(vec![Event::Resumed]));
        assert_eq!(rollout.command(Command::Promote, now()), Ok(vec![Event::Promoted]));
        assert_eq!(rollout.canary_share(), Some(100));
        assert!(rollout.command(Command::Abort, now()).is_err(), "a finished promotion is not aborted");
        assert_eq!(
            rollout.command(Command::Restart, now()),
            Ok(vec![Event::Started, Event::Advanced { step: 0, share: 5 }])
        );
        assert_eq!(rollout.command(Command::Abort, now()), Ok(vec![Event::Aborted("aborted by an operator".into())]));
        assert_eq!(rollout.command(Command::Resume, now()), Err(CommandError { command: "resume", state: "aborted" }));
        assert_eq!(
            rollout.command(Command::Start, now()),
            Ok(vec![Event::Started, Event::Advanced { step: 0, share: 5 }])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_manual_plan_waits_for_start() {
        let plan = plan(vec![weight(50)], Start::Manual, Duration::ZERO);
        let (mut rollout, events) = Rollout::new(plan, Instant::now());
        assert!(events.is_empty());
        assert_eq!(rollout.state(), &State::Idle);
        assert!(after(&mut rollout, HOLD, &Verdict::Healthy).await.is_empty());
        assert!(rollout.new_version(Instant::now()).is_empty(), "a manual plan does not start on a new version");
        assert!(rollout.command(Command::Start, Instant::now()).is_ok());
        assert_eq!(rollout.canary_share(), Some(50));
    }

    #[tokio::test(start_paused = true)]
    async fn an_override_pauses_and_a_switchback_aborts() {
        let (mut rollout, _) = Rollout::new(standard(), Instant::now());
        assert_eq!(rollout.overridden(), vec![Event::Paused(PauseReason::Override)]);
        assert_eq!(rollout.switched_back(), vec![Event::Aborted("the route was switched back".into())]);
        assert!(rollout.overridden().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_resumes_the_step_with_the_hold_served() {
        let (mut rollout, _) = Rollout::new(standard(), Instant::now());
        after(&mut rollout, HOLD, &Verdict::Healthy).await;
        tokio::time::advance(HOLD / 3).await;
        let saved = rollout.save(Instant::now());
        assert_eq!(
            saved,
            Saved { state: State::Progressing { step: 1 }, served: HOLD / 3, judged_from: Duration::ZERO }
        );

        // The process restarts later; the step resumes with its third served.
        tokio::time::advance(Duration::from_secs(3600)).await;
        let mut back = Rollout::restore(standard(), saved, Instant::now());
        assert_eq!(back.canary_share(), Some(25));
        assert_eq!(back.hold_left(Instant::now()), Some(HOLD - HOLD / 3));
        assert!(after(&mut back, HOLD / 2, &Verdict::Healthy).await.is_empty());
        assert_eq!(after(&mut back, HOLD / 6, &Verdict::Healthy).await, vec![Event::Advanced { step: 2, share: 50 }]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_version_starts_over_and_an_edit_keeps_the_step() {
        let (mut rollout, _) = Rollout::new(standard(), Instant::now());
        after(&mut rollout, HOLD, &Verdict::Healthy).await;
        after(&mut rollout, HOLD, &Verdict::Healthy).await;
        assert_eq!(rollout.state(), &State::Progressing { step: 2 });

        let edited =
            plan(vec![weight(5), weight(10), weight(25), weight(50), weight(100)], Start::OnNewVersion, Duration::ZERO);
        assert!(rollout.replan(edited, Instant::now()).is_empty());
        assert_eq!(rollout.state(), &State::Progressing { step: 3 }, "50% kept, at its new place");
        assert_eq!(rollout.canary_share(), Some(50));

        let without = plan(vec![weight(20), weight(100)], Start::OnNewVersion, Duration::ZERO);
        assert_eq!(
            rollout.replan(without, Instant::now()),
            vec![Event::Started, Event::Advanced { step: 0, share: 20 }]
        );

        after(&mut rollout, HOLD, &Verdict::Healthy).await;
        assert_eq!(rollout.new_version(Instant::now()), vec![Event::Started, Event::Advanced { step: 0, share: 20 }]);
    }

    #[test]
    fn commands_parse_by_their_api_names() {
        for (name, command) in [
            ("start", Command::Start),
            ("pause", Command::Pause),
            ("resume", Command::Resume),
            ("promote", Command::Promote),
            ("abort", Command::Abort),
            ("restart", Command::Restart),
        ] {
            assert_eq!(Command::parse(name), Some(command));
        }
        assert_eq!(Command::parse("PROMOTE"), None);
    }
}
