//! The operator's command line over the admin API: `status [--watch]`,
//! `history`, `switchback`, `set`, `trip`, `reset` and `rollout`.
//!
//! It is a client of the same JSON the console page reads, so what the
//! terminal shows and what the page shows never disagree. Writes carry the
//! same headers a script's `curl` would: `Content-Type: application/json`,
//! `X-Cutover-Admin: 1` and, when a token is found, `Authorization: Bearer`.
//!
//! Exit codes say what happened, for scripts: 0 done, 1 the proxy refused
//! (any answer other than 2xx, its `error` on stderr), 2 a usage error
//! (clap's own, or a bad `pool=weight`), 3 the admin API could not be
//! reached.
//!
//! - [`target`]: which admin URL and which token, from the options and the
//!   config file;
//! - [`client`]: one HTTP exchange with the admin API, its failures sorted
//!   into the exit codes;
//! - [`view`]: the human tables, pure functions of the JSON.

pub mod client;
pub mod error;
pub mod target;
pub mod view;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

use client::AdminClient;

pub use error::{CliError, EXIT_OK, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_USAGE};

/// How to reach the admin API, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The admin API's URL, e.g. `http://127.0.0.1:9901`. Default: the
    /// `[admin] listen` of `--config` (a wildcard address is reached on
    /// loopback), else `http://127.0.0.1:9901`.
    #[arg(long, value_name = "URL")]
    pub admin: Option<String>,
    /// The config file whose `[admin]` section gives the URL and, when
    /// readable, the token file.
    #[arg(long, short, value_name = "PATH", default_value = "config/cutover.toml")]
    pub config: PathBuf,
    /// A file holding the admin token. Default: `CUTOVER_ADMIN_TOKEN`, else
    /// the config's `[admin] token_file` when readable.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Print the admin API's JSON instead of tables, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// The admin commands, for `main.rs` to flatten into its own subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CliCommand {
    /// Routes with their configured and effective splits, pools with their
    /// trips, verdicts and backends, and rollouts.
    Status {
        /// Refresh in place until interrupted.
        #[arg(long, short)]
        watch: bool,
        /// Seconds between refreshes with --watch.
        #[arg(long, value_name = "SECS", default_value_t = 2.0)]
        interval: f64,
        /// With --watch, stop after this many refreshes.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// How to reach the admin API.
        #[command(flatten)]
        connection: Connection,
    },
    /// The revisions, newest first, with time, cause and splits.
    History {
        /// Show at most this many revisions.
        #[arg(long, short = 'n', value_name = "N", default_value_t = 20)]
        limit: usize,
        /// How to reach the admin API.
        #[command(flatten)]
        connection: Connection,
    },
    /// Restore the split in force before ROUTE's last change (again to undo).
    Switchback {
        /// The route's name.
        route: String,
        /// How to reach the admin API.
        #[command(flatten)]
        connection: Connection,
    },
    /// Set ROUTE's effective split now (`set shop blue=0 green=100`), or
    /// drop the override with --clear.
    Set {
        /// The route's name.
        route: String,
        /// Weights as POOL=WEIGHT, whole numbers >= 0.
        #[arg(value_name = "POOL=WEIGHT", required_unless_present = "clear", conflicts_with = "clear")]
        weights: Vec<String>,
        /// Drop the override: the config file's split applies again.
        #[arg(long)]
        clear: bool,
        /// How to reach the admin API.
        #[command(flatten)]
        connection: Connection,
    },
    /// Roll POOL back by hand: weight 0 wherever another pool can serve.
    Trip {
        /// The pool's name.
        pool: String,
        /// How to reach the admin API.
        #[command(flatten)]
        connection: Connection,
    },
    /// Clear POOL's trip.
    Reset {
        /// The pool's name.
        pool: String,
        /// How to reach the admin API.
        #[command(flatten)]
        connection: Connection,
    },
    /// Steer ROUTE's progressive rollout.
    Rollout {
        /// The route's name.
        route: String,
        /// What to do.
        #[arg(value_enum)]
        action: RolloutAction,
        /// How to reach the admin API.
        #[command(flatten)]
        connection: Connection,
    },
}

/// A rollout command (`POST /routes/{route}/rollout/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RolloutAction {
    /// Start from the first step.
    Start,
    /// Hold at the current step.
    Pause,
    /// Go on from a pause.
    Resume,
    /// Skip the remaining steps: the canary takes the whole share.
    Promote,
    /// Stop: the canary is tripped, the route goes back.
    Abort,
    /// Start again from the first step.
    Restart,
}

impl RolloutAction {
    fn as_str(self) -> &'static str {
        match self {
            RolloutAction::Start => "start",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Promote => "promote",
            RolloutAction::Abort => "abort",
            RolloutAction::Restart => "restart",
        }
    }
}

