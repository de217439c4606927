//! What the single writer's callers get back: why a reload ran and how it
//! ended, why an admin call was refused, and the consistent view of the
//! state that `/status` reads.
//!
//! These are the words the admin API and the runtime speak with
//! [`Control`](super::Control); they carry no behaviour of their own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::state::{Override, Trip};
use crate::config::Config;

/// What started a reload, for logs and history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// The file watcher saw a change.
    Watch,
    /// `SIGHUP`.
    Signal,
    /// `POST /reload`.
    Admin,
}

impl ReloadCause {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadCause::Watch => "file change",
            ReloadCause::Signal => "SIGHUP",
            ReloadCause::Admin => "admin",
        }
    }
}

/// The result of a successful reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A new snapshot was published with this revision.
    Applied(u64),
    /// The file's content is what already runs; the revision stays.
    Unchanged(u64),
}

impl ReloadOutcome {
    /// The revision in force after the reload.
    pub fn revision(self) -> u64 {
        match self {
            ReloadOutcome::Applied(r) | ReloadOutcome::Unchanged(r) => r,
        }
    }
}

/// The last reload attempt, as `/status` reports it.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// Whether it applied (or was unchanged).
    pub ok: bool,
    /// When it ran.
    pub time: SystemTime,
    /// The `file:line:col: message` of a failed attempt.
    pub error: Option<String>,
}

/// Why an admin request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Unknown route or pool (404).
    #[error("{0}")]
    NotFound(String),
    /// The request makes no sense (400).
    #[error("{0}")]
    Invalid(String),
    /// The request does not apply to the current state (409).
    #[error("{0}")]
    Conflict(String),
}

/// What `/status` needs, copied out under the lock.
#[derive(Debug)]
pub struct StateView {
    /// The config in force.
    pub config: Arc<Config>,
    /// The current revision.
    pub revision: u64,
    /// Admin overrides by route.
    pub overrides: BTreeMap<String, Override>,
    /// Trips by pool.
    pub trips: BTreeMap<String, Trip>,
    /// Guard window figures by pool.
    pub guards: BTreeMap<String, crate::guard::WindowStats>,
    /// By guarded pool, how many outcomes of backends warming up under slow
    /// start its guard left out.
    pub warming_excluded: BTreeMap<String, u64>,
    /// The latest verdict of every guarded pool.
    pub verdicts: Verdicts,
}

/// The latest verdict of every guarded pool, by pool name, as the 250 ms
/// task last computed them.
pub type Verdicts = Arc<BTreeMap<String, crate::judge::Verdict>>;
