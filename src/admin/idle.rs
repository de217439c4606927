//! How long an admin connection may keep its slot with no request in
//! flight.
//!
//! The admin listener holds at most `MAX_CONNECTIONS`, and its probes
//! (`/healthz`, `/ready`) come through the same slots, so a slot must not
//! be held by a connection that asks nothing. hyper's head deadline does
//! not cover every way of asking nothing: it starts once hyper knows the
//! protocol, which a client that sends the first bytes of the HTTP/2
//! preface and stops never lets it know, and HTTP/2 has no deadline
//! between requests at all. So each connection's first request must arrive
//! within the head deadline of the accept, and a connection whose last
//! request ended [`IDLE_TIMEOUT`] ago with none since is closed, whatever
//! its protocol. A request in flight, however long, holds the slot.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// How long a connection may go without a request in flight once it has
/// made one: past any browser's or `cutover status --watch`'s pause
/// between requests worth a held connection (their clients open a new one
/// when they need it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// One connection's requests in flight, and since when it has had none.
#[derive(Debug)]
pub(super) struct Idle {
    state: Mutex<State>,
    /// The first request's deadline after the accept.
    first_within: Duration,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// The accept, or when the last request ended.
    since: Instant,
    /// Whether a request has begun.
    asked: bool,
}

impl Idle {
    /// A connection accepted at `accepted`, whose first request must begin
    /// within `first_within`.
    pub(super) fn new(accepted: Instant, first_within: Duration) -> Arc<Idle> {
        Arc::new(Idle { state: Mutex::new(State { in_flight: 0, since: accepted, asked: false }), first_within })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A request begins; it is in flight until the returned guard drops
    /// (answered, or given up by the client).
    pub(super) fn begin(self: &Arc<Idle>) -> InFlight {
        let mut state = self.lock();
        state.in_flight += 1;
        state.asked = true;
        InFlight(self.clone())
    }

    /// When the connection is due to close for asking nothing, or `None`
    /// while a request is in flight.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let state = self.lock();
        match (state.in_flight, state.asked) {
            (0, false) => Some(state.since + self.first_within),
            (0, true) => Some(state.since + IDLE_TIMEOUT),
            _ => None,
        }
    }
}

/// A request in flight on an admin connection.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Idle>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.since = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_due_when_it_asks_nothing_and_never_while_asking() {
        let first = Duration::from_secs(10);
        let accepted = Instant::now();
        let idle = Idle::new(accepted, first);
        assert_eq!(idle.deadline(), Some(accepted + first), "the first request is owed from the accept");
        tokio::time::advance(Duration::from_secs(3)).await;
        let one = idle.begin();
        let two = idle.begin();
        assert_eq!(idle.deadline(), None, "in flight");
        drop(one);
        assert_eq!(idle.deadline(), None, "still one in flight");
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(two);
        assert_eq!(idle.deadline(), Some(Instant::now() + IDLE_TIMEOUT), "idle from the last answer");
    }
}
