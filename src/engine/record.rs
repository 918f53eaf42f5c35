//! Journal records: the events of a run, in the order they happened.
//!
//! Every side effect is announced by an [`Event::Intent`] that is durable
//! before the effect starts, and confirmed by [`Event::Done`] or
//! [`Event::Failed`] after it. A crash between the two leaves an intent
//! without an outcome, which tells `resume` and `rollback` that the effect
//! may or may not have happened, so they repeat it idempotently.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::run_id::RunId;
use crate::seal::Sealed;
use crate::watch::WatchWindow;
use crate::watch::sample::Sample;

/// One step of a run, forward or undo. Written as `kind` or `kind:target`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    Generate,
    /// Delete a key that a crashed create left behind at the issuer.
    DeleteOrphan(String),
    Verify,
    Push(String),
    /// Restart a target's consumers once every target is pushed.
    Restart(String),
    /// The probes again, once every target holds the new key.
    VerifyPushed,
    Revoke,
    Retire,
    /// The probe that checks the old key is refused after revoke.
    ConfirmRevoked,
    /// Undo of `Push`.
    Restore(String),
    /// Undo of `Restart`: restart the consumers again after the restore, so
    /// that they load the previous value.
    RestartAfterRestore(String),
    /// Undo of `Revoke`: enable the old key again.
    Reenable,
    /// Undo of `Generate`: delete the new key at the issuer.
    DeleteNew,
    /// A watch window: sample the checks and judge them.
    Watch(WatchWindow),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Generate => f.write_str("generate"),
            Self::DeleteOrphan(id) => write!(f, "delete-orphan:{id}"),
            Self::Verify => f.write_str("verify"),
            Self::Push(target) => write!(f, "push:{target}"),
            Self::Restart(target) => write!(f, "restart:{target}"),
            Self::VerifyPushed => f.write_str("verify-pushed"),
            Self::Revoke => f.write_str("revoke"),
            Self::Retire => f.write_str("retire"),
            Self::ConfirmRevoked => f.write_str("confirm-revoked"),
            Self::Restore(target) => write!(f, "restore:{target}"),
            Self::RestartAfterRestore(target) => write!(f, "restart-after-restore:{target}"),
            Self::Reenable => f.write_str("reenable"),
            Self::DeleteNew => f.write_str("delete-new"),
            Self::Watch(window) => write!(f, "watch:{window}"),
        }
    }
}

impl FromStr for Step {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match text.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg.to_string())),
            None => (text, None),
        };
        Ok(match (kind, arg) {
            ("generate", None) => Self::Generate,
            ("delete-orphan", Some(id)) => Self::DeleteOrphan(id),
            ("verify", None) => Self::Verify,
            ("push", Some(target)) => Self::Push(target),
            ("restart", Some(target)) => Self::Restart(target),
            ("verify-pushed", None) => Self::VerifyPushed,
            ("revoke", None) => Self::Revoke,
            ("retire", None) => Self::Retire,
            ("confirm-revoked", None) => Self::ConfirmRevoked,
            ("restore", Some(target)) => Self::Restore(target),
            ("restart-after-restore", Some(target)) => Self::RestartAfterRestore(target),
            ("reenable", None) => Self::Reenable,
            ("delete-new", None) => Self::DeleteNew,
            ("watch", Some(window)) => match WatchWindow::parse(&window) {
                Some(window) => Self::Watch(window),
                None => return Err(format!("unknown watch window {window:?}")),
            },
            _ => return Err(format!("unknown step {text:?}")),
        })
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How a run was started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A rotation of a key that is not known to be leaked, by hand or from
    /// cron. Journals written before this name read as `scheduled`.
    #[default]
    #[serde(alias = "scheduled")]
    Normal,
    /// `run --emergency`: the old key is leaked.
    Emergency,
}

/// How a finished run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new key is in place and the old one is retired.
    Completed,
    /// Everything is as it was before the run; the new key is deleted.
    RolledBack,
    /// The run failed before it changed anything.
    Failed,
}

/// A target as preflight saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetRecord {
    pub name: String,
    /// The target's kind, such as `vault`. Journals written before kinds
    /// were recorded have none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    pub location: String,
    pub state: serde_json::Value,
    pub summary: String,
    /// The snapshot's previous values, sealed.
    pub previous: Sealed,
}

