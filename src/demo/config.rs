//! The demo's config file, written into a fresh temp directory and
//! rewritten for a hot reload; the directory goes when the demo ends.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::error::DemoError;
use super::params::{MAX_ERROR_RATE, ROUTE};

/// The demo upstreams' addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backends {
    pub(super) blue: SocketAddr,
    pub(super) green: SocketAddr,
    pub(super) canary: SocketAddr,
}

/// A route split, in the demo's pool order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Split {
    pub(super) blue: u32,
    pub(super) green: u32,
    pub(super) canary: u32,
}

impl Split {
    pub(super) const BLUE_ONLY: Split = Split { blue: 100, green: 0, canary: 0 };
    pub(super) const CANARY_20: Split = Split { blue: 80, green: 0, canary: 20 };
}

/// The demo's config file: the same format as `config/cutover.toml`.
pub(super) fn config_text(backends: &Backends, split: &Split) -> String {
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

[pools.canary]                # a build under test
backends = ["{canary}"]
[pools.canary.guard]          # automatic rollback
max_error_rate = {MAX_ERROR_RATE}
window = "10s"
min_requests = 50

[[routes]]
name = "{ROUTE}"
path_prefix = "/"
split = {{ blue = {b}, green = {g}, canary = {c} }}
"#,
        blue = backends.blue,
        green = backends.green,
        canary = backends.canary,
        b = split.blue,
        g = split.green,
        c = split.canary,
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
        for split in [Split::BLUE_ONLY, Split::CANARY_20] {
            let text = config_text(&backends(), &split);
            let config =
                cutover::config::parse(Path::new("demo.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let route = &config.routes[0];
            assert_eq!(route.name, ROUTE);
            let weights: Vec<(String, u32)> =
                vec![("blue".into(), split.blue), ("green".into(), split.green), ("canary".into(), split.canary)];
            assert_eq!(route.split, weights);
            let guard = config.pool("canary").and_then(|p| p.guard.as_ref()).expect("canary guard");
            assert_eq!(guard.max_error_rate, Some(MAX_ERROR_RATE));
        }
    }
}
