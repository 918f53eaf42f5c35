//! The playbook's verification probes within a run.
//!
//! - In the `verify` step, after generate: the issuer's own check, then the
//!   probes. A failure rolls the run back, which only deletes the new key,
//!   because no target has it yet.
//! - In the `verify-pushed` step, once every target holds the new key: the
//!   probes again. A failure rolls back: targets are restored and the new
//!   key is deleted; the old key was never touched.
//! - In the `confirm-revoked` step, after the old key was revoked (and, with
//!   disable-then-delete, deleted): the revocation probe. A failure is a
//!   warning and a journaled `failed` outcome, not a rollback: the old key
//!   is gone at the issuer by then, so the run reports what it saw.
//!
//! Each step is journaled like the others and skipped on resume once it
//! has an outcome.

use super::EngineError;
use super::live::Live;
use super::record::{Event, Step};
use super::state::{RunState, StepStatus};
use crate::issuers::{CurrentFields, IssuerError};
use crate::key::Key;
use crate::verify::{Prober, Stage};

impl Live<'_> {
    /// Checks the new key in the `verify` step: the issuer's check, then
    /// the probes that run after generate. Returns what was checked, or
    /// `None` when nothing could be.
    pub(super) async fn check_new_key(&self, key: &Key) -> Result<Option<String>, IssuerError> {
        let issuer = self.issuer.verify(&self.icx, key).await?;
        let probes = self
            .run_probes(Stage::Generate, key)
            .await
            .map_err(IssuerError::VerificationFailed)?;
        Ok(match (issuer, probes) {
            (Some(issuer), Some(probes)) => Some(format!("{issuer}; {probes}")),
            (issuer, probes) => issuer.or(probes),
        })
    }

    async fn run_probes(&self, stage: Stage, key: &Key) -> Result<Option<String>, String> {
        let Some(spec) = &self.playbook.verify else {
            return Ok(None);
        };
        let prober = Prober::new(spec)?;
        prober.verify_new(stage, key, self.journal.run_id()).await
    }

    /// Runs the probes again once every target holds the new key. Returns
    /// false when the run stopped (rolled back).
    pub(super) async fn verify_pushed(&self, key: &Key) -> Result<bool, EngineError> {
        let runs = self
            .playbook
            .verify
            .as_ref()
            .is_some_and(|spec| spec.runs_at(Stage::Push));
        let state = self.state().await;
        if !runs || state.is_done(&Step::VerifyPushed) {
            return Ok(true);
        }
        let step = Step::VerifyPushed;
        let attempt = state.status(&step).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: step.clone(),
            attempt,
        })
        .await?;
        let spinner = self
            .engine
            .out
            .spinner(format!("Verifying key {} where the targets use it", key.id));
        let result = self.run_probes(Stage::Push, key).await;
        drop(spinner);
        match result {
            Ok(summary) => {
                let summary = summary.unwrap_or_else(|| "no probe runs after push".into());
                self.engine
                    .out
                    .status("Verified", format!("key {} after push: {summary}", key.id));
                self.record(Event::Done {
                    step,
                    summary,
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(true)
            }
            Err(message) => {
                self.record(Event::Failed {
                    step,
                    class: "verification_failed".into(),
                    error: message.clone(),
                })
                .await?;
                self.abort(&format!(
                    "the new key failed verification after push: {message}"
                ))
                .await?;
                Ok(false)
            }
        }
    }

    /// Runs the revocation probe once the old key is revoked. Returns a
    /// note for the run's summary when revocation was not confirmed.
    pub(super) async fn confirm_revoked(&self) -> Result<Option<String>, EngineError> {
        let Some(spec) = &self.playbook.verify else {
            return Ok(None);
        };
        if spec.revoked.is_none() {
            return Ok(None);
        }
        let state = self.state().await;
        let step = Step::ConfirmRevoked;
        match state.status(&step) {
            Some(StepStatus::Done { .. }) => return Ok(None),
            Some(StepStatus::Failed { error, .. }) => {
                return Ok(Some(format!("revocation not confirmed: {error}")));
            }
            _ => {}
        }
        let attempt = state.status(&step).map_or(0, |s| s.attempt()) + 1;
        let old_id = state.issuer.as_ref().and_then(|i| i.old_key_id.clone());
        let old_fields = self.old_fields(&state)?;
        self.record(Event::Intent {
            step: step.clone(),
            attempt,
        })
        .await?;
        let result = match Prober::new(spec) {
            Ok(prober) => prober
                .confirm_revoked(old_id.as_deref(), &old_fields, self.journal.run_id())
                .await
                .unwrap_or_else(|| Ok("no revocation probe".into())),
            Err(message) => Err(message),
        };
        let old = old_id.unwrap_or_else(|| "value".into());
        match result {
            Ok(summary) => {
                self.engine
                    .out
                    .status("Confirmed", format!("old key {old} is refused: {summary}"));
                self.record(Event::Done {
                    step,
                    summary,
                    detail: serde_json::Value::Null,
                })
                .await?;
                Ok(None)
            }
            Err(message) => {
                self.engine.out.warn(format!(
                    "revocation not confirmed: old key {old} may still be accepted: {message}"
                ));
                self.record(Event::Failed {
                    step,
                    class: "not_confirmed".into(),
                    error: message.clone(),
                })
                .await?;
                Ok(Some(format!("revocation not confirmed: {message}")))
            }
        }
    }

    /// The key field values the targets held before the run, from their
    /// sealed preflight snapshots.
    fn old_fields(&self, state: &RunState) -> Result<CurrentFields, EngineError> {
        let mut fields = CurrentFields::new();
        for target in &self.targets {
            let snapshot = self.snapshot_of(state, target.name())?;
            for (field, value) in target.previous_fields(&snapshot) {
                fields.entry(field).or_insert(value);
            }
        }
        Ok(fields)
    }
}
