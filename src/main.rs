//! The `cutover` command line: `run` (the default), `check` and `demo`, the
//! operator's admin commands (`src/cli/`), and what an operator's tools read
//! from the binary itself: shell completions and a man page generated from
//! this definition, and the config file's JSON Schema.
//!
//! Exit codes are part of the contract (SPEC §1): 0 after a clean shutdown,
//! 1 for a bad config or a listener that cannot be bound, 2 for a usage error
//! (clap's own code for those).
//!
//! It also defines `__wrap_pow`, where the link sends tokio's one call to
//! the C library's `pow` (see there), so that the binary needs no `libm.so`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod demo;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use cutover::config;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// `pow` for calls made from the binary's own code, computed in Rust.
///
/// `build.rs` links the binary with `--wrap=pow`: the linker resolves every
/// reference to `pow` in the binary's objects to this function instead.
/// The only such reference is tokio's multi-thread scheduler (its poll-time
/// moving average uses `powf`); the library's own math calls the `libm`
/// crate directly. With no reference to libm left, the linker (which links
/// with `--as-needed`) drops `libm.so.6` from the binary's needed libraries,
/// so the loader neither maps nor relocates it at start. The name is the
/// link's own: it is not in the dynamic symbol table, and every shared
/// library in the process keeps the C library's `pow`.
#[no_mangle]
extern "C" fn __wrap_pow(base: f64, exponent: f64) -> f64 {
    libm::pow(base, exponent)
}

/// A layer-7 HTTP reverse proxy for zero-downtime releases.
#[derive(Debug, Parser)]
#[command(name = "cutover", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run {
        /// Path of the config file.
        #[arg(long, short, default_value = "config/cutover.toml")]
        config: PathBuf,
        /// Do not watch the config file; reload only on SIGHUP or POST /reload.
        #[arg(long)]
        no_watch: bool,
    },
    /// Validate a config exactly as a reload would, and summarise it.
    Check {
        /// Path of the config file.
        path: PathBuf,
    },
    /// A self-contained showcase: demo upstreams, the real proxy, live load,
    /// a rollout promoted, one aborted and a switchback, all on 127.0.0.1.
    Demo {
        /// Seconds the demo runs before it stops by itself; the story is scaled to fit.
        #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(10..=3600))]
        duration: u64,
        /// Seed for the proxy's random choices (the weighted split); random by default.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Print a shell completion script for this command line.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) for this command line.
    Man,
    /// Print the JSON Schema of the config file, for editors that check TOML.
    Schema,
    /// The operator's commands over a running proxy's admin API.
    #[command(flatten)]
    Admin(cutover::cli::CliCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter =
        if matches!(cli.command, Some(Command::Demo { .. })) { demo::default_log_filter() } else { "info" };
    init_logging(cli.log_format, default_filter);
    let command = cli.command.unwrap_or(Command::Run { config: PathBuf::from("config/cutover.toml"), no_watch: false });
    match command {
        Command::Check { path } => check(&path),
        Command::Run { config, no_watch } => run(config, !no_watch),
        Command::Demo { duration, seed } => demo(Duration::from_secs(duration), seed),
        Command::Admin(command) => cutover::cli::run(command),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "cutover", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Man => print_man(),
        Command::Schema => {
            println!("{}", cutover::config::schema::json_schema());
            ExitCode::SUCCESS
        }
    }
}

/// The man page of the whole command line, its subcommands as sections.
fn print_man() -> ExitCode {
    let mut out = std::io::stdout().lock();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cannot write the man page: {err}");
            ExitCode::from(1)
        }
    }
}

fn demo(duration: Duration, seed: Option<u64>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(demo::run(demo::DemoOptions { duration, seed })) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cutover demo: {err}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            println!("{}: ok", path.display());
            print!("{}", config.summary());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(1)
        }
    }
}

fn run(path: PathBuf, watch: bool) -> ExitCode {
    let (config, text) = match config::load_with_text(&path) {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(1);
        }
    };
    // One worker: a current-thread runtime, with no work-stealing and no
    // cross-thread wake-ups — each request's tasks stay on one thread.
    let mut runtime = match config.server.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        workers => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = workers {
                builder.worker_threads(n);
            }
            builder
        }
    };
    let runtime = match runtime.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        // Signal handlers go in before anything is bound or logged, so a
        // signal sent as soon as the proxy is up is handled, never fatal.
        let signals = match Signals::install() {
            Ok(s) => s,
            Err(err) => {
                eprintln!("cannot install signal handlers: {err}");
                return ExitCode::from(1);
            }
        };
        let listeners = match cutover::bind(&config).await {
            Ok(l) => l,
            Err((addr, err)) => {
                eprintln!("cannot listen on {addr}: {err}");
                return ExitCode::from(1);
            }
        };
        let options =
            cutover::RunOptions { seed: None, source: Some((path, text)), watch, reload_signal: Some(signals.hangup) };
        match cutover::run(config, listeners, options, shutdown(signals.terminate, signals.interrupt)).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{err}");
                ExitCode::from(1)
            }
        }
    })
}

/// The process's signal streams, created once at start.
struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }
}

/// Resolves on the first SIGTERM or SIGINT, after arranging for a second one
/// to end the process at once.
async fn shutdown(mut terminate: Signal, mut interrupt: Signal) {
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        eprintln!("second signal: exiting without waiting for in-flight requests");
        std::process::exit(1);
    });
}

fn init_logging(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    // Colour only for a person at a terminal; log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    /// The values the C library's `pow` gives (and the C standard's special
    /// cases), to within one unit in the last place. Not compared with
    /// `f64::powf`: in this binary that may call `__wrap_pow` itself.
    #[test]
    fn wrapped_pow_gives_the_values_the_c_library_would() {
        let cases = [
            (0.9, 3.0, 0.7290000000000001),
            (0.9, 0.5, 0.9486832980505138),
            (0.9, 100.0, 2.6561398887587544e-5),
            (2.0, -3.0, 0.125),
            (10.0, 2.5, 316.22776601683796),
            (0.5, 1e6, 0.0),
            (7.0, 0.0, 1.0),
            (1.0, f64::NAN, 1.0),
            (-1.0, f64::INFINITY, 1.0),
        ];
        for (base, exponent, expected) in cases {
            let got = super::__wrap_pow(base, exponent);
            let tolerance = f64::EPSILON * expected;
            assert!((got - expected).abs() <= tolerance, "pow({base}, {exponent}) = {got}, expected {expected}");
        }
        assert!(super::__wrap_pow(-8.0, 1.0 / 3.0).is_nan(), "a negative base to a non-integer power is NaN");
    }
}
