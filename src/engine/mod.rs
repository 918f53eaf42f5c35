//! The rotation engine: a durable, resumable state machine with rollback.
//!
//! A run walks these steps, journaling an intent before each side effect and
//! its outcome after it (see [`record`]):
//!
//! 1. preflight: read-only checks of every target and the issuer; the
//!    targets' current values are sealed into the journal.
//! 2. generate: the issuer makes the new key; it is sealed into the journal
//!    before any target sees it.
//! 3. verify: the issuer and the playbook's probes check that the new key
//!    works, retrying while it propagates.
//! 4. push: every target gets the new values, read back and compared. When
//!    the playbook has a watch, the baselines of its relative thresholds
//!    are sampled and journaled just before.
//! 5. restart: once every target is pushed, targets with consumers to
//!    restart restart them and wait until the restart is confirmed. A
//!    failed restart rolls the run back.
//! 6. verify-pushed: the probes again, once every target holds the key.
//! 7. watch (overlap): the watch checks are sampled while the old key
//!    still exists; a breach rolls the run back.
//! 8. revoke: the old key is disabled where the issuer can re-enable it.
//! 9. watch (after revoke): sampled again, where revoke was reversible; a
//!    breach enables the old key again and rolls back.
//! 10. retire: the old key is deleted. This is the point of no return.
//!     Where the issuer cannot disable keys, retire is the only revocation.
//! 11. confirm-revoked: a probe with the old key shows it is refused; when
//!     it is not, the run reports it (see [`probe`]) but does not undo.
//!
//! Invariants the code below keeps:
//! - Nothing is pushed before the new key is sealed in the journal, so a
//!   crash never loses a key that a target holds.
//! - Nothing old is revoked before every target holds the new key and the
//!   probes passed with it.
//! - Rollback undoes in reverse order and only while the old key exists:
//!   re-enable the old key, restore every target (and restart its consumers
//!   again when the forward restart was started), delete the new key.
//! - `resume` and `rollback` act on exactly the targets journaled at
//!   preflight, even when the playbook would now expand to others (see
//!   [`build`]).
//! - A run that started rolling back never goes forward again.
//!
//! [`Engine`] is the entry point for `run`, `resume`, `rollback`, `plan`,
//! `status` and `history`.

mod audit;
pub mod due;
mod inspect;
pub mod journal;
mod live;
mod lock;
pub mod plan;
mod probe;
pub mod record;
pub mod report;
mod restart;
pub mod state;
mod undo;
pub mod watch_log;
#[cfg(test)]
mod watch_tests;
mod watching;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::exit::ExitStatus;
use crate::issuers::Issuer;
use crate::output::Output;
use crate::playbook::{self, Playbook, PlaybookErrors};
use crate::retry::RetryPolicy;
use crate::run_id::RunId;
use crate::seal::{SealError, Sealer};
use crate::store::{Liveness, Store, StoreError};
use crate::targets::{Selection, SetupError, Target};
use crate::watch::Watcher;
use journal::Journal;
use live::Live;
use record::{Event, Mode};
use report::RunReport;
use state::{Phase, RunState};

pub use inspect::{RunSelector, keys_disabled_by_runs};