/// The issuer as preflight saw it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct IssuerRecord {
    pub kind: String,
    pub state: serde_json::Value,
    pub old_key_id: Option<String>,
    pub summary: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: RunId,
        playbook: String,
        playbook_path: String,
        playbook_sha256: String,
        mode: Mode,
        host: String,
        user: String,
        pid: u32,
        keywheel_version: String,
        seal_key_id: String,
    },
    Preflight {
        issuer: IssuerRecord,
        targets: Vec<TargetRecord>,
    },
    Intent {
        step: Step,
        attempt: u32,
    },
    Done {
        step: Step,
        summary: String,
        #[serde(default)]
        detail: serde_json::Value,
    },
    Failed {
        step: Step,
        class: String,
        error: String,
    },
    KeyCreated {
        key_id: String,
        key: Sealed,
    },
    /// The run stopped on purpose; `resume` continues it.
    Held {
        reason: String,
    },
    /// A new process took the run over.
    Resumed {
        host: String,
        user: String,
        pid: u32,
    },
    RollbackStarted {
        reason: String,
    },
    /// Something could not be done or undone; the run stays unfinished.
    NeedsAttention {
        items: Vec<String>,
    },
    Finished {
        outcome: Outcome,
        summary: String,
    },
    /// A check's value before the push, for relative thresholds.
    WatchBaseline {
        check: String,
        /// Written as Prometheus writes values.
        value: String,
    },
    /// One sample of a watch window.
    WatchSample {
        window: WatchWindow,
        check: String,
        sample: Sample,
    },
}

impl Event {
    /// The event's name as written in the journal.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RunStarted { .. } => "run_started",
            Self::Preflight { .. } => "preflight",
            Self::Intent { .. } => "intent",
            Self::Done { .. } => "done",
            Self::Failed { .. } => "failed",
            Self::KeyCreated { .. } => "key_created",
            Self::Held { .. } => "held",
            Self::Resumed { .. } => "resumed",
            Self::RollbackStarted { .. } => "rollback_started",
            Self::NeedsAttention { .. } => "needs_attention",
            Self::Finished { .. } => "finished",
            Self::WatchBaseline { .. } => "watch_baseline",
            Self::WatchSample { .. } => "watch_sample",
        }
    }
}

/// Returns the purpose that the new key of `run_id` is sealed under: the
/// associated data that binds the sealed value to its record.
pub fn key_purpose(run_id: &RunId) -> String {
    format!("{run_id}/key")
}

/// Returns the purpose that the previous values of `target` in `run_id`
/// are sealed under.
pub fn target_purpose(run_id: &RunId, target: &str) -> String {
    format!("{run_id}/target/{target}")
}

/// A journal record: sequence number, time, event.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339 UTC time the record was written.
    pub at: String,
    #[serde(flatten)]
    pub event: Event,
}

/// Returns a `run_started` event of `playbook` with placeholder facts, for
/// tests.
#[cfg(test)]
pub(crate) fn run_started_for_test(run_id: &RunId, playbook: &str) -> Event {
    Event::RunStarted {
        run_id: run_id.clone(),
        playbook: playbook.into(),
        playbook_path: "/p.yaml".into(),
        playbook_sha256: "00".into(),
        mode: Mode::Normal,
        host: "h".into(),
        user: "u".into(),
        pid: 1,
        keywheel_version: "0".into(),
        seal_key_id: "k".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_text() {
        for step in [
            Step::Generate,
            Step::Push("vault-app".into()),
            Step::Restore("a:b".into()),
            Step::Restart("app/team-a".into()),
            Step::RestartAfterRestore("app/team-a".into()),
            Step::DeleteOrphan("key_1".into()),
            Step::DeleteNew,
            Step::Watch(WatchWindow::Overlap),
            Step::Watch(WatchWindow::AfterRevoke),
            Step::VerifyPushed,
            Step::ConfirmRevoked,
        ] {
            assert_eq!(step.to_string().parse::<Step>().unwrap(), step);
        }
    }

    #[test]
    fn record_json_is_flat() {
        let record = Record {
            seq: 3,
            at: "2026-12-04T00:00:00Z".into(),
            event: Event::Intent {
                step: Step::Push("t".into()),
                attempt: 1,
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"seq":3,"at":"2026-12-04T00:00:00Z","event":"intent","step":"push:t","attempt":1}"#
        );
    }
}
