//! The one config builder of the tests: a cutover TOML file put together
//! section by section, so a test names only what it cares about.
//!
//! The listeners are left out on purpose: [`super::TestProxy::start`] (and
//! [`super::with_listeners`], for files a test rewrites to reload) add
//! `[server] listen` and `[admin] listen` on port 0. When a test sets
//! `[server]` keys, the builder writes the port-0 `listen` itself.
//!
//! ```ignore
//! let text = Config::new()
//!     .server("request_timeout = \"500ms\"")
//!     .pool("app", &[upstream.addr])
//!     .route("app", "app = 100")
//!     .build();
//! ```

use std::fmt::Display;
use std::net::SocketAddr;

/// A cutover config under construction; [`Config::build`] gives its text.
#[derive(Debug, Clone, Default)]
pub struct Config {
    server: Vec<String>,
    body: String,
}

impl Config {
    /// An empty config.
    pub fn new() -> Config {
        Config::default()
    }

    /// The commonest shape: pool `app` over `backends`, one catch-all route
    /// `app` sending it everything.
    pub fn one_pool(backends: &[SocketAddr]) -> Config {
        Config::new().pool("app", backends).route("app", "app = 100")
    }

    /// Lines (`key = value`) for the `[server]` table.
    pub fn server(mut self, lines: &str) -> Config {
        self.server.push(lines.to_string());
        self
    }

    /// `[pools.<name>]` over `backends` (addresses, or `https://` URLs).
    pub fn pool<B: Display>(self, name: &str, backends: &[B]) -> Config {
        self.pool_with(name, backends, "")
    }

    /// `[pools.<name>]` over `backends`, followed by `extra`: more keys of
    /// the pool, then possibly its sub-tables (`[pools.<name>.guard]`, …).
    pub fn pool_with<B: Display>(mut self, name: &str, backends: &[B], extra: &str) -> Config {
        let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
        self.body.push_str(&format!("[pools.{name}]\nbackends = [{}]\n{extra}\n", list.join(", ")));
        self
    }

    /// Pools `stable` and guarded `canary`, and route `shop` with a rollout
    /// of the canary at 25, 50 and 100 % that holds each step an hour: one
    /// that stays where an operator puts it.
    pub fn slow_rollout(stable: SocketAddr, canary: SocketAddr) -> Config {
        Config::new()
            .pool("stable", &[stable])
            .pool_with("canary", &[canary], "[pools.canary.guard]\nmax_error_rate = 0.5\n")
            .route_with(
                "shop",
                "stable = 100, canary = 0",
                "[routes.rollout]\npool = \"canary\"\nsteps = [25, 50, 100]\nhold = \"1h\"\nmax_hold = \"1h\"\n",
            )
    }

    /// A `[[routes]]` entry named `name` whose split is `{ <split> }`.
    pub fn route(self, name: &str, split: &str) -> Config {
        self.route_with(name, split, "")
    }

    /// A route as [`Config::route`], followed by `extra`: more keys of the
    /// route (`host`, `sticky`, …), then possibly `[[routes.force]]` entries.
    pub fn route_with(mut self, name: &str, split: &str, extra: &str) -> Config {
        self.body.push_str(&format!("[[routes]]\nname = \"{name}\"\nsplit = {{ {split} }}\n{extra}\n"));
        self
    }

    /// TOML appended as written, for what the builder has no method for.
    pub fn raw(mut self, text: &str) -> Config {
        self.body.push_str(text);
        self.body.push('\n');
        self
    }

    /// The config's text.
    pub fn build(&self) -> String {
        let mut text = String::new();
        if !self.server.is_empty() {
            text.push_str("[server]\nlisten = [\"127.0.0.1:0\"]\n");
            for lines in &self.server {
                text.push_str(lines);
                text.push('\n');
            }
        }
        text.push_str(&self.body);
        text
    }
}
