//! Command-line arguments and the dispatch to one function per subcommand.

mod commands;

use std::path::PathBuf;

use clap::builder::PossibleValuesParser;
use clap::{ArgAction, Args, Parser, Subcommand};
use keywheel::exit::{EXIT_CODES_HELP, ExitStatus};

const ABOUT: &str = "Rotate API keys and other secrets safely.

A playbook describes one credential: where new keys come from and every place \
the key is stored. `keywheel run` generates a new key, pushes it to every \
target, verifies it, revokes the old key, and rolls everything back on failure. \
Every step is journaled, so an interrupted run can be resumed or rolled back.";

#[derive(Debug, Parser)]
#[command(name = "keywheel", version, about = ABOUT, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Directory for journals, locks and the default seal key
    /// [default: $XDG_STATE_HOME/keywheel or ~/.local/state/keywheel]
    #[arg(long, global = true, value_name = "DIR", env = "KEYWHEEL_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// File holding the 32-byte key that seals secrets in journals
    /// [default: seal.key in the state directory, created on first use; the
    /// KEYWHEEL_SEAL_KEY variable, when set, takes precedence]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "KEYWHEEL_SEAL_KEY_FILE"
    )]
    pub seal_key_file: Option<PathBuf>,

    /// Answer yes to every question, including the one before the point of
    /// no return
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,

    /// Never ask a question; stop where one would be asked
    #[arg(long, global = true)]
    pub no_input: bool,

    /// Print only warnings and errors on stderr
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,

    /// Directory of node-exporter's textfile collector: after each run,
    /// keywheel writes keywheel.prom there with every playbook's last outcome
    #[arg(long, global = true, value_name = "DIR", env = "KEYWHEEL_TEXTFILE_DIR")]
    pub textfile_dir: Option<PathBuf>,

    /// Print machine-readable JSON on stdout
    #[arg(long, global = true)]
    pub json: bool,

    /// Print more detail on stderr (-v: a status line per target and info
    /// logs, -vv: debug logs, -vvv: trace logs)
    #[arg(short = 'v', long = "verbose", action = ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check playbooks without contacting anything
    Validate {
        /// Playbook files
        #[arg(required = true, value_name = "PLAYBOOK")]
        playbooks: Vec<PathBuf>,
    },
    /// Show what a run would do, using read-only calls only
    Plan {
        #[arg(value_name = "PLAYBOOK")]
        playbook: PathBuf,
        /// Show the order of `run --emergency`
        #[arg(long)]
        emergency: bool,
    },
    /// Rotate the credential a playbook describes
    Run {
        #[arg(value_name = "PLAYBOOK")]
        playbook: PathBuf,
        /// Remove a lock left by a keywheel process that is gone
        #[arg(long)]
        break_lock: bool,
        /// Do nothing, and exit 0, while the last successful rotation is
        /// younger than the playbook's max_age
        #[arg(long, conflicts_with = "emergency")]
        if_due: bool,
        /// Rotate a leaked key: no overlap window, the old key is revoked as
        /// soon as every target holds the new one (or before the push, with
        /// `emergency: {revoke: before_push}` in the playbook), the watch
        /// only reports, and the leaked key is never put back
        #[arg(long)]
        emergency: bool,
        #[command(flatten)]
        overrides: OverrideFlags,
    },
    /// Finish an interrupted or held run
    Resume {
        /// Run id or a unique prefix of one [default: the one unfinished run]
        #[arg(value_name = "RUN")]
        run: Option<String>,
        /// Remove a lock left by a keywheel process that is gone
        #[arg(long)]
        break_lock: bool,
        #[command(flatten)]
        overrides: OverrideFlags,
    },
    /// Undo an unfinished run: restore every target and delete the new key
    Rollback {
        /// Run id or a unique prefix of one
        #[arg(value_name = "RUN")]
        run: String,
        /// Remove a lock left by a keywheel process that is gone
        #[arg(long)]
        break_lock: bool,
    },
    /// Show a run in detail [default: unfinished runs, else the latest]
    Status {
        #[arg(value_name = "RUN")]
        run: Option<String>,
    },
    /// List which playbooks are due for rotation under their max_age
    Due {
        #[arg(required = true, value_name = "PLAYBOOK")]
        playbooks: Vec<PathBuf>,
    },
    /// Render a run as a Markdown timeline for a postmortem
    Report {
        /// Run id or a unique prefix of one
        #[arg(value_name = "RUN")]
        run: String,
    },
    /// Write a commented playbook for an issuer and targets, to start from
    Init {
        /// The issuer kind: where new keys come from
        #[arg(
            long,
            value_name = "KIND",
            value_parser = PossibleValuesParser::new(keywheel::issuers::KINDS)
        )]
        issuer: String,
        /// A target kind: a place the key is written to; repeat the option
        /// for more targets
        #[arg(
            long = "target",
            value_name = "KIND",
            required = true,
            value_parser = PossibleValuesParser::new(keywheel::targets::KINDS)
        )]
        targets: Vec<String>,
        /// Name of the credential, which names its lock and run history
        /// [default: the output file's name without extension, else
        /// change-me]
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Write the playbook to FILE (mode 0644, because a playbook contains
        /// no secrets) instead of stdout
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace FILE when it exists
        #[arg(long, requires = "output")]
        force: bool,
    },
    /// Print the JSON Schema of the playbook format, for editors
    Schema,
    /// Print a shell completion script
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// List past runs, newest first
    History {
        /// Only runs of this playbook name
        #[arg(long, value_name = "NAME")]
        playbook: Option<String>,
        /// Number of runs to list
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
    },
}

