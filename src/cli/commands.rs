//! One function per subcommand.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keywheel::engine::record::Mode;
use keywheel::engine::report::{RunReport, RunStatus};
use keywheel::engine::{Engine, EngineError, EngineOptions, RunSelector};
use keywheel::exit::ExitStatus;
use keywheel::issuers::Overrides;
use keywheel::output::{Output, OutputOptions, render};
use keywheel::playbook::{self, decode::Severity};
use keywheel::seal::{KeySource, Sealer};
use keywheel::store::local::LocalStore;

use super::{Cli, Command};

pub async fn dispatch(cli: Cli) -> ExitStatus {
    let out = Arc::new(Output::new(OutputOptions {
        quiet: cli.quiet,
        yes: cli.yes,
        no_input: cli.no_input,
        verbose: cli.verbose > 0,
    }));
    let result = match &cli.command {
        Command::Validate { playbooks } => Ok(validate(&out, playbooks, cli.json)),
        Command::Plan {
            playbook,
            emergency,
        } => {
            let mode = if *emergency {
                Mode::Emergency
            } else {
                Mode::Normal
            };
            plan(&cli, &out, playbook, mode).await
        }
        Command::Run {
            playbook,
            break_lock,
            if_due,
            emergency,
            overrides,
        } => {
            let request = RunRequest {
                path: playbook,
                break_lock: *break_lock,
                if_due: *if_due,
                mode: if *emergency {
                    Mode::Emergency
                } else {
                    Mode::Normal
                },
                overrides: overrides.to_overrides(),
            };
            run(&cli, &out, request).await
        }
        Command::Resume {
            run,
            break_lock,
            overrides,
        } => {
            let overrides = overrides.to_overrides();
            resume(&cli, &out, run.as_deref(), *break_lock, overrides).await
        }
        Command::Rollback { run, break_lock } => rollback(&cli, &out, run, *break_lock).await,
        Command::Status { run } => status(&cli, &out, run.clone()).await,
        Command::History { playbook, limit } => {
            history(&cli, &out, playbook.as_deref(), *limit).await
        }
        Command::Due { playbooks } => due(&cli, &out, playbooks).await,
        Command::Report { run } => report(&cli, &out, run).await,
        Command::Init {
            issuer,
            targets,
            name,
            output,
            force,
        } => {
            let request = InitRequest {
                issuer,
                targets,
                name: name.as_deref(),
                output: output.as_deref(),
                force: *force,
            };
            Ok(init(&out, &request))
        }
        Command::Schema => {
            let schema = playbook::schema::playbook();
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            Ok(ExitStatus::Success)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "keywheel", &mut std::io::stdout());
            Ok(ExitStatus::Success)
        }
    };
    match result {
        Ok(status) => status,
        Err(err) => {
            report_error(&out, &err, cli.json);
            err.exit_status()
        }
    }
}