impl CliCommand {
    fn connection(&self) -> &Connection {
        match self {
            CliCommand::Status { connection, .. }
            | CliCommand::History { connection, .. }
            | CliCommand::Switchback { connection, .. }
            | CliCommand::Set { connection, .. }
            | CliCommand::Trip { connection, .. }
            | CliCommand::Reset { connection, .. }
            | CliCommand::Rollout { connection, .. } => connection,
        }
    }
}

/// Run `command` on a runtime of its own, printing to stdout and stderr:
/// what `main.rs` calls.
pub fn run(command: CliCommand) -> ExitCode {
    use std::io::IsTerminal;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let tty = std::io::stdout().is_terminal();
    let code = runtime.block_on(execute(command, &mut std::io::stdout(), &mut std::io::stderr(), tty));
    ExitCode::from(code)
}

/// Run `command`, writing its output to `out` and its errors to `err`;
/// `tty` says whether `out` is a terminal (refresh in place). Returns the
/// exit code.
pub async fn execute(command: CliCommand, out: &mut dyn Write, err: &mut dyn Write, tty: bool) -> u8 {
    let client = match target::resolve(command.connection()) {
        Ok(target) => AdminClient::new(target),
        Err(e) => return report(err, &e),
    };
    let json = command.connection().json;
    let result = match command {
        CliCommand::Status { watch: false, .. } => status_once(&client, json).await.map(|frame| {
            let _ = out.write_all(frame.as_bytes());
        }),
        CliCommand::Status { watch: true, interval, count, .. } => {
            return watch(&client, json, interval, count, out, err, tty).await;
        }
        CliCommand::History { limit, .. } => client.get("/history").await.map(|history| {
            let text = if json { pretty(&history) } else { view::history(&history, limit) };
            let _ = out.write_all(text.as_bytes());
        }),
        CliCommand::Switchback { route, .. } => {
            let path = format!("/routes/{}/switchback", client::segment(&route));
            mutate(&client, "POST", &path, None, json, &format!("{route}: switched back"), out).await
        }
        CliCommand::Set { route, clear: true, .. } => {
            let path = format!("/routes/{}/split", client::segment(&route));
            mutate(&client, "DELETE", &path, None, json, &format!("{route}: override cleared"), out).await
        }
        CliCommand::Set { route, weights, .. } => match parse_weights(&weights) {
            Ok(body) => {
                let path = format!("/routes/{}/split", client::segment(&route));
                let done = format!("{route}: split set to {}", view::split(&body));
                mutate(&client, "PUT", &path, Some(body), json, &done, out).await
            }
            Err(e) => Err(e),
        },
        CliCommand::Trip { pool, .. } => {
            let path = format!("/pools/{}/trip", client::segment(&pool));
            mutate(&client, "POST", &path, None, json, &format!("{pool}: tripped"), out).await
        }
        CliCommand::Reset { pool, .. } => {
            let path = format!("/pools/{}/reset", client::segment(&pool));
            mutate(&client, "POST", &path, None, json, &format!("{pool}: trip cleared"), out).await
        }
        CliCommand::Rollout { route, action, .. } => {
            let path = format!("/routes/{}/rollout/{}", client::segment(&route), action.as_str());
            mutate(&client, "POST", &path, None, json, &format!("{route}: rollout {}", action.as_str()), out).await
        }
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => report(err, &e),
    }
}

fn report(err: &mut dyn Write, e: &CliError) -> u8 {
    let _ = writeln!(err, "cutover: {e}");
    e.exit_code()
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// `POOL=WEIGHT` arguments as the JSON body of `PUT /routes/{r}/split`.
pub fn parse_weights(args: &[String]) -> Result<Value, CliError> {
    let mut weights = serde_json::Map::new();
    for arg in args {
        let (pool, weight) = arg
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("{arg:?}: expected POOL=WEIGHT, like canary=10")))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .map_err(|_| CliError::Usage(format!("{arg:?}: the weight must be a whole number >= 0")))?;
        if pool.trim().is_empty() {
            return Err(CliError::Usage(format!("{arg:?}: the pool name is empty")));
        }
        if weights.insert(pool.trim().to_string(), weight.into()).is_some() {
            return Err(CliError::Usage(format!("pool {:?} is given twice", pool.trim())));
        }
    }
    Ok(Value::Object(weights))
}