/// Settings of the engine that come from the command line.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Break a lock whose holder is gone.
    pub break_lock: bool,
    pub retry: RetryPolicy,
    /// Lease length of a playbook lock; renewed every third of it.
    pub lease_ttl: Duration,
    pub overrides: crate::issuers::Overrides,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            break_lock: false,
            retry: RetryPolicy::default(),
            lease_ttl: Duration::from_secs(60),
            overrides: crate::issuers::Overrides::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Playbook(#[from] PlaybookErrors),
    #[error("{}", list_setup_errors(.0))]
    Setup(Vec<SetupError>),
    /// A command-line option that cannot work, found before anything runs.
    #[error("{0}")]
    BadOption(String),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("playbook {playbook} is locked by run {run} (pid {pid} on {host}, {state}){hint}")]
    Locked {
        playbook: String,
        run: RunId,
        pid: u32,
        host: String,
        state: &'static str,
        hint: String,
    },
    #[error(
        "playbook {playbook} has an unfinished run {run} ({status}); finish it with `keywheel resume {run}` or undo it with `keywheel rollback {run}`"
    )]
    Unfinished {
        playbook: String,
        run: RunId,
        status: &'static str,
    },
    #[error("no run matches {0:?}; `keywheel history` lists the runs")]
    RunNotFound(String),
    #[error("{selector:?} matches several runs: {}; give more of the id", .candidates.join(", "))]
    AmbiguousRun {
        selector: String,
        candidates: Vec<String>,
    },
    #[error("there is no unfinished run to resume")]
    NothingToResume,
    #[error("several runs are unfinished: {}; name the one to resume", .0.join(", "))]
    SeveralUnfinished(Vec<String>),
    #[error("run {run} already finished ({status}); there is nothing to {action}")]
    AlreadyFinished {
        run: RunId,
        status: &'static str,
        action: &'static str,
    },
    #[error(
        "run {run} passed the point of no return: the old key was deleted ({step}), so it cannot be rolled back; rotate again to replace the key"
    )]
    PastPointOfNoReturn { run: RunId, step: String },
    #[error(
        "run {run} is an emergency rotation of a leaked key and has already {changed}; rolling it back would put the leaked key back, so keywheel does not: fix what stopped it and run `keywheel resume {run}`"
    )]
    EmergencyRollback { run: RunId, changed: String },
    #[error(
        "run {run} was sealed with seal key {expected}, but the current seal key is {current}; set KEYWHEEL_SEAL_KEY or --seal-key-file to the key the run started with"
    )]
    SealKeyMismatch {
        run: RunId,
        expected: String,
        current: String,
    },
    #[error(
        "run {run}: cannot write its journal, so keywheel stopped before the next change: {source}; fix the cause (a full disk, a broken state directory, another keywheel process), then run `keywheel resume {run}`"
    )]
    Journal {
        run: RunId,
        #[source]
        source: StoreError,
    },
    #[error(
        "the copy of the playbook that run {run} saved in the state directory (runs/{run}/playbook.yaml) is no longer valid (line numbers refer to the copy, not the original): {source}"
    )]
    StoredPlaybook {
        run: RunId,
        #[source]
        source: PlaybookErrors,
    },
}

fn list_setup_errors(errors: &[SetupError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl EngineError {
    /// Wraps an error writing the journal of `run`. A deleted journal is
    /// reported as it is, since `resume` cannot help with it.
    fn journal(run: &RunId, source: StoreError) -> Self {
        match source {
            StoreError::JournalDeleted { .. } => Self::Store(source),
            source => Self::Journal {
                run: run.clone(),
                source,
            },
        }
    }

    /// Maps the error to the exit status of the command.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Playbook(_)
            | Self::Setup(_)
            | Self::BadOption(_)
            | Self::RunNotFound(_)
            | Self::AmbiguousRun { .. }
            | Self::NothingToResume
            | Self::SeveralUnfinished(_)
            | Self::AlreadyFinished { .. }
            | Self::PastPointOfNoReturn { .. }
            | Self::EmergencyRollback { .. }
            | Self::SealKeyMismatch { .. }
            | Self::StoredPlaybook { .. } => ExitStatus::Usage,
            Self::Locked { .. } | Self::Unfinished { .. } => ExitStatus::Locked,
            Self::Store(StoreError::Locked { .. }) => ExitStatus::Locked,
            Self::Journal { .. } => ExitStatus::Attention,
            Self::Store(
                StoreError::Corrupt { .. }
                | StoreError::MissingFile { .. }
                | StoreError::JournalDeleted { .. },
            ) => ExitStatus::Attention,
            Self::Seal(_) | Self::Store(_) => ExitStatus::Failed,
        }
    }
}

/// Runs, resumes and rolls back rotations.
pub struct Engine {
    store: Arc<dyn Store>,
    sealer: Sealer,
    out: Arc<Output>,
    options: EngineOptions,
}

