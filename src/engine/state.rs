//! The state of a run, rebuilt by replaying its journal.
//!
//! Nothing about a run is kept anywhere but in its journal: `resume`,
//! `rollback` and `status` all start from [`RunState::replay`]. The rules of
//! the state machine live in [`RunState::apply`]:
//!
//! - `run_started` starts the forward phase; `held` pauses it; `resumed`
//!   continues whatever phase was paused.
//! - `rollback_started` switches to rolling back for good: a run that began
//!   to undo itself never goes forward again.
//! - `needs_attention` marks the run as stuck in its current phase; the
//!   operator fixes the cause and runs `resume` or `rollback` again.
//! - `finished` is final.

use std::collections::BTreeMap;

use super::record::{Event, IssuerRecord, Mode, Outcome, Record, Step, TargetRecord};
use crate::run_id::RunId;
use crate::seal::Sealed;

/// What the journal says about one step.
#[derive(Clone, Debug, PartialEq)]
pub enum StepStatus {
    /// Announced; the effect may or may not have happened.
    Started { attempt: u32, at: String },
    Done {
        summary: String,
        detail: serde_json::Value,
        at: String,
    },
    Failed {
        class: String,
        error: String,
        at: String,
    },
}

impl StepStatus {
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Done { .. })
    }

    pub fn attempt(&self) -> u32 {
        match self {
            Self::Started { attempt, .. } => *attempt,
            _ => 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Not even `run_started` was written.
    Empty,
    Forward,
    Held(String),
    RollingBack,
    NeedsAttention(Vec<String>),
    Finished(Outcome),
}

/// Facts from `run_started`.
#[derive(Clone, Debug)]
pub struct StartInfo {
    pub playbook: String,
    pub playbook_path: String,
    pub playbook_sha256: String,
    pub mode: Mode,
    pub host: String,
    pub user: String,
    pub pid: u32,
    pub seal_key_id: String,
    pub at: String,
}

#[derive(Clone, Debug)]
pub struct RunState {
    pub run_id: RunId,
    pub started: Option<StartInfo>,
    pub issuer: Option<IssuerRecord>,
    pub targets: Vec<TargetRecord>,
    /// Id and sealed value of the new key.
    pub key: Option<(String, Sealed)>,
    pub steps: BTreeMap<Step, StepStatus>,
    /// Steps in the order they were first announced.
    pub order: Vec<Step>,
    pub phase: Phase,
    pub rollback_reason: Option<String>,
    pub finished_summary: Option<String>,
    pub last_seq: u64,
    pub last_at: String,
    /// Baselines and samples of the watch.
    pub watch: super::watch_log::WatchLog,
}

impl RunState {
    pub fn new(run_id: RunId) -> Self {
        Self {
            run_id,
            started: None,
            issuer: None,
            targets: Vec::new(),
            key: None,
            steps: BTreeMap::new(),
            order: Vec::new(),
            phase: Phase::Empty,
            rollback_reason: None,
            finished_summary: None,
            last_seq: 0,
            last_at: String::new(),
            watch: Default::default(),
        }
    }

    /// Rebuilds the state from a journal's records.
    pub fn replay(run_id: RunId, records: &[Record]) -> Self {
        let mut state = Self::new(run_id);
        for record in records {
            state.apply(record);
        }
        state
    }

    /// Applies one record. See the module documentation for the rules.
    pub fn apply(&mut self, record: &Record) {
        self.last_seq = record.seq;
        self.last_at = record.at.clone();
        let at = record.at.clone();
        self.watch.apply(record);
        match &record.event {
            Event::RunStarted {
                playbook,
                playbook_path,
                playbook_sha256,
                mode,
                host,
                user,
                pid,
                seal_key_id,
                ..
            } => {
                self.started = Some(StartInfo {
                    playbook: playbook.clone(),
                    playbook_path: playbook_path.clone(),
                    playbook_sha256: playbook_sha256.clone(),
                    mode: *mode,
                    host: host.clone(),
                    user: user.clone(),
                    pid: *pid,
                    seal_key_id: seal_key_id.clone(),
                    at,
                });
                self.phase = Phase::Forward;
            }
            Event::Preflight { issuer, targets } => {
                self.issuer = Some(issuer.clone());
                self.targets = targets.clone();
            }
            Event::Intent { step, attempt } => {
                self.note_step(step);
                self.steps.insert(
                    step.clone(),
                    StepStatus::Started {
                        attempt: *attempt,
                        at,
                    },
                );
            }
            Event::Done {
                step,
                summary,
                detail,
            } => {
                self.note_step(step);
                self.steps.insert(
                    step.clone(),
                    StepStatus::Done {
                        summary: summary.clone(),
                        detail: detail.clone(),
                        at,
                    },
                );
            }
            Event::Failed { step, class, error } => {
                self.note_step(step);
                self.steps.insert(
                    step.clone(),
                    StepStatus::Failed {
                        class: class.clone(),
                        error: error.clone(),
                        at,
                    },
                );
            }
            Event::KeyCreated { key_id, key } => {
                self.key = Some((key_id.clone(), key.clone()));
            }
            Event::Held { reason } => self.phase = Phase::Held(reason.clone()),
            Event::Resumed { .. } => {
                self.phase = if self.rollback_reason.is_some() {
                    Phase::RollingBack
                } else {
                    Phase::Forward
                };
            }
            Event::RollbackStarted { reason } => {
                self.rollback_reason = Some(reason.clone());
                self.phase = Phase::RollingBack;
            }
            Event::NeedsAttention { items } => self.phase = Phase::NeedsAttention(items.clone()),
            Event::Finished { outcome, summary } => {
                self.phase = Phase::Finished(*outcome);
                self.finished_summary = Some(summary.clone());
            }
            Event::WatchBaseline { .. } | Event::WatchSample { .. } => {}
        }
    }

    fn note_step(&mut self, step: &Step) {
        if !self.steps.contains_key(step) {
            self.order.push(step.clone());
        }
    }

    pub fn status(&self, step: &Step) -> Option<&StepStatus> {
        self.steps.get(step)
    }

    pub fn is_done(&self, step: &Step) -> bool {
        self.steps.get(step).is_some_and(StepStatus::is_done)
    }

    /// Whether the step was at least announced, so its effect may exist.
    pub fn was_attempted(&self, step: &Step) -> bool {
        self.steps.contains_key(step)
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished(_))
    }

    pub fn is_rolling_back(&self) -> bool {
        self.rollback_reason.is_some()
    }

    pub fn playbook(&self) -> &str {
        self.started.as_ref().map_or("", |s| s.playbook.as_str())
    }

    /// The old key this run disabled and did not enable again, if any.
    pub fn key_left_disabled(&self) -> Option<&str> {
        if !self.is_done(&Step::Revoke) || self.is_done(&Step::Reenable) {
            return None;
        }
        self.issuer.as_ref()?.old_key_id.as_deref()
    }

    /// The journaled preflight record of `target`.
    pub fn target(&self, name: &str) -> Option<&TargetRecord> {
        self.targets.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, event: Event) -> Record {
        Record {
            seq,
            at: format!("t{seq}"),
            event,
        }
    }

    fn started() -> Event {
        crate::engine::record::run_started_for_test(
            &"20261204-120000-abcdef".parse().unwrap(),
            "demo",
        )
    }

    #[test]
    fn intent_without_outcome_is_started() {
        let push = Step::Push("t".into());
        let state = RunState::replay(
            "20261204-120000-abcdef".parse().unwrap(),
            &[
                record(1, started()),
                record(
                    2,
                    Event::Intent {
                        step: push.clone(),
                        attempt: 1,
                    },
                ),
            ],
        );
        assert_eq!(state.phase, Phase::Forward);
        assert!(state.was_attempted(&push));
        assert!(!state.is_done(&push));
    }

    #[test]
    fn resume_after_rollback_keeps_rolling_back() {
        let state = RunState::replay(
            "20261204-120000-abcdef".parse().unwrap(),
            &[
                record(1, started()),
                record(2, Event::RollbackStarted { reason: "r".into() }),
                record(
                    3,
                    Event::NeedsAttention {
                        items: vec!["x".into()],
                    },
                ),
                record(
                    4,
                    Event::Resumed {
                        host: "h".into(),
                        user: "u".into(),
                        pid: 2,
                    },
                ),
            ],
        );
        assert_eq!(state.phase, Phase::RollingBack);
    }

    fn step_event(seq: u64, step: Step, done: bool) -> Record {
        let event = if done {
            Event::Done {
                step,
                summary: String::new(),
                detail: serde_json::Value::Null,
            }
        } else {
            Event::Intent { step, attempt: 1 }
        };
        record(seq, event)
    }

    #[test]
    fn key_left_disabled_after_revoke_only() {
        let preflight = record(
            2,
            Event::Preflight {
                issuer: IssuerRecord {
                    old_key_id: Some("AKIAOLD".into()),
                    ..IssuerRecord::default()
                },
                targets: Vec::new(),
            },
        );
        let run: RunId = "20261204-120000-abcdef".parse().unwrap();
        let base = vec![record(1, started()), preflight];

        let mut revoke_started = base.clone();
        revoke_started.push(step_event(3, Step::Revoke, false));
        assert_eq!(
            RunState::replay(run.clone(), &revoke_started).key_left_disabled(),
            None
        );

        let mut revoked = base.clone();
        revoked.push(step_event(3, Step::Revoke, true));
        assert_eq!(
            RunState::replay(run.clone(), &revoked).key_left_disabled(),
            Some("AKIAOLD")
        );

        let mut reenabled = revoked.clone();
        reenabled.push(step_event(4, Step::Reenable, true));
        assert_eq!(RunState::replay(run, &reenabled).key_left_disabled(), None);
    }

    #[test]
    fn held_then_resumed_goes_forward() {
        let state = RunState::replay(
            "20261204-120000-abcdef".parse().unwrap(),
            &[
                record(1, started()),
                record(
                    2,
                    Event::Held {
                        reason: "hold".into(),
                    },
                ),
                record(
                    3,
                    Event::Resumed {
                        host: "h".into(),
                        user: "u".into(),
                        pid: 2,
                    },
                ),
            ],
        );
        assert_eq!(state.phase, Phase::Forward);
    }
}
