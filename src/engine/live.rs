//! A run in progress: the forward steps.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::journal::Journal;
use super::plan::PLAN_TARGETS_LISTED;
use super::record::{
    Event, IssuerRecord, Mode, Outcome, Step, TargetRecord, key_purpose, target_purpose,
};
use super::report::PlanTarget;
use super::state::{RunState, StepStatus};
use super::{Engine, EngineError};
use crate::issuers::{CurrentFields, Issuer, IssuerCx, IssuerError, IssuerSnapshot, Revocation};
use crate::key::Key;
use crate::output::Confirmation;
use crate::output::fanout::{FanOut, Phase};
use crate::playbook::{PartialFailure, Playbook};
use crate::secret::SecretBytes;
use crate::targets::{Snapshot, Target, TargetCx, TargetError};
use crate::watch::WatchWindow;

pub struct Live<'e> {
    pub(super) engine: &'e Engine,
    pub(super) journal: Journal,
    pub(super) playbook: Playbook,
    pub(super) issuer: Box<dyn Issuer>,
    /// In playbook order.
    pub(super) targets: Vec<Arc<dyn Target>>,
    /// The kind of each target, by target name, for progress and summaries.
    kinds: HashMap<String, &'static str>,
    pub(super) tcx: TargetCx,
    pub(super) icx: IssuerCx,
    pub(super) watch: Option<Arc<crate::watch::Watcher>>,
}

/// Describes what an emergency run changed that a rollback would undo by
/// putting the leaked key back: a push or a revoke. `None` for other runs,
/// and for emergency runs that changed nothing yet.
pub fn emergency_changes(state: &RunState) -> Option<String> {
    if state
        .started
        .as_ref()
        .is_none_or(|s| s.mode != Mode::Emergency)
    {
        return None;
    }
    if state.was_attempted(&Step::Revoke) {
        return Some("revoked the old key".to_string());
    }
    // A failed push may have written before it failed, so it counts too,
    // but it is named apart from the pushes that are done.
    let (mut pushed, mut tried) = (Vec::new(), Vec::new());
    for target in &state.targets {
        let step = Step::Push(target.name.clone());
        if state.is_done(&step) {
            pushed.push(target.name.as_str());
        } else if state.was_attempted(&step) {
            tried.push(target.name.as_str());
        }
    }
    match (pushed.is_empty(), tried.is_empty()) {
        (true, true) => None,
        (false, true) => Some(format!("pushed the new key to {}", pushed.join(", "))),
        (true, false) => Some(format!("tried to push the new key to {}", tried.join(", "))),
        (false, false) => Some(format!(
            "pushed the new key to {} and tried to push it to {}",
            pushed.join(", "),
            tried.join(", ")
        )),
    }
}

/// Returns the step that passed the point of no return, if any.
/// A retire that is done, or announced with no outcome (its delete may
/// have happened), has passed it. A retire the issuer answered with an
/// error has not: the old key should still exist, and a rollback that
/// finds it gone says so when it enables it.
pub fn point_of_no_return_passed(state: &RunState) -> Option<String> {
    match state.status(&Step::Retire) {
        Some(StepStatus::Done { .. } | StepStatus::Started { .. }) => {
            Some(Step::Retire.to_string())
        }
        Some(StepStatus::Failed { .. }) | None => None,
    }
}

/// Merges the key fields the targets hold now into the fields of the key
/// in use. With an issuer that keeps keys (`strict`), targets that hold
/// different values for one field are an error, because the issuer would
/// be asked about one key while another stays in use. The random issuer
/// keeps no keys, so there every target simply gets the new value.
pub(super) fn current_key_fields<'t>(
    fields_held: impl Iterator<Item = (&'t str, crate::targets::HeldFields)>,
    strict: bool,
) -> Result<CurrentFields, String> {
    let mut current = CurrentFields::new();
    let mut holders: std::collections::BTreeMap<String, &str> = std::collections::BTreeMap::new();
    for (target, fields) in fields_held {
        for (field, value) in fields {
            match current.get(&field) {
                Some(first) if strict && first.expose() != value.expose() => {
                    let first_holder = holders[&field];
                    let places = if first_holder == target {
                        format!(
                            "target {target} holds different values for key field `{field}` in two places"
                        )
                    } else {
                        format!(
                            "targets {first_holder} and {target} hold different values for key field `{field}`"
                        )
                    };
                    return Err(format!(
                        "{places}, so they do not hold the same key; make every place hold the key in use (or restore the one a failed rotation left behind), then run again"
                    ));
                }
                Some(_) => {}
                None => {
                    holders.insert(field.clone(), target);
                    current.insert(field, value);
                }
            }
        }
    }
    Ok(current)
}

