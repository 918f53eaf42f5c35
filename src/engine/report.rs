//! Summaries of runs for people and for `--json`.
//!
//! The JSON shape of [`RunReport`] is part of keywheel's interface: fields
//! are only ever added, never renamed or removed.

use serde::Serialize;

use super::record::{Outcome, Step, TargetRecord};
use super::state::{Phase, RunState, StepStatus};

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    RolledBack,
    Failed,
    Held,
    NeedsAttention,
    /// Unfinished with no outcome recorded: running now, or its process
    /// died (crash, kill -9).
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::RolledBack => "rolled back",
            Self::Failed => "failed",
            Self::Held => "held",
            Self::NeedsAttention => "needs attention",
            Self::Interrupted => "interrupted",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::RolledBack | Self::Failed)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    pub step: String,
    /// `started`, `done` or `failed`.
    pub status: &'static str,
    pub detail: String,
    pub at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetReport {
    pub name: String,
    /// The target's kind, such as `vault`; empty for runs journaled before
    /// kinds were recorded.
    pub kind: String,
    pub location: String,
    /// `pending`, `pushing`, `pushed`, `push_failed`, `restoring`,
    /// `restored` or `restore_failed`: the latest step's outcome.
    pub status: &'static str,
    pub detail: String,
    /// The push's own outcome, kept after a restore: `pending`, `pushing`,
    /// `pushed` or `push_failed`.
    pub push: &'static str,
    /// The push's summary, or its error when it failed.
    pub push_detail: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub playbook: String,
    pub status: RunStatus,
    pub mode: String,
    pub started_at: String,
    pub updated_at: String,
    pub host: String,
    pub user: String,
    /// One sentence on how the run ended or where it stands.
    pub message: String,
    pub new_key_id: Option<String>,
    pub old_key_id: Option<String>,
    pub targets: Vec<TargetReport>,
    pub steps: Vec<StepReport>,
    /// What the operator must look at, when anything.
    pub attention: Vec<String>,
    /// Baselines and every sample of the watch windows, with verdicts.
    pub watch: super::watch_log::WatchLog,
}

impl RunReport {
    pub fn from_state(state: &RunState) -> Self {
        let started = state.started.as_ref();
        let (status, message, attention) = match &state.phase {
            Phase::Finished(outcome) => {
                let status = match outcome {
                    Outcome::Completed => RunStatus::Completed,
                    Outcome::RolledBack => RunStatus::RolledBack,
                    Outcome::Failed => RunStatus::Failed,
                };
                (
                    status,
                    state.finished_summary.clone().unwrap_or_default(),
                    Vec::new(),
                )
            }
            Phase::Held(reason) => (
                RunStatus::Held,
                format!("{reason}; {}", next_steps(state)),
                Vec::new(),
            ),
            Phase::NeedsAttention(items) => (
                RunStatus::NeedsAttention,
                format!("{} item(s) need attention", items.len()),
                items.clone(),
            ),
            Phase::RollingBack => (
                RunStatus::Interrupted,
                format!(
                    "interrupted while rolling back ({}); run `keywheel rollback {}` to finish",
                    state.rollback_reason.clone().unwrap_or_default(),
                    state.run_id
                ),
                Vec::new(),
            ),
            Phase::Forward | Phase::Empty => (
                RunStatus::Interrupted,
                format!("unfinished; {}", next_steps(state)),
                Vec::new(),
            ),
        };
        let targets = state
            .targets
            .iter()
            .map(|target| target_report(state, target))
            .collect();
        let steps = state
            .order
            .iter()
            .filter_map(|step| state.status(step).map(|status| step_report(step, status)))
            .collect();
        Self {
            run_id: state.run_id.to_string(),
            playbook: state.playbook().to_string(),
            status,
            mode: started
                .map_or("normal", |s| match s.mode {
                    super::record::Mode::Normal => "normal",
                    super::record::Mode::Emergency => "emergency",
                })
                .to_string(),
            started_at: started.map(|s| s.at.clone()).unwrap_or_default(),
            updated_at: state.last_at.clone(),
            host: started.map(|s| s.host.clone()).unwrap_or_default(),
            user: started.map(|s| s.user.clone()).unwrap_or_default(),
            message,
            new_key_id: state.key.as_ref().map(|(id, _)| id.clone()),
            old_key_id: state.issuer.as_ref().and_then(|i| i.old_key_id.clone()),
            targets,
            steps,
            attention,
            watch: state.watch.clone(),
        }
    }
}

/// The commands that take an unfinished run on. A rollback is not offered
/// once the old key is deleted, nor for an emergency run that already
/// pushed or revoked, since it would put the leaked key back.
fn next_steps(state: &RunState) -> String {
    let run = &state.run_id;
    if let Some(step) = super::live::point_of_no_return_passed(state) {
        return format!(
            "run `keywheel resume {run}` to finish it; it cannot be rolled back, because the step that deletes the old key ({step}) has started"
        );
    }
    if let Some(changed) = super::live::emergency_changes(state) {
        return format!(
            "run `keywheel resume {run}` to finish it (this emergency rotation has {changed}, so it is not rolled back)"
        );
    }
    format!("run `keywheel resume {run}` to finish it or `keywheel rollback {run}` to undo it")
}

fn step_report(step: &Step, status: &StepStatus) -> StepReport {
    let (name, detail, at) = match status {
        StepStatus::Started { attempt, at } => ("started", format!("attempt {attempt}"), at),
        StepStatus::Done { summary, at, .. } => ("done", summary.clone(), at),
        StepStatus::Failed { error, at, .. } => ("failed", error.clone(), at),
    };
    StepReport {
        step: step.to_string(),
        status: name,
        detail,
        at: at.clone(),
    }
}

fn target_report(state: &RunState, target: &TargetRecord) -> TargetReport {
    let name = target.name.as_str();
    let restore = state.status(&Step::Restore(name.to_string()));
    let push = state.status(&Step::Push(name.to_string()));
    let (push, push_detail) = match push {
        Some(StepStatus::Done { summary, .. }) => ("pushed", summary.clone()),
        Some(StepStatus::Failed { error, .. }) => ("push_failed", error.clone()),
        Some(StepStatus::Started { .. }) => ("pushing", String::new()),
        None => ("pending", String::new()),
    };
    let (status, detail) = match restore {
        Some(StepStatus::Done {
            summary, detail, ..
        }) if crate::targets::Receipt::was_left_alone(detail) => ("left_alone", summary.clone()),
        Some(StepStatus::Done { summary, .. }) => ("restored", summary.clone()),
        Some(StepStatus::Failed { error, .. }) => ("restore_failed", error.clone()),
        Some(StepStatus::Started { .. }) => ("restoring", String::new()),
        None => (push, push_detail.clone()),
    };
    TargetReport {
        name: name.to_string(),
        kind: target.kind.clone(),
        location: target.location.clone(),
        status,
        detail,
        push,
        push_detail,
    }
}

/// What `plan` shows: every step a run would take.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    pub playbook: String,
    pub issuer: String,
    pub issuer_summary: String,
    pub targets: Vec<PlanTarget>,
    pub steps: Vec<PlanStep>,
    /// Problems found by the read-only checks; a run would stop on them.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanTarget {
    pub name: String,
    pub location: String,
    /// What preflight found (current version, file mode), or the problem.
    pub current: String,
    pub ok: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanStep {
    pub step: String,
    pub description: String,
    pub point_of_no_return: bool,
}