fn report_error(out: &Output, err: &EngineError, json: bool) {
    if json {
        let value =
            serde_json::json!({"error": err.to_string(), "exit_code": err.exit_status().code()});
        println!("{value}");
    }
    if let EngineError::Playbook(errors) = err {
        eprint!("{errors}");
        return;
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    out.error(message);
}

fn state_dir(cli: &Cli) -> PathBuf {
    cli.state_dir.clone().unwrap_or_else(|| {
        dirs::state_dir()
            .or_else(|| dirs::home_dir().map(|home| home.join(".local").join("state")))
            .unwrap_or_else(|| PathBuf::from(".keywheel-state"))
            .join("keywheel")
    })
}

fn engine(
    cli: &Cli,
    out: &Arc<Output>,
    break_lock: bool,
    overrides: Overrides,
) -> Result<Engine, EngineError> {
    let dir = state_dir(cli);
    let store = LocalStore::open(&dir)?;
    let (sealer, source) = Sealer::load(cli.seal_key_file.as_deref(), &dir)?;
    build_engine(out, store, sealer, source, break_lock, overrides)
}

/// An engine for commands that only read runs (`status`, `history`,
/// `report`, `due`): they never seal or unseal, so a missing seal key is
/// not created for them.
fn reading_engine(cli: &Cli, out: &Arc<Output>) -> Result<Engine, EngineError> {
    let dir = state_dir(cli);
    let store = LocalStore::open(&dir)?;
    let (sealer, source) = match Sealer::load_existing(cli.seal_key_file.as_deref(), &dir)? {
        Some(loaded) => loaded,
        None => (Sealer::ephemeral(), KeySource::Ephemeral),
    };
    build_engine(out, store, sealer, source, false, Overrides::default())
}

fn build_engine(
    out: &Arc<Output>,
    store: LocalStore,
    sealer: Sealer,
    source: KeySource,
    break_lock: bool,
    overrides: Overrides,
) -> Result<Engine, EngineError> {
    if let KeySource::Created(path) = source {
        out.status(
            "Created",
            format!(
                "seal key {} (keep it: journals cannot be read without it)",
                path.display()
            ),
        );
    }
    let options = EngineOptions {
        break_lock,
        overrides,
        ..EngineOptions::default()
    };
    Ok(Engine::new(Arc::new(store), sealer, out.clone(), options))
}

fn validate(out: &Output, paths: &[PathBuf], json: bool) -> ExitStatus {
    let mut all_valid = true;
    let mut results = Vec::new();
    for path in paths {
        match playbook::load(path) {
            Ok(book) => {
                for warning in &book.warnings {
                    out.warn(format!(
                        "{}:{}:{}: {}",
                        path.display(),
                        warning.line,
                        warning.column,
                        warning.unlabeled()
                    ));
                }
                out.status(
                    "Valid",
                    format!(
                        "{} ({}: {} issuer, {} target(s))",
                        path.display(),
                        book.name,
                        book.issuer.kind_name(),
                        book.targets.len()
                    ),
                );
                results.push(serde_json::json!({
                    "path": path, "valid": true, "name": book.name,
                    "errors": [], "warnings": diagnostics_json(&book.warnings),
                }));
            }
            Err(errors) => {
                all_valid = false;
                eprint!("{errors}");
                let (errs, warnings): (Vec<_>, Vec<_>) = errors
                    .diagnostics
                    .iter()
                    .cloned()
                    .partition(|d| d.severity == Severity::Error);
                results.push(serde_json::json!({
                    "path": path, "valid": false, "name": null,
                    "errors": diagnostics_json(&errs), "warnings": diagnostics_json(&warnings),
                }));
            }
        }
    }
    if json {
        println!("{}", serde_json::json!({ "playbooks": results }));
    }
    if all_valid {
        ExitStatus::Success
    } else {
        ExitStatus::Usage
    }
}

/// The options of `keywheel init`.
struct InitRequest<'a> {
    issuer: &'a str,
    targets: &'a [String],
    name: Option<&'a str>,
    output: Option<&'a Path>,
    force: bool,
}

fn init(out: &Output, request: &InitRequest<'_>) -> ExitStatus {
    let name = match request.name {
        Some(name) => name.to_string(),
        None => playbook::init::default_name(request.output),
    };
    let targets: Vec<&str> = request.targets.iter().map(String::as_str).collect();
    let options = playbook::init::Options {
        issuer: request.issuer,
        targets: &targets,
        name: &name,
    };
    let text = match playbook::init::render(&options) {
        Ok(text) => text,
        Err(err) => {
            out.error(err.to_string());
            return ExitStatus::Usage;
        }
    };
    let Some(path) = request.output else {
        print!("{text}");
        return ExitStatus::Success;
    };
    match playbook::init::write(path, &text, request.force) {
        Ok(()) => {
            out.status(
                "Wrote",
                format!(
                    "{}; fill in every change-me, then run `keywheel validate {0}`",
                    path.display()
                ),
            );
            ExitStatus::Success
        }
        Err(err) => {
            out.error(err.to_string());
            ExitStatus::Usage
        }
    }
}

fn diagnostics_json(diagnostics: &[playbook::decode::Diagnostic]) -> serde_json::Value {
    diagnostics
        .iter()
        .map(|d| serde_json::json!({"line": d.line, "column": d.column, "field": d.path, "message": d.message, "hint": d.hint}))
        .collect()
}

