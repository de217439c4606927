//! The revision history and the state file.
//!
//! Every change of effective weights is a numbered [`Revision`], kept in
//! memory (the newest [`HISTORY_LIMIT`]) for `/history` and switchbacks. With
//! `admin.state_file` set, overrides, trips, rollouts and the history are written
//! after each change, atomically (a temporary file renamed over the old
//! one), and read back at start, keeping only what still applies to the
//! config: a restart does not undo a rollback.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rollouts::SavedRollout;
use super::state::{backend_names, same_backends, Override, Revision, Trip};
use crate::config::Config;

/// History entries kept in memory and in the state file.
const HISTORY_LIMIT: usize = 200;

/// Append `revision`, forgetting the oldest past [`HISTORY_LIMIT`].
pub(super) fn push(history: &mut VecDeque<Revision>, revision: Revision) {
    history.push_back(revision);
    while history.len() > HISTORY_LIMIT {
        history.pop_front();
    }
}

/// What `state_file` holds.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Persisted {
    pub(super) version: u32,
    pub(super) revision: u64,
    pub(super) overrides: BTreeMap<String, Override>,
    pub(super) trips: BTreeMap<String, Trip>,
    pub(super) history: Vec<Revision>,
    /// Rollouts by route; absent from state files written before rollouts.
    #[serde(default)]
    pub(super) rollouts: BTreeMap<String, SavedRollout>,
}

/// Read `state_file`, keeping only what still applies to `config`. A
/// missing file is normal; a corrupt one is reported and ignored.
pub(super) fn restore(path: &Path, config: &Config) -> Option<Persisted> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the state file; starting without it");
            return None;
        }
    };
    let mut persisted: Persisted = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "the state file is corrupt; starting without it");
            return None;
        }
    };
    persisted.trips.retain(|pool, trip| {
        let keep = config.pool(pool).is_some_and(|pc| same_backends(&backend_names(&pc.backends), &trip.backends));
        if !keep {
            tracing::info!(pool, "state file: trip dropped (pool gone or has new backends)");
        }
        keep
    });
    persisted.overrides.retain(|route, ov| {
        let keep = config.routes.iter().any(|r| r.name == *route && r.split == ov.file_split);
        if !keep {
            tracing::info!(route, "state file: override dropped (the file's split changed)");
        }
        keep
    });
    persisted.rollouts.retain(|route, _| config.routes.iter().any(|r| r.name == *route && r.rollout.is_some()));
    tracing::info!(
        path = %path.display(),
        trips = persisted.trips.len(),
        overrides = persisted.overrides.len(),
        "state restored"
    );
    Some(persisted)
}

fn write_atomically(path: &Path, persisted: &Persisted) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(persisted).map_err(std::io::Error::other)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let mut tmp_name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // Make the rename itself durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Write overrides, trips, history and rollouts to `path`, atomically. A failure is
/// logged, not returned: the change it records is already in force, and
/// only its survival across a restart is lost.
pub(super) fn save(
    path: &Path,
    revision: u64,
    overrides: &BTreeMap<String, Override>,
    trips: &BTreeMap<String, Trip>,
    history: &VecDeque<Revision>,
    rollouts: BTreeMap<String, SavedRollout>,
) {
    let persisted = Persisted {
        version: 1,
        revision,
        overrides: overrides.clone(),
        trips: trips.clone(),
        history: history.iter().cloned().collect(),
        rollouts,
    };
    if let Err(e) = write_atomically(path, &persisted) {
        tracing::error!(path = %path.display(), error = %e, "cannot write the state file; overrides and trips will not survive a restart");
    }
}