impl<'e> Live<'e> {
    pub fn new(
        engine: &'e Engine,
        journal: Journal,
        playbook: Playbook,
        built: super::Built,
        disabled_by_earlier_runs: Vec<String>,
    ) -> Self {
        let run_id = journal.run_id().clone();
        Self {
            tcx: TargetCx {
                run_id: run_id.clone(),
                retry: engine.options.retry,
                overrides: engine.options.overrides.clone(),
            },
            icx: IssuerCx {
                run_id,
                retry: engine.options.retry,
                overrides: engine.options.overrides.clone(),
                disabled_by_earlier_runs,
            },
            engine,
            journal,
            playbook,
            issuer: built.issuer,
            targets: built.targets,
            kinds: built.kinds,
            watch: built.watch,
        }
    }

    /// Returns the kind name of `target`, such as `vault`.
    pub(super) fn kind_of(&self, target: &dyn Target) -> &'static str {
        self.kinds.get(target.name()).copied().unwrap_or("target")
    }

    /// Runs one call of a target under the playbook's `target_timeout`
    /// plus `extra`. Returns its result and how long it took.
    pub(super) async fn bounded<T>(
        &self,
        extra: Duration,
        call: impl Future<Output = Result<T, TargetError>>,
    ) -> (Result<T, TargetError>, Duration) {
        time_limited(self.playbook.policy.target_timeout + extra, call).await
    }

    pub async fn state(&self) -> RunState {
        self.journal.state().await
    }

    pub async fn is_rolling_back(&self) -> bool {
        self.journal.state().await.is_rolling_back()
    }

    /// Appends an event; a failure to write stops the run.
    pub(super) async fn record(&self, event: Event) -> Result<(), EngineError> {
        self.journal
            .append(event)
            .await
            .map(drop)
            .map_err(|source| EngineError::journal(self.journal.run_id(), source))
    }

    pub(super) fn out(&self) -> &crate::output::Output {
        &self.engine.out
    }

    /// Walks the forward steps from the first one not done.
    pub async fn forward(&self) -> Result<(), EngineError> {
        if self.state().await.issuer.is_none() && !self.preflight().await? {
            return Ok(());
        }
        if self.state().await.key.is_none() && !self.generate().await? {
            return Ok(());
        }
        let key = self.new_key().await?;
        if !self.verify(&key).await? || !self.watch_baseline().await? {
            return Ok(());
        }

        let emergency = self.is_emergency().await;
        if emergency && self.playbook.emergency.revoke_before_push && !self.revoke_early().await? {
            return Ok(());
        }

        let failures = self.push_all(&key).await?;
        if !failures.is_empty() {
            let reason = format!("push failed for {}", failures.join(", "));
            return match self.playbook.policy.on_partial_failure {
                PartialFailure::Rollback => self.abort(&reason).await,
                PartialFailure::Hold => {
                    self.out().warn(format!(
                        "holding the run: {reason}; fix the cause and run `keywheel resume {}`, or undo with `keywheel rollback {0}`",
                        self.journal.run_id()
                    ));
                    self.record(Event::Held { reason }).await
                }
            };
        }
        if !self.restart_all().await? {
            return Ok(());
        }

        if !self.verify_pushed(&key).await? {
            return Ok(());
        }

        // An emergency rotation has no overlap window: the leaked key goes
        // as soon as every target holds the new one.
        if !emergency && !self.watch_window(WatchWindow::Overlap).await? {
            return Ok(());
        }
        if !self.revoke_and_retire().await? {
            return Ok(());
        }
        let revocation_note = self.confirm_revoked().await?;
        let mut detail = format!(
            "{}: new key {} is in {} target(s)",
            self.playbook.name,
            key.id,
            self.targets.len()
        );
        if let Some(note) = revocation_note {
            detail.push_str(&format!("; {note}"));
        }
        self.out().status("Rotated", &detail);
        let summary = format!("rotated {detail}");
        self.record(Event::Finished {
            outcome: Outcome::Completed,
            summary,
        })
        .await
    }

    /// Read-only checks of every target and the issuer. Returns false when
    /// the run stopped (recorded as failed: nothing was changed).
    async fn preflight(&self) -> Result<bool, EngineError> {
        self.out().status(
            "Checking",
            format!(
                "{} target(s) and the {} issuer",
                self.targets.len(),
                self.issuer.kind()
            ),
        );
        let fan = self.out().fan_out(
            Phase::Preflight,
            self.targets.iter().map(|t| self.kind_of(t.as_ref())),
        );
        let results: Vec<_> = futures_util::stream::iter(self.targets.iter())
            .map(|target| {
                let fan = &fan;
                async move {
                    let kind = self.kind_of(target.as_ref());
                    let (result, elapsed) = self
                        .bounded(Duration::ZERO, target.preflight(&self.tcx))
                        .await;
                    match &result {
                        Ok(snapshot) => fan.succeeded(
                            kind,
                            target.name(),
                            elapsed,
                            &format!("{}: {}", target.location(), snapshot.summary),
                        ),
                        Err(err) => fan.failed(kind, target.name(), elapsed, &err.to_string()),
                    }
                    (target, result)
                }
            })
            .buffered(self.playbook.policy.concurrency)
            .collect()
            .await;
        fan.finish();

        let mut problems = Vec::new();
        let mut snapshots = Vec::new();
        for (target, result) in results {
            match result {
                Ok(snapshot) => snapshots.push((target, snapshot)),
                Err(err) => problems.push(format!("{}: {err}", target.name())),
            }
        }
        if !problems.is_empty() {
            return self
                .fail_unchanged(format!("preflight failed: {}", problems.join("; ")))
                .await;
        }

        let fields_held = snapshots
            .iter()
            .map(|(target, snapshot)| (target.name(), target.previous_fields(snapshot)));
        let strict = self.issuer.revocation() != Revocation::Replace;
        let current = match current_key_fields(fields_held, strict) {
            Ok(current) => current,
            Err(problem) => {
                return self
                    .fail_unchanged(format!("preflight failed: {problem}"))
                    .await;
            }
        };
        let issuer_snapshot = match self.issuer.preflight(&self.icx, &current).await {
            Ok(snapshot) => snapshot,
            Err(err) => {
                self.out().error(format!("issuer: {err}"));
                return self
                    .fail_unchanged(format!(
                        "preflight of the {} issuer failed: {err}",
                        self.issuer.kind()
                    ))
                    .await;
            }
        };

        let run_id = self.journal.run_id();
        let targets = snapshots
            .into_iter()
            .map(|(target, snapshot)| TargetRecord {
                name: target.name().to_string(),
                kind: self.kind_of(target.as_ref()).to_string(),
                location: target.location(),
                previous: self
                    .engine
                    .sealer
                    .seal(&target_purpose(run_id, target.name()), &snapshot.previous),
                state: snapshot.state,
                summary: snapshot.summary,
            })
            .collect();
        self.record(Event::Preflight {
            issuer: IssuerRecord {
                kind: self.issuer.kind().to_string(),
                state: issuer_snapshot.state,
                old_key_id: issuer_snapshot.old_key_id,
                summary: issuer_snapshot.summary,
            },
            targets,
        })
        .await?;
        self.show_plan().await;
        Ok(true)
    }

    /// Prints the steps this run will take, with what each target holds
    /// now, before it changes anything.
    async fn show_plan(&self) {
        let state = self.state().await;
        let mode = state.started.as_ref().map(|s| s.mode).unwrap_or_default();
        let plan_targets: Vec<PlanTarget> = state
            .targets
            .iter()
            .map(|record| PlanTarget {
                name: record.name.clone(),
                location: record.location.clone(),
                current: record.summary.clone(),
                ok: true,
            })
            .collect();
        let steps = super::plan::steps(
            &self.playbook,
            self.issuer.as_ref(),
            &self.targets,
            self.watch.as_deref(),
            &plan_targets,
            mode,
        );
        let steps = if self.out().options().verbose || self.targets.len() <= PLAN_TARGETS_LISTED {
            steps
        } else {
            super::plan::group_target_steps(steps, &self.kinds)
        };
        self.out().status("Plan", "these steps, in order:");
        self.out()
            .plain(crate::output::render::plan_steps(&steps).trim_end());
    }

    /// Ends a run that changed nothing.
    pub(super) async fn fail_unchanged(&self, summary: String) -> Result<bool, EngineError> {
        self.out()
            .error(format!("run failed, nothing was changed: {summary}"));
        self.record(Event::Finished {
            outcome: Outcome::Failed,
            summary,
        })
        .await?;
        Ok(false)
    }

    /// Makes the new key and seals it into the journal before anything
    /// else sees it.
    async fn generate(&self) -> Result<bool, EngineError> {
        let state = self.state().await;
        let snapshot = self.issuer_snapshot(&state);
        let attempt = state.status(&Step::Generate).map_or(0, |s| s.attempt()) + 1;

        if state.was_attempted(&Step::Generate) {
            // A create was announced but its key never reached the journal:
            // look for what it made before making another.
            let recovered = match self.issuer.find_created(&self.icx, &snapshot).await {
                Ok(recovered) => recovered,
                Err(err) => {
                    let message =
                        format!("cannot look for a key created before the interruption: {err}");
                    self.out().error(&message);
                    self.record(Event::NeedsAttention {
                        items: vec![message],
                    })
                    .await?;
                    return Ok(false);
                }
            };
            for orphan in recovered.orphan_ids {
                if !self.delete_orphan(&orphan).await? {
                    return Ok(false);
                }
            }
            if let Some(key) = recovered
                .key
                .filter(|key| snapshot.old_key_id.as_deref() != Some(key.id.as_str()))
            {
                self.out().status(
                    "Recovered",
                    format!("key {} created before the interruption", key.id),
                );
                self.seal_key(&key).await?;
                return Ok(true);
            }
        }

        self.record(Event::Intent {
            step: Step::Generate,
            attempt,
        })
        .await?;
        let spinner = self.out().spinner(format!(
            "Generating a key with the {} issuer",
            self.issuer.kind()
        ));
        let created = self.issuer.create(&self.icx, &snapshot).await;
        drop(spinner);
        match created {
            Ok(key) if snapshot.old_key_id.as_deref() == Some(key.id.as_str()) => {
                // Taking this answer as the new key would revoke and then
                // delete the key in use. Nothing was made that may be
                // deleted, so no orphan search either.
                let error = format!(
                    "the issuer answered create with the id of the key in use ({}); check the create operation and its `pick` of `id`",
                    key.id
                );
                self.record(Event::Failed {
                    step: Step::Generate,
                    class: "invalid_response".to_string(),
                    error: error.clone(),
                })
                .await?;
                self.fail_unchanged(error).await
            }
            Ok(key) => {
                self.seal_key(&key).await?;
                self.out().status("Generated", format!("key {}", key.id));
                Ok(true)
            }
            Err(err) => {
                self.record(Event::Failed {
                    step: Step::Generate,
                    class: err.class().to_string(),
                    error: err.to_string(),
                })
                .await?;
                self.out().error(format!("generate: {err}"));
                if let IssuerError::KeyLeftBehind(message) = &err {
                    self.record(Event::NeedsAttention {
                        items: vec![message.clone()],
                    })
                    .await?;
                    return Ok(false);
                }
                // The create may have succeeded at the issuer with its answer
                // lost; find and delete such a key.
                if let Ok(recovered) = self.issuer.find_created(&self.icx, &snapshot).await {
                    let mut orphans = recovered.orphan_ids;
                    orphans.extend(recovered.key.map(|k| k.id));
                    for orphan in orphans {
                        if !self.delete_orphan(&orphan).await? {
                            return Ok(false);
                        }
                    }
                }
                self.fail_unchanged(format!("the issuer could not create a key: {err}"))
                    .await
            }
        }
    }

    async fn seal_key(&self, key: &Key) -> Result<(), EngineError> {
        let sealed = self
            .engine
            .sealer
            .seal(&key_purpose(self.journal.run_id()), &key.to_sealable());
        self.record(Event::KeyCreated {
            key_id: key.id.clone(),
            key: sealed,
        })
        .await?;
        self.record(Event::Done {
            step: Step::Generate,
            summary: format!("created key {}", key.id),
            detail: serde_json::Value::Null,
        })
        .await
    }

    async fn delete_orphan(&self, key_id: &str) -> Result<bool, EngineError> {
        let Some(message) = self.delete_orphan_step(key_id).await? else {
            return Ok(true);
        };
        self.out().error(&message);
        self.record(Event::NeedsAttention {
            items: vec![message],
        })
        .await?;
        Ok(false)
    }

    /// Deletes a key that a create made before an interruption, as a
    /// journaled step. Returns what the operator must do when it failed.
    pub(super) async fn delete_orphan_step(
        &self,
        key_id: &str,
    ) -> Result<Option<String>, EngineError> {
        if self.is_old_key(key_id).await {
            return Ok(Some(format!(
                "the issuer reported key {key_id}, the key in use, as one this run created; keywheel does not delete it: check the issuer's list and run tag"
            )));
        }
        let step = Step::DeleteOrphan(key_id.to_string());
        let attempt = self.state().await.status(&step).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: step.clone(),
            attempt,
        })
        .await?;
        match self.issuer.delete(&self.icx, key_id).await {
            Ok(()) => {
                self.out().status(
                    "Deleted",
                    format!("key {key_id}, created before an interruption"),
                );
                self.record(Event::Done {
                    step,
                    summary: "deleted".into(),
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(None)
            }
            Err(err) => {
                self.record(Event::Failed {
                    step,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                Ok(Some(format!(
                    "key {key_id} was created by this run but its secret is lost, and deleting it failed: {err}; delete it at the issuer by hand, or fix the cause and run `keywheel resume {0}` or `keywheel rollback {0}` again",
                    self.journal.run_id()
                )))
            }
        }
    }

    /// Unseals the new key from the journal.
    pub(super) async fn new_key(&self) -> Result<Key, EngineError> {
        let state = self.state().await;
        let Some((_, sealed)) = state.key.clone() else {
            return Err(corrupt(&state, "the run has no new key"));
        };
        let bytes = self
            .engine
            .sealer
            .open(&key_purpose(&state.run_id), &sealed)?;
        Key::from_sealable(&bytes).map_err(|reason| corrupt(&state, &reason))
    }

    pub(super) fn issuer_snapshot(&self, state: &RunState) -> IssuerSnapshot {
        let record = state.issuer.clone().unwrap_or_default();
        IssuerSnapshot {
            state: record.state,
            old_key_id: record.old_key_id,
            summary: record.summary,
        }
    }

    /// Unseals the preflight snapshot of a target.
    pub(super) fn snapshot_of(
        &self,
        state: &RunState,
        name: &str,
    ) -> Result<Snapshot, EngineError> {
        let record = state
            .target(name)
            .ok_or_else(|| corrupt(state, &format!("target {name} has no preflight record")))?;
        let previous: SecretBytes = self
            .engine
            .sealer
            .open(&target_purpose(&state.run_id, name), &record.previous)?;
        Ok(Snapshot {
            state: record.state.clone(),
            previous,
            summary: record.summary.clone(),
        })
    }

    /// Lets the issuer and the playbook's probes check the new key. On
    /// failure the run is rolled back: nothing was pushed yet, so only the
    /// new key goes.
    async fn verify(&self, key: &Key) -> Result<bool, EngineError> {
        let state = self.state().await;
        if state.is_done(&Step::Verify) {
            return Ok(true);
        }
        let attempt = state.status(&Step::Verify).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: Step::Verify,
            attempt,
        })
        .await?;
        let spinner = self.out().spinner(format!("Verifying key {}", key.id));
        let result = self.check_new_key(key).await;
        drop(spinner);
        match result {
            Ok(checked) => {
                let summary = match checked {
                    Some(summary) => {
                        self.out()
                            .status("Verified", format!("key {}: {summary}", key.id));
                        summary
                    }
                    None => format!(
                        "skipped: the {} issuer has no way to check a key, and the playbook has no probes",
                        self.issuer.kind()
                    ),
                };
                self.record(Event::Done {
                    step: Step::Verify,
                    summary,
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(true)
            }
            Err(err) => {
                self.record(Event::Failed {
                    step: Step::Verify,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                self.abort(&format!("the new key failed verification: {err}"))
                    .await?;
                Ok(false)
            }
        }
    }

    /// Pushes the key to every target not yet done, a bounded number at a
    /// time. Returns the names of the targets that failed.
    async fn push_all(&self, key: &Key) -> Result<Vec<String>, EngineError> {
        let state = self.state().await;
        let is_done = |t: &&Arc<dyn Target>| state.is_done(&Step::Push(t.name().to_string()));
        let pending: Vec<&Arc<dyn Target>> = self.targets.iter().filter(|t| !is_done(t)).collect();
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let kinds = self.targets.iter().map(|t| self.kind_of(t.as_ref()));
        let fan = self.out().fan_out(Phase::Push, kinds);
        for target in self.targets.iter().filter(is_done) {
            fan.skipped(self.kind_of(target.as_ref()));
        }
        // Under the rollback policy a failed push will be undone anyway, so
        // no further push starts once one has failed; pushes in flight
        // finish. Under hold, every target is tried.
        let stop_on_failure = self.playbook.policy.on_partial_failure == PartialFailure::Rollback;
        let failed = std::sync::atomic::AtomicBool::new(false);
        let results: Vec<Result<Option<String>, EngineError>> = futures_util::stream::iter(pending)
            .map(|target| {
                let state = &state;
                let fan = &fan;
                let failed = &failed;
                async move {
                    if stop_on_failure && failed.load(std::sync::atomic::Ordering::SeqCst) {
                        fan.not_started(self.kind_of(target.as_ref()));
                        return Ok(None);
                    }
                    let result = self.push_one(state, target.as_ref(), key, fan).await;
                    if matches!(result, Ok(Some(_))) {
                        failed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    result
                }
            })
            .buffer_unordered(self.playbook.policy.concurrency)
            .collect()
            .await;
        fan.finish();
        let mut failures = Vec::new();
        for result in results {
            if let Some(name) = result? {
                failures.push(name);
            }
        }
        Ok(failures)
    }

    /// Pushes one target. Returns its name when it failed.
    async fn push_one(
        &self,
        state: &RunState,
        target: &dyn Target,
        key: &Key,
        fan: &FanOut<'_>,
    ) -> Result<Option<String>, EngineError> {
        let name = target.name().to_string();
        let step = Step::Push(name.clone());
        let attempt = state.status(&step).map_or(0, |s| s.attempt()) + 1;
        let snapshot = self.snapshot_of(state, &name)?;
        self.record(Event::Intent {
            step: step.clone(),
            attempt,
        })
        .await?;
        let kind = self.kind_of(target);
        let (result, elapsed) = self
            .bounded(Duration::ZERO, target.push(&self.tcx, &snapshot, key))
            .await;
        match result {
            Ok(receipt) => {
                fan.succeeded(kind, &name, elapsed, &receipt.summary);
                self.record(Event::Done {
                    step,
                    summary: receipt.summary,
                    detail: receipt.state,
                })
                .await?;
                Ok(None)
            }
            Err(err) => {
                fan.failed(kind, &name, elapsed, &err.to_string());
                self.record(Event::Failed {
                    step,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                Ok(Some(name))
            }
        }
    }

    /// Revokes and retires the old key as the issuer allows. Returns false
    /// when the run stopped (held before the point of no return, or rolled
    /// back).
    async fn revoke_and_retire(&self) -> Result<bool, EngineError> {
        let revocation = self.issuer.revocation();
        if revocation == Revocation::Replace {
            return Ok(true);
        }
        let state = self.state().await;
        let Some(old_id) = state.issuer.as_ref().and_then(|i| i.old_key_id.clone()) else {
            self.out()
                .warn("the issuer found no old key to revoke; only the new key was put in place");
            return Ok(true);
        };
        let emergency = self.is_emergency().await;
        if revocation == Revocation::DisableThenDelete {
            if !self.disable_old(&old_id).await? {
                return Ok(false);
            }
            if !emergency && !self.watch_window(WatchWindow::AfterRevoke).await? {
                return Ok(false);
            }
        }
        if !self.retire_old(&old_id).await? {
            return Ok(false);
        }
        // A leaked key is deleted at once; the watch only reports after it.
        if emergency {
            return self.watch_window(WatchWindow::AfterRevoke).await;
        }
        Ok(true)
    }

    /// Disables the old key (the revoke step), unless the journal says it
    /// is done. Returns false when the run stopped.
    async fn disable_old(&self, old_id: &str) -> Result<bool, EngineError> {
        let state = self.state().await;
        if state.is_done(&Step::Revoke) {
            return Ok(true);
        }
        let attempt = state.status(&Step::Revoke).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: Step::Revoke,
            attempt,
        })
        .await?;
        match self.issuer.disable(&self.icx, old_id).await {
            Ok(()) => {
                self.out().status("Disabled", format!("old key {old_id}"));
                self.record(Event::Done {
                    step: Step::Revoke,
                    summary: format!("disabled {old_id}"),
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(true)
            }
            Err(err) => {
                self.record(Event::Failed {
                    step: Step::Revoke,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                self.abort(&format!("disabling the old key failed: {err}"))
                    .await?;
                Ok(false)
            }
        }
    }

    /// Deletes the old key (the retire step, the point of no return) after
    /// asking, unless the journal says it is done. Returns false when the
    /// run stopped.
    async fn retire_old(&self, old_id: &str) -> Result<bool, EngineError> {
        let state = self.state().await;
        if state.is_done(&Step::Retire) {
            return Ok(true);
        }
        if !self.confirm_point_of_no_return(old_id).await? {
            return Ok(false);
        }
        let attempt = state.status(&Step::Retire).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: Step::Retire,
            attempt,
        })
        .await?;
        match self.issuer.delete(&self.icx, old_id).await {
            Ok(()) => {
                self.out().status("Deleted", format!("old key {old_id}"));
                self.record(Event::Done {
                    step: Step::Retire,
                    summary: format!("deleted {old_id}"),
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(true)
            }
            Err(err) => {
                self.record(Event::Failed {
                    step: Step::Retire,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                let message = format!(
                    "the new key is in place, but deleting old key {old_id} failed: {err}; run `keywheel resume {}` to retry",
                    self.journal.run_id()
                );
                self.out().error(&message);
                self.record(Event::NeedsAttention {
                    items: vec![message],
                })
                .await?;
                Ok(false)
            }
        }
    }

    /// Whether `key_id` is the id of the key in use at preflight: such a key
    /// is never deleted as a new or orphan key.
    pub(super) async fn is_old_key(&self, key_id: &str) -> bool {
        self.state()
            .await
            .issuer
            .and_then(|issuer| issuer.old_key_id)
            .is_some_and(|old| old == key_id)
    }

    /// Whether the run was started with `--emergency`.
    pub(super) async fn is_emergency(&self) -> bool {
        self.state()
            .await
            .started
            .is_some_and(|started| started.mode == Mode::Emergency)
    }

    /// Ends the forward walk after a failure. Normally that is a rollback.
    /// An emergency rotation never puts a leaked key back, so it is held
    /// instead, with the reason and what to do.
    pub(super) async fn abort(&self, reason: &str) -> Result<(), EngineError> {
        if !self.is_emergency().await {
            return self.roll_back(Some(reason)).await;
        }
        let reason = format!(
            "{reason}; this is an emergency rotation, so keywheel does not put the leaked key back: fix the cause and run `keywheel resume {}`",
            self.journal.run_id()
        );
        self.out().warn(format!("holding the run: {reason}"));
        self.record(Event::Held { reason }).await
    }

    /// Revokes the old key before the push, for a leak that is being
    /// abused: disabled where the issuer can, otherwise deleted. Returns
    /// false when the run stopped.
    async fn revoke_early(&self) -> Result<bool, EngineError> {
        let state = self.state().await;
        let Some(old_id) = state.issuer.as_ref().and_then(|i| i.old_key_id.clone()) else {
            return Ok(true);
        };
        match self.issuer.revocation() {
            Revocation::Replace => Ok(true),
            Revocation::DisableThenDelete => self.disable_old(&old_id).await,
            Revocation::DeleteOnly => self.retire_old(&old_id).await,
        }
    }

    /// Asks before deleting the old key. Without a terminal and without
    /// `--yes`, the run is held there instead. An emergency rotation does
    /// not ask: the old key is leaked, and the operator chose to revoke fast.
    async fn confirm_point_of_no_return(&self, old_id: &str) -> Result<bool, EngineError> {
        if self.is_emergency().await {
            self.out().status(
                "Retiring",
                format!("leaked key {old_id} without asking (emergency)"),
            );
            return Ok(true);
        }
        let question = match self.issuer.revocation() {
            Revocation::DeleteOnly => format!(
                "Delete old key {old_id}? The issuer cannot disable keys, so this revokes it, and after this the rotation cannot be rolled back."
            ),
            _ => format!("Delete old key {old_id}? After this the rotation cannot be rolled back."),
        };
        // Read on a blocking thread, so that Ctrl-C, watched by the
        // command's main task, still stops the process at the question.
        let out = self.engine.out.clone();
        let answer = tokio::task::spawn_blocking(move || out.confirm(&question))
            .await
            .unwrap_or(Confirmation::CannotAsk);
        let reason = match answer {
            Confirmation::Yes => return Ok(true),
            Confirmation::No => "the operator declined to delete the old key".to_string(),
            Confirmation::CannotAsk => "stopped before deleting the old key, the point of no return: no terminal to ask on; pass --yes to go on without asking".to_string(),
        };
        self.out().warn(format!(
            "{reason}; run `keywheel resume {} --yes` to finish, or `keywheel rollback {0}` to undo",
            self.journal.run_id()
        ));
        self.record(Event::Held { reason }).await?;
        Ok(false)
    }
}

/// Runs `call`, stopping it after `limit` with [`TargetError::TimedOut`].
/// Returns its result and how long it took.
async fn time_limited<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, TargetError>>,
) -> (Result<T, TargetError>, Duration) {
    // tokio's clock, which tests can pause and advance.
    let started = tokio::time::Instant::now();
    // NOTE: the timeout can only stop a call where it awaits. The file and
    // dotenv targets do blocking file I/O between awaits, so a hung file
    // system holds their call, and the run, past the limit.
    let result = match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(TargetError::TimedOut(limit)),
    };
    (result, started.elapsed())
}

fn corrupt(state: &RunState, reason: &str) -> EngineError {
    EngineError::Store(crate::store::StoreError::Corrupt {
        what: format!("journal of run {}", state.run_id),
        line: state.last_seq as usize,
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn call_past_its_limit_times_out() {
        let (result, elapsed) = time_limited(
            Duration::from_secs(90),
            std::future::pending::<Result<(), TargetError>>(),
        )
        .await;
        let Err(err) = result else {
            panic!("a call that never ends succeeded");
        };
        assert_eq!(err.class(), "timed_out");
        assert!(
            err.to_string().starts_with("timed out after 1m30s; "),
            "{err}"
        );
        assert_eq!(elapsed, Duration::from_secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn call_within_its_limit_keeps_its_result() {
        let call = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, TargetError>(7)
        };
        let (result, elapsed) = time_limited(Duration::from_secs(10), call).await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(elapsed, Duration::from_secs(5));
    }
}