async fn plan(cli: &Cli, out: &Output, path: &Path, mode: Mode) -> Result<ExitStatus, EngineError> {
    let book = playbook::load(path)?;
    for warning in &book.warnings {
        out.warn(format!("{}: {}", path.display(), warning.unlabeled()));
    }
    let disabled = disabled_keys(cli, &book.name).await;
    let plan = keywheel::engine::plan::plan(&book, Default::default(), disabled, mode).await?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        );
    } else {
        print!("{}", render::plan(&plan));
    }
    Ok(if plan.problems.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failed
    })
}

/// Old keys that earlier runs of `playbook` disabled, read from the state
/// directory when it exists. `plan` creates nothing, so without a state
/// directory there are none.
async fn disabled_keys(cli: &Cli, playbook: &str) -> Vec<String> {
    let dir = state_dir(cli);
    if !dir.is_dir() {
        return Vec::new();
    }
    let store = match LocalStore::open(&dir) {
        Ok(store) => store,
        Err(err) => {
            tracing::warn!(%err, "cannot read earlier runs");
            return Vec::new();
        }
    };
    keywheel::engine::keys_disabled_by_runs(&store, playbook, None)
        .await
        .unwrap_or_else(|err| {
            tracing::warn!(%err, "cannot read earlier runs");
            Vec::new()
        })
}

/// What `keywheel run` was asked to do.
struct RunRequest<'a> {
    path: &'a Path,
    break_lock: bool,
    if_due: bool,
    mode: Mode,
    overrides: Overrides,
}

async fn run(
    cli: &Cli,
    out: &Arc<Output>,
    request: RunRequest<'_>,
) -> Result<ExitStatus, EngineError> {
    if let Some(dir) = &cli.textfile_dir
        && !dir.is_dir()
    {
        return Err(EngineError::BadOption(format!(
            "--textfile-dir (or KEYWHEEL_TEXTFILE_DIR) {} is not a directory; create it (node-exporter reads it with --collector.textfile.directory) or fix the path",
            dir.display()
        )));
    }
    let book = playbook::load(request.path)?;
    let engine = engine(cli, out, request.break_lock, request.overrides)?;
    if request.if_due {
        let due = engine.due_status(&book).await?;
        if !due.due {
            out.status(
                "Skipped",
                format!("{}: not due ({})", book.name, due.reason),
            );
            // Written for skipped runs too, so the metric stays fresh.
            write_textfile(cli, out, &engine).await;
            if cli.json {
                let value = serde_json::json!({"skipped": true, "due": due});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            }
            return Ok(ExitStatus::Success);
        }
    }
    let report = engine.run(book, request.mode).await;
    write_textfile(cli, out, &engine).await;
    Ok(finish(out, &report?, cli.json, false))
}

/// Rewrites the node-exporter textfile when `--textfile-dir` is set. A
/// failure is a warning: the rotation itself is done.
async fn write_textfile(cli: &Cli, out: &Output, engine: &Engine) {
    let Some(dir) = &cli.textfile_dir else {
        return;
    };
    let result = match engine.history(None, usize::MAX).await {
        Ok(reports) => keywheel::metrics::write(dir, &reports).map_err(|err| err.to_string()),
        Err(err) => Err(err.to_string()),
    };
    if let Err(message) = result {
        out.warn(format!(
            "cannot write the textfile in {}: {message}",
            dir.display()
        ));
    }
}

async fn due(cli: &Cli, out: &Arc<Output>, paths: &[PathBuf]) -> Result<ExitStatus, EngineError> {
    let engine = reading_engine(cli, out)?;
    let mut statuses = Vec::new();
    for path in paths {
        let book = playbook::load(path)?;
        statuses.push(engine.due_status(&book).await?);
    }
    if cli.json {
        let value = serde_json::json!({"playbooks": statuses});
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
        return Ok(ExitStatus::Success);
    }
    let width = statuses
        .iter()
        .map(|s| s.playbook.len())
        .max()
        .unwrap_or(8)
        .max(8);
    println!("{:width$}  {:3}  REASON", "PLAYBOOK", "DUE");
    for status in &statuses {
        let due = if status.due { "yes" } else { "no" };
        println!("{:width$}  {due:3}  {}", status.playbook, status.reason);
    }
    Ok(ExitStatus::Success)
}