async fn mutate(
    client: &AdminClient,
    method: &str,
    path: &str,
    body: Option<Value>,
    json: bool,
    done: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let answer = client.write(method, path, body).await?;
    let text = if json {
        pretty(&answer)
    } else {
        match answer.get("revision").and_then(Value::as_u64) {
            Some(rev) => format!("{done} (revision {rev})\n"),
            None => format!("{done}\n"),
        }
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

/// One frame of `status`: the table, or the JSON of `/status` (with
/// `/rollouts` under `"rollouts"` when the proxy has it).
async fn status_once(client: &AdminClient, json: bool) -> Result<String, CliError> {
    let mut status = client.get("/status").await?;
    let rollouts = client.get_optional("/rollouts").await?;
    if json {
        if let (Some(obj), Some(r)) = (status.as_object_mut(), rollouts) {
            obj.insert("rollouts".into(), r);
        }
        return Ok(pretty(&status));
    }
    Ok(view::status(&status, rollouts.as_ref()))
}

async fn watch(
    client: &AdminClient,
    json: bool,
    interval: f64,
    count: Option<u64>,
    out: &mut dyn Write,
    err: &mut dyn Write,
    tty: bool,
) -> u8 {
    if !(0.1..=3600.0).contains(&interval) {
        return report(err, &CliError::Usage("--interval must be from 0.1 to 3600 seconds".into()));
    }
    let mut shown = 0u64;
    let mut last;
    loop {
        let frame = match status_once(client, json).await {
            Ok(frame) => {
                last = EXIT_OK;
                frame
            }
            Err(e) => {
                last = e.exit_code();
                format!("cutover: {e}; retrying\n")
            }
        };
        // On a terminal, home the cursor and clear, so the view stays put;
        // elsewhere (a log, a pipe) frames follow each other.
        let framed = if tty { format!("\x1b[H\x1b[2J{frame}") } else { format!("{frame}\n") };
        let _ = out.write_all(framed.as_bytes());
        let _ = out.flush();
        shown += 1;
        if count.is_some_and(|n| shown >= n) {
            return last;
        }
        tokio::time::sleep(Duration::from_secs_f64(interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_into_the_split_body() {
        let args = ["blue=0".to_string(), "green=100".to_string()];
        assert_eq!(parse_weights(&args).unwrap(), serde_json::json!({"blue": 0, "green": 100}));
        for bad in ["blue", "blue=-1", "blue=x", "=3", "blue=1.5"] {
            let e = parse_weights(&[bad.to_string()]).unwrap_err();
            assert_eq!(e.exit_code(), EXIT_USAGE, "{bad}");
        }
        let twice = parse_weights(&["a=1".to_string(), "a=2".to_string()]).unwrap_err();
        assert!(twice.to_string().contains("twice"));
    }

    #[test]
    fn the_commands_parse_as_main_will_flatten_them() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Top {
            #[command(subcommand)]
            command: CliCommand,
        }
        let top =
            Top::try_parse_from(["cutover", "set", "shop", "blue=0", "green=100", "--admin", "http://h:1"]).unwrap();
        match top.command {
            CliCommand::Set { route, weights, clear, connection } => {
                assert_eq!((route.as_str(), weights.len(), clear), ("shop", 2, false));
                assert_eq!(connection.admin.as_deref(), Some("http://h:1"));
            }
            other => panic!("{other:?}"),
        }
        let top = Top::try_parse_from(["cutover", "rollout", "shop", "promote", "--json"]).unwrap();
        assert!(matches!(top.command, CliCommand::Rollout { action: RolloutAction::Promote, .. }));
        let e = Top::try_parse_from(["cutover", "rollout", "shop", "fly"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = Top::try_parse_from(["cutover", "set", "shop"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "weights or --clear");
    }

    /// The shape `main.rs` gives them: flattened beside its own commands,
    /// under a global option, so `cutover status` and `cutover run` coexist.
    #[test]
    fn the_commands_flatten_into_the_binary_s_own() {
        use clap::{Parser, Subcommand};
        #[derive(Debug, Parser)]
        struct Binary {
            #[arg(long, global = true, default_value = "text")]
            log_format: String,
            #[command(subcommand)]
            command: Option<Command>,
        }
        #[derive(Debug, Subcommand)]
        enum Command {
            Run {
                #[arg(long, short, default_value = "config/cutover.toml")]
                config: std::path::PathBuf,
            },
            Check {
                path: std::path::PathBuf,
            },
            #[command(flatten)]
            Admin(CliCommand),
        }
        use clap::CommandFactory;
        Binary::command().debug_assert();
        let b = Binary::try_parse_from(["cutover", "switchback", "shop", "-c", "/etc/cutover.toml"]).unwrap();
        match b.command {
            Some(Command::Admin(CliCommand::Switchback { route, connection })) => {
                assert_eq!(route, "shop");
                assert_eq!(connection.config, std::path::PathBuf::from("/etc/cutover.toml"));
            }
            other => panic!("{other:?}"),
        }
        let b = Binary::try_parse_from(["cutover", "run", "-c", "x.toml"]).unwrap();
        assert!(matches!(b.command, Some(Command::Run { .. })));
    }
}