/// Operator decisions that let a run go past a preflight check that would
/// otherwise stop it. Preflight journals what it decided, so `resume` only
/// uses them when the run stopped before its preflight was journaled.
#[derive(Debug, Default, Args)]
pub struct OverrideFlags {
    /// Restore an AWS Secrets Manager secret that is scheduled for
    /// deletion, then rotate it
    #[arg(long)]
    pub restore: bool,

    /// Remove the AWSPENDING label from a pending version that another
    /// rotation left in an AWS secret (a rollback puts it back)
    #[arg(long, conflicts_with = "adopt_pending")]
    pub discard_pending: bool,

    /// Write the new key's fields into the JSON value of a pending version
    /// that another rotation left in an AWS secret
    #[arg(long)]
    pub adopt_pending: bool,

    /// Delete an inactive IAM access key that no keywheel run disabled,
    /// when the user has no free key slot
    #[arg(long)]
    pub delete_inactive_key: bool,
}

impl OverrideFlags {
    pub fn to_overrides(&self) -> keywheel::issuers::Overrides {
        keywheel::issuers::Overrides {
            restore_secret: self.restore,
            discard_pending: self.discard_pending,
            adopt_pending: self.adopt_pending,
            delete_inactive_key: self.delete_inactive_key,
        }
    }
}

/// Runs the subcommand and returns the exit status.
pub async fn dispatch(cli: Cli) -> ExitStatus {
    let json = cli.json;
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match terminate.as_mut() {
            Some(signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    // Biased, so that once a signal arrives it wins over a command that
    // became ready at the same time (say, a question whose read ended).
    tokio::select! {
        biased;
        _ = tokio::signal::ctrl_c() => stopped(json, ExitStatus::Interrupted),
        _ = terminated => stopped(json, ExitStatus::Terminated),
        status = commands::dispatch(cli) => status,
    }
}

/// Tells the operator what a command stopped by a signal left behind. The
/// journal is durable up to the last step, so the run is exactly as after
/// a crash.
fn stopped(json: bool, status: ExitStatus) -> ExitStatus {
    let cause = match status {
        ExitStatus::Terminated => "stopped by SIGTERM",
        _ => "interrupted",
    };
    let current = keywheel::engine::journal::current_run();
    let run = current.as_ref().map(|(run, _)| run.clone());
    let message = match &current {
        Some((run, true)) => {
            format!("{cause} after run {run} finished; `keywheel status {run}` shows its outcome")
        }
        Some((run, false)) => format!(
            "{cause}: run {run} is unfinished; `keywheel status {run}` shows where it stopped, `keywheel resume {run}` finishes it, `keywheel rollback {run}` undoes it"
        ),
        None => format!("{cause} before any run started; nothing was changed"),
    };
    eprintln!("\n{message}");
    if json {
        let value = serde_json::json!({
            "error": message,
            "exit_code": status.code(),
            "run_id": run.map(|run| run.to_string()),
        });
        println!("{value}");
    }
    status
}

/// Sends logs to stderr. `KEYWHEEL_LOG` overrides the level with a
/// `tracing` filter such as `keywheel=debug`.
pub fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // Dependencies log their own internals at info and debug; keep them at
    // warn unless the filter is set explicitly. kube logs the API server's
    // error bodies at debug, and those can quote Secret data.
    let default = format!(
        "{level},hyper=warn,hyper_util=warn,reqwest=warn,rustls=warn,h2=warn,tower=warn,kube_client=warn,kube=warn,aws_config=warn,aws_runtime=warn,aws_smithy_runtime=warn,aws_smithy_runtime_api=warn"
    );
    let filter = std::env::var("KEYWHEEL_LOG").unwrap_or(default);
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only on a terminal, so that cron logs get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Replaces Rust's panic output (which may include a backtrace) with one
/// line that asks for a bug report.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: keywheel hit an internal error{location}; the journal is intact, so `keywheel status` shows where the run stands. Please report this as a bug."
        );
    }));
}
