//! The audit log: one JSON line per journal event saying who did what,
//! where, when and with what outcome. It holds no secret: sealed values in
//! the journal are left out, and only ids, names and summaries remain.

use serde_json::{Value, json};

use super::record::{Event, Record, Step};
use super::state::RunState;

/// Builds the audit line of `record`; `state` is the run before it.
pub fn line(state: &RunState, record: &Record) -> Value {
    let mut line = json!({
        "time": record.at,
        "run_id": state.run_id,
        "seq": record.seq,
        "playbook": state.playbook(),
        "host": crate::host::hostname(),
        "user": crate::host::username(),
        "pid": std::process::id(),
        "event": record.event.name(),
    });
    let (step, outcome, detail) = describe(&record.event);
    if let Some(step) = step {
        line["step"] = json!(step.to_string());
        if let Some(target) = target_of(step) {
            line["target"] = json!(target);
            if let Some(record) = state.target(target) {
                line["location"] = json!(record.location);
            }
        }
    }
    line["outcome"] = json!(outcome);
    if !detail.is_empty() {
        line["detail"] = json!(detail);
    }
    if let Event::RunStarted { playbook, mode, .. } = &record.event {
        line["playbook"] = json!(playbook);
        line["mode"] = json!(mode);
    }
    line
}

fn target_of(step: &Step) -> Option<&str> {
    match step {
        Step::Push(target)
        | Step::Restore(target)
        | Step::Restart(target)
        | Step::RestartAfterRestore(target) => Some(target),
        _ => None,
    }
}

fn describe(event: &Event) -> (Option<&Step>, &'static str, String) {
    match event {
        Event::RunStarted { playbook_path, .. } => {
            (None, "started", format!("playbook {playbook_path}"))
        }
        Event::Preflight { issuer, targets } => {
            let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
            let detail = format!(
                "checked {} ({}) and the {} issuer: {}",
                names.len(),
                names.join(", "),
                issuer.kind,
                issuer.summary
            );
            (None, "done", detail)
        }
        Event::Intent { step, attempt } => (Some(step), "started", format!("attempt {attempt}")),
        Event::Done { step, summary, .. } => (Some(step), "done", summary.clone()),
        Event::Failed { step, error, .. } => (Some(step), "failed", error.clone()),
        Event::KeyCreated { key_id, .. } => (
            None,
            "done",
            format!("new key {key_id} sealed into the journal"),
        ),
        Event::Held { reason } => (None, "held", reason.clone()),
        Event::Resumed { .. } => (None, "resumed", String::new()),
        Event::RollbackStarted { reason } => (None, "started", reason.clone()),
        Event::NeedsAttention { items } => (None, "needs_attention", items.join("; ")),
        Event::Finished { outcome, summary } => {
            let outcome = match outcome {
                super::record::Outcome::Completed => "completed",
                super::record::Outcome::RolledBack => "rolled_back",
                super::record::Outcome::Failed => "failed",
            };
            (None, outcome, summary.clone())
        }
    }
}
