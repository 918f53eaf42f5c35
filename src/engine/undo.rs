//! Rolling a run back.
//!
//! Undo runs in reverse order of the forward steps: enable the old key again
//! if it was disabled, then restore every target, then delete the new key at
//! the issuer. A target whose consumers were restarted gets them restarted
//! again after its restore, so that they load the previous value. It covers
//! every step that was at least announced, because an intent without an
//! outcome may have had its effect: a generate announced without a recorded
//! key makes the issuer look for the keys this run created
//! ([`crate::issuers::Issuer::find_created`]) and delete them. Each undo step
//! is itself journaled, so an interrupted rollback continues where it
//! stopped. When a step cannot be undone, the run is marked as needing
//! attention with what failed and what to do; running `rollback` again
//! retries it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::EngineError;
use super::live::Live;
use super::record::{Event, Outcome, Step};
use super::state::RunState;
use crate::issuers::Revocation;
use crate::key::Key;
use crate::output::fanout::{FanOut, Phase};
use crate::targets::{Receipt, Target};

/// The rollback reason journaled for `keywheel rollback`.
pub(super) const OPERATOR_REQUEST: &str = "requested by the operator";

impl Live<'_> {
    /// Rolls the run back. `reason` starts the rollback; `None` continues
    /// one already started.
    pub async fn roll_back(&self, reason: Option<&str>) -> Result<(), EngineError> {
        let state = self.state().await;
        if !state.is_rolling_back() {
            let reason = reason.unwrap_or("rollback requested").to_string();
            // The operator's own request is no cause for a warning.
            if reason != OPERATOR_REQUEST {
                self.out_warn(format!("rolling back: {reason}"));
            }
            self.record(Event::RollbackStarted { reason }).await?;
        }
        let key = match self.state().await.key {
            Some(_) => Some(self.new_key().await?),
            None => None,
        };
        let mut attention = self.delete_unrecorded_keys().await?;

        if let Some(item) = self.reenable_old_key().await? {
            // Restoring now would put a disabled key into every target.
            // They keep the new key, which works, until the old one is
            // enabled and the rollback runs again.
            attention.push(item);
        } else if let Some(key) = &key {
            attention.extend(self.restore_all(key).await?);
        }
        if attention.is_empty()
            && let Some(key) = &key
            && let Some(item) = self.delete_new_key(key).await?
        {
            attention.push(item);
        }

        if !attention.is_empty() {
            for item in &attention {
                self.engine.out.error(item);
            }
            return self
                .record(Event::NeedsAttention { items: attention })
                .await;
        }
        let left_alone = self.targets_left_alone().await;
        let summary = match (&key, left_alone.is_empty()) {
            (Some(key), true) => format!(
                "every target holds its previous value again and new key {} is gone",
                key.id
            ),
            (Some(key), false) => format!(
                "new key {} is gone and every other target holds its previous value again; someone else changed {} after preflight, so keywheel left {} alone",
                key.id,
                left_alone.join(", "),
                if left_alone.len() == 1 { "it" } else { "them" }
            ),
            (None, _) => "nothing had been changed".to_string(),
        };
        self.engine
            .out
            .status("Rolled back", format!("{}: {summary}", self.playbook.name));
        self.record(Event::Finished {
            outcome: Outcome::RolledBack,
            summary,
        })
        .await
    }

    /// Deletes keys that a create made before a crash cut its journal
    /// record short. Without this, a rollback of such a run would leave a
    /// working key at the issuer that nothing records.
    async fn delete_unrecorded_keys(&self) -> Result<Vec<String>, EngineError> {
        let state = self.state().await;
        if state.key.is_some() || !state.was_attempted(&Step::Generate) || state.issuer.is_none() {
            return Ok(Vec::new());
        }
        let snapshot = self.issuer_snapshot(&state);
        let recovered = match self.issuer.find_created(&self.icx, &snapshot).await {
            Ok(recovered) => recovered,
            Err(err) => {
                return Ok(vec![format!(
                    "cannot look for a key created before the interruption: {err}; delete any key this run made at the issuer, then run `keywheel rollback {}` again",
                    self.journal.run_id()
                )]);
            }
        };
        let mut ids = recovered.orphan_ids;
        ids.extend(recovered.key.map(|key| key.id));
        let mut attention = Vec::new();
        for id in ids {
            if state.is_done(&Step::DeleteOrphan(id.clone())) {
                continue;
            }
            attention.extend(self.delete_orphan_step(&id).await?);
        }
        Ok(attention)
    }

    /// Names the targets whose restore found a value written by someone
    /// else and left it alone, as their receipts say.
    async fn targets_left_alone(&self) -> Vec<String> {
        let state = self.state().await;
        self.targets
            .iter()
            .map(|target| target.name().to_string())
            .filter(|name| {
                                matches!(
                    state.status(&Step::Restore(name.clone())),
                    Some(super::state::StepStatus::Done { detail, .. }) if Receipt::was_left_alone(detail)
                )
            })
            .collect()
    }

    fn out_warn(&self, message: String) {
        self.engine.out.warn(message);
    }

    /// Enables the old key again if revoke was at least announced.
    async fn reenable_old_key(&self) -> Result<Option<String>, EngineError> {
        let state = self.state().await;
        if !state.was_attempted(&Step::Revoke) || state.is_done(&Step::Reenable) {
            return Ok(None);
        }
        let Some(old_id) = state.issuer.as_ref().and_then(|i| i.old_key_id.clone()) else {
            return Ok(None);
        };
        let attempt = state.status(&Step::Reenable).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: Step::Reenable,
            attempt,
        })
        .await?;
        match self.issuer.enable(&self.icx, &old_id).await {
            Ok(()) => {
                self.engine
                    .out
                    .status("Enabled", format!("old key {old_id} again"));
                self.record(Event::Done {
                    step: Step::Reenable,
                    summary: format!("enabled {old_id}"),
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(None)
            }
            Err(err) => {
                self.record(Event::Failed {
                    step: Step::Reenable,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                Ok(Some(format!(
                    "old key {old_id} is still disabled: enabling it failed: {err}; the targets keep the new key, which works; enable the old key at the issuer, then run `keywheel rollback {}` again",
                    self.journal.run_id()
                )))
            }
        }
    }

    /// Restores every target whose push was at least announced, then
    /// restarts again the consumers of those whose restart was.
    async fn restore_all(&self, key: &Key) -> Result<Vec<String>, EngineError> {
        let state = self.state().await;
        let pending: Vec<&Arc<dyn Target>> = self
            .targets
            .iter()
            .filter(|t| needs_restore(&state, t.name()) || needs_restart_again(&state, t.name()))
            .collect();
        let restores = pending
            .iter()
            .filter(|t| needs_restore(&state, t.name()))
            .map(|t| self.kind_of(t.as_ref()));
        let fan = self.out().fan_out(Phase::Restore, restores);
        let results: Vec<Result<Option<String>, EngineError>> = futures_util::stream::iter(pending)
            .map(|target| {
                let state = &state;
                let fan = &fan;
                async move { self.undo_target(state, target.as_ref(), key, fan).await }
            })
            .buffer_unordered(self.playbook.policy.concurrency)
            .collect()
            .await;
        fan.finish();
        let mut attention = Vec::new();
        for result in results {
            if let Some(item) = result? {
                attention.push(item);
            }
        }
        Ok(attention)
    }

    /// Restores one target, then restarts its consumers again. Returns what
    /// needs attention when either failed.
    async fn undo_target(
        &self,
        state: &RunState,
        target: &dyn Target,
        key: &Key,
        fan: &FanOut<'_>,
    ) -> Result<Option<String>, EngineError> {
        let name = target.name();
        if needs_restore(state, name)
            && let Some(item) = self.restore_one(state, target, key, fan).await?
        {
            return Ok(Some(item));
        }
        if !needs_restart_again(state, name) {
            return Ok(None);
        }
        let step = Step::RestartAfterRestore(name.to_string());
        let failure = self.restart_one(state, target, step, None).await?;
        Ok(failure.map(|error| {
            format!(
                "target {name} holds its previous value again, but restarting its consumers failed: {error}; fix the rollout, then run `keywheel rollback {}` again",
                self.journal.run_id()
            )
        }))
    }

    async fn restore_one(
        &self,
        state: &RunState,
        target: &dyn Target,
        key: &Key,
        fan: &FanOut<'_>,
    ) -> Result<Option<String>, EngineError> {
        let name = target.name().to_string();
        let step = Step::Restore(name.clone());
        let attempt = state.status(&step).map_or(0, |s| s.attempt()) + 1;
        let snapshot = self.snapshot_of(state, &name)?;
        self.record(Event::Intent {
            step: step.clone(),
            attempt,
        })
        .await?;
        let kind = self.kind_of(target);
        let (result, elapsed) = self
            .bounded(Duration::ZERO, target.restore(&self.tcx, &snapshot, key))
            .await;
        match result {
            Ok(receipt) => {
                if Receipt::was_left_alone(&receipt.state) {
                    fan.left_alone(kind, &name, elapsed, &receipt.summary);
                } else {
                    fan.succeeded(kind, &name, elapsed, &receipt.summary);
                }
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
                Ok(Some(format!(
                    "target {name} ({}) may still hold the new key: restoring it failed: {err}; fix the cause and run `keywheel rollback {}` again",
                    target.location(),
                    self.journal.run_id()
                )))
            }
        }
    }

    /// Deletes the new key at the issuer, once no target holds it.
    async fn delete_new_key(&self, key: &Key) -> Result<Option<String>, EngineError> {
        if self.is_old_key(&key.id).await {
            return Ok(Some(format!(
                "the new key has the id of the key in use ({}), so keywheel does not delete it; check the issuer's create answer",
                key.id
            )));
        }
        let state = self.state().await;
        if self.issuer.revocation() == Revocation::Replace || state.is_done(&Step::DeleteNew) {
            return Ok(None);
        }
        let attempt = state.status(&Step::DeleteNew).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: Step::DeleteNew,
            attempt,
        })
        .await?;
        match self.issuer.delete(&self.icx, &key.id).await {
            Ok(()) => {
                self.engine
                    .out
                    .status("Deleted", format!("new key {}", key.id));
                self.record(Event::Done {
                    step: Step::DeleteNew,
                    summary: format!("deleted {}", key.id),
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(None)
            }
            Err(err) => {
                self.record(Event::Failed {
                    step: Step::DeleteNew,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                Ok(Some(format!(
                    "new key {} still exists at the issuer: deleting it failed: {err}; delete it by hand or run `keywheel rollback {}` again",
                    key.id,
                    self.journal.run_id()
                )))
            }
        }
    }
}

fn needs_restore(state: &RunState, target: &str) -> bool {
    state.was_attempted(&Step::Push(target.to_string()))
        && !state.is_done(&Step::Restore(target.to_string()))
}

/// Checks whether the target's consumers may have loaded the new key and
/// were not restarted since the restore.
fn needs_restart_again(state: &RunState, target: &str) -> bool {
    state.was_attempted(&Step::Restart(target.to_string()))
        && !state.is_done(&Step::RestartAfterRestore(target.to_string()))
}
