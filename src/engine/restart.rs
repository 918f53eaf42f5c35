//! The restart step: after every target holds the new key, targets whose
//! consumers must be restarted restart them and wait for confirmation.
//!
//! Each target's restart is its own journaled step, `restart:TARGET`, so
//! `resume` skips a restart the journal records as done and repeats one that
//! was only announced. The marker handed to the target is the run id and the
//! step, so it is unique to the run, the target and the direction: the undo
//! step, `restart-after-restore:TARGET`, gets a different marker and so
//! starts a new rollout, while a repeated step gets the same marker again
//! and starts none.

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::EngineError;
use super::live::Live;
use super::record::{Event, Step};
use super::state::RunState;
use crate::output::fanout::{FanOut, Phase};
use crate::targets::Target;

impl Live<'_> {
    /// Restarts the consumers of every target that has some, a bounded
    /// number of targets at a time. Returns false when a restart failed; the
    /// run is then rolled back, which restores every target and restarts
    /// again.
    pub(super) async fn restart_all(&self) -> Result<bool, EngineError> {
        let state = self.state().await;
        let pending: Vec<&Arc<dyn Target>> = self
            .targets
            .iter()
            .filter(|t| {
                !t.restarts().is_empty() && !state.is_done(&Step::Restart(t.name().to_string()))
            })
            .collect();
        if pending.is_empty() {
            return Ok(true);
        }
        let fan = self.out().fan_out(
            Phase::Restart,
            pending.iter().map(|t| self.kind_of(t.as_ref())),
        );
        let results: Vec<Result<Option<String>, EngineError>> = futures_util::stream::iter(pending)
            .map(|target| {
                let state = &state;
                let fan = &fan;
                let name = target.name().to_string();
                let step = Step::Restart(name.clone());
                async move {
                    let failure = self
                        .restart_one(state, target.as_ref(), step, Some(fan))
                        .await?;
                    Ok(failure.map(|error| format!("{name}: {error}")))
                }
            })
            .buffer_unordered(self.playbook.policy.concurrency)
            .collect()
            .await;
        fan.finish();
        let mut failures = Vec::new();
        for result in results {
            if let Some(failure) = result? {
                failures.push(failure);
            }
        }
        if failures.is_empty() {
            return Ok(true);
        }
        self.abort(&format!("restart failed: {}", failures.join("; ")))
            .await?;
        Ok(false)
    }

    /// Runs one restart step, forward or undo, journaling it, and reports
    /// it to `fan`, or without one in status lines of its own. Returns the
    /// error message when it failed.
    pub(super) async fn restart_one(
        &self,
        state: &RunState,
        target: &dyn Target,
        step: Step,
        fan: Option<&FanOut<'_>>,
    ) -> Result<Option<String>, EngineError> {
        let name = target.name().to_string();
        let attempt = state.status(&step).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: step.clone(),
            attempt,
        })
        .await?;
        if fan.is_none() {
            self.out().status(
                "Restarting",
                format!("{name}: {}", target.restarts().join(", ")),
            );
        }
        let marker = format!("{}/{step}", self.journal.run_id());
        let kind = self.kind_of(target);
        let (result, elapsed) = self
            .bounded(target.restart_wait(), target.restart(&self.tcx, &marker))
            .await;
        match result {
            Ok(receipt) => {
                match fan {
                    Some(fan) => fan.succeeded(kind, &name, elapsed, &receipt.summary),
                    None => self
                        .out()
                        .status("Restarted", format!("{name}: {}", receipt.summary)),
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
                match fan {
                    Some(fan) => fan.failed(kind, &name, elapsed, &err.to_string()),
                    None => self.out().status("Failed", format!("{name}: {err}")),
                }
                self.record(Event::Failed {
                    step,
                    class: err.class().into(),
                    error: err.to_string(),
                })
                .await?;
                Ok(Some(err.to_string()))
            }
        }
    }
}