impl Engine {
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Sealer,
        out: Arc<Output>,
        options: EngineOptions,
    ) -> Self {
        Self {
            store,
            sealer,
            out,
            options,
        }
    }

    pub fn output(&self) -> &Output {
        &self.out
    }

    /// Starts a new run of `playbook`.
    pub async fn run(&self, playbook: Playbook, mode: Mode) -> Result<RunReport, EngineError> {
        for warning in &playbook.warnings {
            self.out.warn(format!(
                "{}: {}",
                playbook.path.display(),
                warning.unlabeled()
            ));
        }
        let built = build(&playbook, Selection::Current).await?;
        let run_id = RunId::generate();
        let lock = self.lock_playbook(&playbook.name, &run_id, None).await?;

        // Checked under the lock, so two starts cannot both pass it.
        if let Some(active) = self.store.active_run(&playbook.name).await? {
            match self.load_state(&active).await {
                Ok(state) if !state.is_finished() => {
                    lock.release().await;
                    let status = RunReport::from_state(&state).status.as_str();
                    return Err(EngineError::Unfinished {
                        playbook: playbook.name.clone(),
                        run: active,
                        status,
                    });
                }
                Err(EngineError::Store(StoreError::RunNotFound(_))) | Ok(_) => {
                    self.store.set_active_run(&playbook.name, None).await?;
                }
                Err(EngineError::Store(
                    err @ (StoreError::Corrupt { .. } | StoreError::MissingFile { .. }),
                )) if self.options.break_lock => {
                    // The operator gives up on a run that cannot be read.
                    self.out.warn(format!(
                        "abandoning run {active} because --break-lock was given: {err}; check by hand the targets it may have written and any old key it may have disabled at the issuer"
                    ));
                    self.store.set_active_run(&playbook.name, None).await?;
                }
                Err(err) => {
                    lock.release().await;
                    return Err(err);
                }
            }
        }

        let result = self.start_run(&playbook, &run_id, mode, built).await;
        lock.release().await;
        result
    }

    async fn start_run(
        &self,
        playbook: &Playbook,
        run_id: &RunId,
        mode: Mode,
        built: Built,
    ) -> Result<RunReport, EngineError> {
        // Marked active first: a crash before the journal exists leaves a
        // marker to a missing run, which the next run clears.
        self.store
            .set_active_run(&playbook.name, Some(run_id))
            .await?;
        let journal = Journal::new(self.store.clone(), RunState::new(run_id.clone()));
        let started = Event::RunStarted {
            run_id: run_id.clone(),
            playbook: playbook.name.clone(),
            playbook_path: absolute_display(&playbook.path),
            playbook_sha256: playbook.sha256.clone(),
            mode,
            host: crate::host::hostname(),
            user: crate::host::username(),
            pid: std::process::id(),
            keywheel_version: env!("CARGO_PKG_VERSION").to_string(),
            seal_key_id: self.sealer.key_id().to_string(),
        };
        journal
            .create(&playbook.text, started)
            .await
            .map_err(|source| EngineError::journal(run_id, source))?;
        self.out
            .status("Started", format!("run {run_id} of {}", playbook.name));
        let disabled =
            keys_disabled_by_runs(self.store.as_ref(), &playbook.name, Some(run_id)).await?;
        let live = Live::new(self, journal, playbook.clone(), built, disabled);
        let started = RunReport::from_state(&live.state().await);
        crate::notify::send(
            &playbook.notify,
            crate::notify::NotifyEvent::Start,
            &started,
            &self.out,
        )
        .await;
        live.forward().await?;
        self.finish(&live).await
    }

    /// Continues an unfinished run: forward, or on with its rollback.
    pub async fn resume(&self, selector: Option<&str>) -> Result<RunReport, EngineError> {
        let run_id = match selector {
            Some(selector) => self.resolve_run(selector).await?,
            None => self.only_unfinished_run().await?,
        };
        let state = self.load_state(&run_id).await?;
        if let Phase::Finished(_) = state.phase {
            return Err(EngineError::AlreadyFinished {
                run: run_id,
                status: RunReport::from_state(&state).status.as_str(),
                action: "resume",
            });
        }
        self.continue_run(state, Continuation::Resume).await
    }

    /// Undoes an unfinished run, or finishes undoing it.
    pub async fn rollback(&self, selector: &str) -> Result<RunReport, EngineError> {
        let run_id = self.resolve_run(selector).await?;
        let state = self.load_state(&run_id).await?;
        if let Phase::Finished(_) = state.phase {
            return Err(EngineError::AlreadyFinished {
                run: run_id,
                status: RunReport::from_state(&state).status.as_str(),
                action: "roll back",
            });
        }
        if let Some(step) = live::point_of_no_return_passed(&state) {
            return Err(EngineError::PastPointOfNoReturn { run: run_id, step });
        }
        if let Some(changed) = live::emergency_changes(&state) {
            return Err(EngineError::EmergencyRollback {
                run: run_id,
                changed,
            });
        }
        self.continue_run(state, Continuation::Rollback).await
    }

    async fn continue_run(
        &self,
        state: RunState,
        how: Continuation,
    ) -> Result<RunReport, EngineError> {
        let run_id = state.run_id.clone();
        let Some(started) = state.started.clone() else {
            return Err(EngineError::Store(StoreError::Corrupt {
                what: format!("journal of run {run_id}"),
                line: 1,
                reason: "the run has no run_started record".into(),
            }));
        };
        if started.seal_key_id != self.sealer.key_id() {
            return Err(EngineError::SealKeyMismatch {
                run: run_id,
                expected: started.seal_key_id,
                current: self.sealer.key_id().to_string(),
            });
        }
        let playbook = self.stored_playbook(&run_id, &started).await?;
        let lock = self
            .lock_playbook(&playbook.name, &run_id, Some(&run_id))
            .await?;
        let result = async {
            // Re-read under the lock: another process may have moved the run on.
            let state = self.load_state(&run_id).await?;
            let journaled: Vec<String> = state.targets.iter().map(|t| t.name.clone()).collect();
            let selection = match state.issuer {
                Some(_) => Selection::Journaled(&journaled),
                None => Selection::Current,
            };
            let built = build(&playbook, selection).await?;
            let journal = Journal::new(self.store.clone(), state);
            journal
                .append(Event::Resumed {
                    host: crate::host::hostname(),
                    user: crate::host::username(),
                    pid: std::process::id(),
                })
                .await
                .map_err(|source| EngineError::journal(&run_id, source))?;
            let verb = match how {
                Continuation::Rollback => "Undoing",
                Continuation::Resume => "Resuming",
            };
            self.out
                .status(verb, format!("run {run_id} of {}", playbook.name));
            let disabled =
                keys_disabled_by_runs(self.store.as_ref(), &playbook.name, Some(&run_id)).await?;
            let live = Live::new(self, journal, playbook.clone(), built, disabled);
            match how {
                Continuation::Resume if live.is_rolling_back().await => {
                    live.roll_back(None).await?
                }
                Continuation::Resume => live.forward().await?,
                Continuation::Rollback => live.roll_back(Some(undo::OPERATOR_REQUEST)).await?,
            }
            self.finish(&live).await
        }
        .await;
        lock.release().await;
        result
    }

    /// Clears the active marker of a finished run and tells the webhooks
    /// how the run ended.
    async fn finish(&self, live: &Live<'_>) -> Result<RunReport, EngineError> {
        let state = live.state().await;
        // The outcome is journaled already: a failure to clear the marker
        // must not turn it into an error. The next run clears a stale one.
        if state.is_finished()
            && let Err(err) = self.store.set_active_run(state.playbook(), None).await
        {
            self.out.warn(format!(
                "run {} finished, but its unfinished-run marker could not be cleared: {err}",
                state.run_id
            ));
        }
        let report = RunReport::from_state(&state);
        let event = crate::notify::NotifyEvent::for_status(report.status);
        crate::notify::send(&live.playbook.notify, event, &report, &self.out).await;
        Ok(report)
    }

    /// Returns a run's report with its audit log, for `report`. Warns when
    /// the audit log lacks events of the journal or has unreadable lines.
    pub async fn audit_log(&self, selector: &str) -> Result<(RunReport, String), EngineError> {
        let run_id = self.resolve_run(selector).await?;
        let state = self.load_state(&run_id).await?;
        let audit = self.store.read_audit(&run_id).await?;
        let lines = audit.lines().filter(|line| !line.trim().is_empty());
        let unreadable = lines
            .clone()
            .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_err())
            .count();
        let events = lines.count() - unreadable;
        if unreadable > 0 || (events as u64) < state.last_seq {
            self.out.warn(format!(
                "the audit log of run {run_id} has {events} of the journal's {} events and {unreadable} unreadable line(s), because a write failed (a full disk or a crash); `keywheel status {run_id}` shows every step from the journal",
                state.last_seq
            ));
        }
        Ok((RunReport::from_state(&state), audit))
    }

    /// Parses the playbook copy saved when the run started.
    async fn stored_playbook(
        &self,
        run_id: &RunId,
        started: &state::StartInfo,
    ) -> Result<Playbook, EngineError> {
        let text = self.store.playbook_text(run_id).await?;
        let path = std::path::PathBuf::from(&started.playbook_path);
        let playbook =
            playbook::parse(&path, &text).map_err(|source| EngineError::StoredPlaybook {
                run: run_id.clone(),
                source,
            })?;
        if let Ok(current) = std::fs::read(&path)
            && crate::playbook::sha256_hex(&current) != started.playbook_sha256
        {
            self.out.warn(format!(
                    "{} changed since run {run_id} started; continuing with the copy saved at the start",
                    path.display()
                ));
        }
        Ok(playbook)
    }

    async fn lock_playbook(
        &self,
        name: &str,
        run_id: &RunId,
        take_over: Option<&RunId>,
    ) -> Result<lock::PlaybookLock, EngineError> {
        match self.acquire_lock(name, run_id, take_over).await {
            Ok(lock) => Ok(lock),
            Err(StoreError::Corrupt { what, .. }) if self.options.break_lock => {
                // The lock cannot be read, so no holder can be named or
                // checked, and the operator's --break-lock decides.
                self.out.warn(format!(
                    "breaking the lock of playbook {name}: {what} cannot be read"
                ));
                self.break_and_acquire(name, run_id, take_over).await
            }
            Err(StoreError::Locked {
                holder, liveness, ..
            }) => {
                let gone = matches!(liveness, Liveness::Dead | Liveness::Expired);
                if gone && self.options.break_lock {
                    self.out.warn(format!(
                        "breaking the lock of run {} (pid {} on {}), whose process is gone",
                        holder.run_id, holder.pid, holder.host
                    ));
                    return self.break_and_acquire(name, run_id, take_over).await;
                }
                let (state, hint) = match liveness {
                    Liveness::Alive => ("running", String::new()),
                    Liveness::Dead => {
                        // A dead holder's unfinished run needs resume or
                        // rollback, which take the lock over themselves;
                        // breaking the lock would not let a new run start.
                        let hint = match self.load_state(&holder.run_id).await {
                            Ok(state) if !state.is_finished() => format!(
                                "; finish that run with `keywheel resume {0}` or undo it with `keywheel rollback {0}`",
                                holder.run_id
                            ),
                            Err(EngineError::Store(
                                err @ (StoreError::Corrupt { .. } | StoreError::MissingFile { .. }),
                            )) => format!(
                                "; that run cannot be resumed or rolled back, because {err}. Check the targets it wrote by hand, then pass --break-lock to start a new run"
                            ),
                            _ => "; that run left no unfinished work: pass --break-lock to remove the lock".to_string(),
                        };
                        ("process gone", hint)
                    }
                    Liveness::Expired => (
                        "lease expired",
                        "; pass --break-lock to remove the lock".to_string(),
                    ),
                    Liveness::Unknown => ("on another host", String::new()),
                };
                Err(EngineError::Locked {
                    playbook: name.to_string(),
                    run: holder.run_id,
                    pid: holder.pid,
                    host: holder.host,
                    state,
                    hint,
                })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Removes the lock `name`, as `--break-lock` asks, and takes it.
    async fn break_and_acquire(
        &self,
        name: &str,
        run_id: &RunId,
        take_over: Option<&RunId>,
    ) -> Result<lock::PlaybookLock, EngineError> {
        self.store.break_lock(name).await?;
        Ok(self.acquire_lock(name, run_id, take_over).await?)
    }

    async fn acquire_lock(
        &self,
        name: &str,
        run_id: &RunId,
        take_over: Option<&RunId>,
    ) -> Result<lock::PlaybookLock, StoreError> {
        let ttl = self.options.lease_ttl;
        lock::PlaybookLock::acquire(self.store.clone(), name, run_id, take_over, ttl).await
    }
}

/// What `continue_run` does once it holds the run.
#[derive(Clone, Copy, Debug)]
enum Continuation {
    /// Go on forward, or on with a rollback already under way.
    Resume,
    /// Undo the run.
    Rollback,
}

/// A playbook's issuer, targets and watch, ready to call.
struct Built {
    issuer: Box<dyn Issuer>,
    targets: Vec<Arc<dyn Target>>,
    /// The kind of each target (`vault`, `kubernetes`), by target name.
    kinds: HashMap<String, &'static str>,
    watch: Option<Arc<Watcher>>,
}

/// Builds the issuer, the target instances and the watch of a playbook,
/// collecting every setup error (missing environment variables, unreadable CA files).
///
/// This is where a playbook entry becomes its targets, and the one place
/// that may call a server before preflight: a Kubernetes namespace label
/// selector is listed here. That expansion happens only for
/// [`Selection::Current`] (a new run, or a run resumed before its preflight
/// was journaled). With [`Selection::Journaled`] the targets are exactly
/// the ones journaled at preflight: an instance the playbook would expand
/// to now but that was not journaled is left out, and a journaled one that
/// cannot be built any more is an error that names it.
async fn build(playbook: &Playbook, selection: Selection<'_>) -> Result<Built, EngineError> {
    let mut errors = Vec::new();
    let issuer = playbook.issuer.build().map_err(|err| errors.push(err)).ok();
    if let Some(verify) = &playbook.verify
        && let Err(err) = verify.check_setup()
    {
        errors.push(err);
    }
    let mut targets: Vec<Arc<dyn Target>> = Vec::new();
    let mut kinds = HashMap::new();
    let shared = crate::targets::shared::SharedClients::default();
    for spec in &playbook.targets {
        match spec.build(&selection, &shared).await {
            Ok(built) => {
                for target in built {
                    kinds.insert(target.name().to_string(), spec.kind_name());
                    targets.push(Arc::from(target));
                }
            }
            Err(err) => errors.push(err),
        }
    }
    if let Selection::Journaled(names) = selection {
        targets.retain(|target| names.iter().any(|name| name == target.name()));
        for name in names {
            if !targets.iter().any(|target| target.name() == name) {
                errors.push(SetupError {
                    field: "targets".into(),
                    message: format!(
                        "target {name} was checked at preflight, but the playbook saved with the run no longer builds it; restore that playbook entry, or finish the run by hand"
                    ),
                });
            }
        }
    }
    let watch = match playbook.watch.clone().map(Watcher::new) {
        Some(Ok(watcher)) => Some(Arc::new(watcher)),
        Some(Err(watch_errors)) => {
            errors.extend(watch_errors);
            None
        }
        None => None,
    };
    match issuer {
        Some(issuer) if errors.is_empty() => Ok(Built {
            issuer,
            targets,
            kinds,
            watch,
        }),
        _ => Err(EngineError::Setup(errors)),
    }
}

fn absolute_display(path: &std::path::Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYBOOK: &str = "version: 1
name: build-test
issuer:
  type: random
targets:
  - name: first
    type: dotenv
    path: first.env
    set:
      API_KEY: secret
  - name: second
    type: dotenv
    path: second.env
    set:
      API_KEY: secret
";

    fn playbook() -> Playbook {
        playbook::parse(std::path::Path::new("build-test.yaml"), PLAYBOOK).unwrap()
    }

    fn names(built: &Built) -> Vec<&str> {
        built.targets.iter().map(|target| target.name()).collect()
    }

    #[tokio::test]
    async fn current_selection_builds_every_target() {
        let built = build(&playbook(), Selection::Current).await.unwrap();
        assert_eq!(names(&built), ["first", "second"]);
    }

    #[tokio::test]
    async fn journaled_selection_keeps_only_journaled_targets() {
        let journaled = vec!["second".to_string()];
        let built = build(&playbook(), Selection::Journaled(&journaled))
            .await
            .unwrap();
        assert_eq!(names(&built), ["second"]);
    }

    #[tokio::test]
    async fn journaled_target_that_cannot_be_built_is_named() {
        let journaled = vec!["first".to_string(), "gone/team-a".to_string()];
        let Err(err) = build(&playbook(), Selection::Journaled(&journaled)).await else {
            panic!("a missing journaled target was ignored");
        };
        let message = err.to_string();
        assert!(
            message.contains("target gone/team-a was checked at preflight"),
            "{message}"
        );
    }
}
