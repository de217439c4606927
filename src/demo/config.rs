//! The demo's config file, written into a fresh temp directory and
//! rewritten for each hot reload of the story (a rollout of green, then one
//! of the canary); the directory goes when the demo ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::DemoError;
use super::params::{MAX_ERROR_RATE, ROUTE};

/// The demo upstreams' addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backends {
    pub(super) blue: SocketAddr,
    pub(super) green: SocketAddr,
    pub(super) canary: SocketAddr,
}

/// What the config file says at each point of the story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Everything on blue, no rollout.
    BlueOnly,
    /// Blue in production, green rolled out over it step by step.
    GreenRollout,
    /// Green in production, the canary rolled out over it.
    CanaryRollout,
}

impl Stage {
    /// The route's configured split: blue, green, canary.
    pub(super) fn split(self) -> [u32; 3] {
        match self {
            Stage::BlueOnly | Stage::GreenRollout => [100, 0, 0],
            Stage::CanaryRollout => [0, 100, 0],
        }
    }

    /// The rolled-out pool's share at each step, percent: the canary starts
    /// higher, so that its failures show within the demo's minute.
    pub(super) fn steps(self) -> &'static [u32] {
        match self {
            Stage::BlueOnly => &[],
            Stage::GreenRollout => &[10, 50, 100],
            Stage::CanaryRollout => &[20, 50, 100],
        }
    }

    /// The pool this stage rolls out, if any.
    pub(super) fn rolled_out(self) -> Option<&'static str> {
        match self {
            Stage::BlueOnly => None,
            Stage::GreenRollout => Some("green"),
            Stage::CanaryRollout => Some("canary"),
        }
    }
}

/// The demo's config file at `stage`, each rollout step held for `hold`:
/// the same format as `config/cutover.toml`.
pub(super) fn config_text(backends: &Backends, stage: Stage, hold: Duration) -> String {
    let [b, g, c] = stage.split();
    let steps = stage.steps().iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let rollout = match stage.rolled_out() {
        Some(pool) => format!(
            "[routes.rollout]              # steps held while the pool is judged; a failing verdict aborts\n\
             pool = \"{pool}\"\nsteps = [{steps}]\nhold = \"{}ms\"\n",
            hold.as_millis()
        ),
        None => String::new(),
    };
    format!(
        r#"# Written by `cutover demo`: a real config, in the format of config/cutover.toml.
# Port 0 lets the OS pick free ports; the demo prints the ones it got.

[server]
listen = ["127.0.0.1:0"]
request_timeout = "5s"
connect_timeout = "1s"
drain_timeout = "5s"

[admin]
listen = "127.0.0.1:0"

[pools.blue]                  # the version in production
backends = ["{blue}"]

[pools.green]                 # the next version, deployed beside it
backends = ["{green}"]
[pools.green.guard]           # judged by its own limits
max_error_rate = {MAX_ERROR_RATE}
window = "5s"
min_requests = 20

[pools.canary]                # a build under test
backends = ["{canary}"]
[pools.canary.guard]          # judged against green over the same time
baseline = "green"
min_requests = 20

[[routes]]
name = "{ROUTE}"
path_prefix = "/"
split = {{ blue = {b}, green = {g}, canary = {c} }}
{rollout}"#,
        blue = backends.blue,
        green = backends.green,
        canary = backends.canary,
    )
}

/// Replace `path` by writing a sibling and renaming it over, so the watcher
/// never reads a half-written file.
pub(super) fn write_atomically(path: &Path, text: &str) -> Result<(), DemoError> {
    let tmp = path.with_extension("toml.tmp");
    let wrap = |source| DemoError::WriteConfig { path: path.to_path_buf(), source };
    std::fs::write(&tmp, text).map_err(wrap)?;
    std::fs::rename(&tmp, path).map_err(wrap)
}

/// The demo's own temp directory, removed on drop if not before.
#[derive(Debug)]
pub(super) struct DemoDir {
    pub(super) path: PathBuf,
    removed: bool,
}

impl DemoDir {
    pub(super) fn create() -> Result<DemoDir, DemoError> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("cutover-demo-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir(&path).map_err(|source| DemoError::TempDir { path: path.clone(), source })?;
        Ok(DemoDir { path, removed: false })
    }

    /// Remove the directory; says what happened, for the summary.
    pub(super) fn remove(mut self) -> String {
        self.removed = true;
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => format!("{} removed", self.path.display()),
            Err(e) => format!("could not remove {}: {e}", self.path.display()),
        }
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        if !self.removed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::params::{MAX_ERROR_RATE, ROUTE};
    use super::*;
    use std::path::Path;

    fn backends() -> Backends {
        Backends {
            blue: "127.0.0.1:9001".parse().unwrap(),
            green: "127.0.0.1:9002".parse().unwrap(),
            canary: "127.0.0.1:9003".parse().unwrap(),
        }
    }

    #[test]
    fn demo_configs_validate_like_any_config() {
        for stage in [Stage::BlueOnly, Stage::GreenRollout, Stage::CanaryRollout] {
            let text = config_text(&backends(), stage, Duration::from_millis(800));
            let config =
                cutover::config::parse(Path::new("demo.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let route = &config.routes[0];
            assert_eq!(route.name, ROUTE);
            let [b, g, c] = stage.split();
            let weights: Vec<(String, u32)> = vec![("blue".into(), b), ("green".into(), g), ("canary".into(), c)];
            assert_eq!(route.split, weights);
            assert_eq!(route.rollout.as_ref().map(|r| r.pool.as_str()), stage.rolled_out(), "{text}");
            if let Some(plan) = &route.rollout {
                assert_eq!(plan.steps.len(), stage.steps().len());
                assert_eq!(plan.hold, Duration::from_millis(800));
            }
            let green = config.pool("green").and_then(|p| p.guard.as_ref()).expect("green guard");
            assert_eq!(green.max_error_rate, Some(MAX_ERROR_RATE));
            let canary = config.pool("canary").and_then(|p| p.guard.as_ref()).expect("canary guard");
            assert_eq!(canary.baseline.as_deref(), Some("green"));
        }
    }
}