async fn report(cli: &Cli, out: &Arc<Output>, run: &str) -> Result<ExitStatus, EngineError> {
    let engine = reading_engine(cli, out)?;
    let (report, audit) = engine.audit_log(run).await?;
    if cli.json {
        let events: Vec<serde_json::Value> = audit
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let value = serde_json::json!({"report": report, "audit": events});
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", render::markdown_report(&report, &audit));
    }
    Ok(ExitStatus::Success)
}

async fn resume(
    cli: &Cli,
    out: &Arc<Output>,
    run: Option<&str>,
    break_lock: bool,
    overrides: Overrides,
) -> Result<ExitStatus, EngineError> {
    let engine = engine(cli, out, break_lock, overrides)?;
    let report = engine.resume(run).await;
    write_textfile(cli, out, &engine).await;
    Ok(finish(out, &report?, cli.json, false))
}

async fn rollback(
    cli: &Cli,
    out: &Arc<Output>,
    run: &str,
    break_lock: bool,
) -> Result<ExitStatus, EngineError> {
    let engine = engine(cli, out, break_lock, Overrides::default())?;
    let report = engine.rollback(run).await;
    write_textfile(cli, out, &engine).await;
    Ok(finish(out, &report?, cli.json, true))
}

/// Prints the end of a run and picks the exit status. A rollback the
/// operator asked for succeeds when the run ends rolled back.
fn finish(out: &Output, report: &RunReport, json: bool, rollback_requested: bool) -> ExitStatus {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        );
    }
    let state = match report.status {
        RunStatus::Held => Some("is held"),
        RunStatus::NeedsAttention => Some("needs attention"),
        RunStatus::Interrupted => Some("is unfinished"),
        _ => None,
    };
    if let Some(state) = state {
        out.warn(format!(
            "run {} {state}: `keywheel status {0}` shows what to do",
            report.run_id
        ));
    }
    // Targets someone else changed contain neither key keywheel wrote, so the
    // operator has to look at them even though the rollback finished.
    let left_alone = report
        .targets
        .iter()
        .filter(|target| target.status == "left_alone")
        .count();
    if report.status == RunStatus::RolledBack && left_alone > 0 {
        out.warn(format!(
            "run {} rolled back, but left {left_alone} target(s) alone: `keywheel status {0}` names them",
            report.run_id
        ));
        return ExitStatus::Attention;
    }
    match report.status {
        RunStatus::Completed => ExitStatus::Success,
        RunStatus::RolledBack if rollback_requested => ExitStatus::Success,
        RunStatus::RolledBack | RunStatus::Failed => ExitStatus::Failed,
        RunStatus::Held | RunStatus::NeedsAttention | RunStatus::Interrupted => {
            ExitStatus::Attention
        }
    }
}

async fn status(
    cli: &Cli,
    out: &Arc<Output>,
    run: Option<String>,
) -> Result<ExitStatus, EngineError> {
    let engine = reading_engine(cli, out)?;
    let selector = match run {
        Some(id) => RunSelector::Id(id),
        None => RunSelector::Current,
    };
    let reports = engine.status(selector).await?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"runs": reports})).unwrap_or_default()
        );
    } else if reports.is_empty() {
        println!("no runs yet");
    } else {
        for report in &reports {
            print!("{}", render::run_report(report));
        }
    }
    Ok(ExitStatus::Success)
}

async fn history(
    cli: &Cli,
    out: &Arc<Output>,
    playbook: Option<&str>,
    limit: usize,
) -> Result<ExitStatus, EngineError> {
    let engine = reading_engine(cli, out)?;
    let reports = engine.history(playbook, limit).await?;
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"runs": reports})).unwrap_or_default()
        );
    } else {
        print!("{}", render::history(&reports));
    }
    Ok(ExitStatus::Success)
}
