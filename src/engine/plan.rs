//! `plan`: what a run would do, found with read-only calls.

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::record::Mode;
use super::report::{Plan, PlanStep, PlanTarget};
use super::{EngineError, build, watching};
use crate::issuers::{CurrentFields, Issuer, IssuerCx, Overrides, Revocation};
use crate::playbook::Playbook;
use crate::retry::RetryPolicy;
use crate::run_id::RunId;
use crate::targets::{Selection, Target, TargetCx};
use crate::verify::Stage;
use crate::watch::Watcher;

/// Builds the plan of `playbook`. Targets and issuer are only read.
/// `disabled_keys` are the old keys earlier runs of the playbook disabled
/// (see [`super::keys_disabled_by_runs`]).
pub async fn plan(
    playbook: &Playbook,
    retry: RetryPolicy,
    disabled_keys: Vec<String>,
    mode: Mode,
) -> Result<Plan, EngineError> {
    let super::Built {
        issuer,
        targets,
        watch,
        ..
    } = build(playbook, Selection::Current).await?;
    let run_id = RunId::generate();
    let tcx = TargetCx {
        run_id: run_id.clone(),
        retry,
        overrides: Overrides::default(),
    };
    let icx = IssuerCx {
        run_id,
        retry,
        overrides: Overrides::default(),
        disabled_by_earlier_runs: disabled_keys,
    };

    let results: Vec<_> = futures_util::stream::iter(targets.iter().map(Arc::clone))
        .map(|target| {
            let tcx = &tcx;
            async move {
                let limit = playbook.policy.target_timeout;
                let result = tokio::time::timeout(limit, target.preflight(tcx))
                    .await
                    .unwrap_or(Err(crate::targets::TargetError::TimedOut(limit)));
                (target, result)
            }
        })
        .buffered(playbook.policy.concurrency)
        .collect()
        .await;

    let mut problems = Vec::new();
    let mut plan_targets = Vec::new();
    for (target, result) in &results {
        let (current_text, ok) = match result {
            Ok(snapshot) => (snapshot.summary.clone(), true),
            Err(err) => {
                problems.push(format!("{}: {err}", target.name()));
                (err.to_string(), false)
            }
        };
        plan_targets.push(PlanTarget {
            name: target.name().to_string(),
            location: target.location(),
            current: current_text,
            ok,
        });
    }
    let fields_held = results.iter().filter_map(|(target, result)| {
        let snapshot = result.as_ref().ok()?;
        Some((target.name(), target.previous_fields(snapshot)))
    });
    let strict = issuer.revocation() != Revocation::Replace;
    let current = super::live::current_key_fields(fields_held, strict).unwrap_or_else(|problem| {
        problems.push(problem);
        CurrentFields::new()
    });
    let issuer_summary = match issuer.preflight(&icx, &current).await {
        Ok(snapshot) => snapshot.summary,
        Err(err) => {
            problems.push(format!("issuer: {err}"));
            err.to_string()
        }
    };

    let steps = steps(
        playbook,
        issuer.as_ref(),
        &targets,
        watch.as_deref(),
        &plan_targets,
        mode,
    );
    Ok(Plan {
        playbook: playbook.name.clone(),
        issuer: issuer.kind().to_string(),
        issuer_summary,
        targets: plan_targets,
        steps,
        problems,
    })
}

/// Lists the steps a run of `playbook` takes, in order, with what each
/// target holds now (`plan_targets`). `run` prints the same list after its
/// preflight.
pub(super) fn steps(
    playbook: &Playbook,
    issuer: &dyn Issuer,
    targets: &[Arc<dyn Target>],
    watch: Option<&Watcher>,
    plan_targets: &[PlanTarget],
    mode: Mode,
) -> Vec<PlanStep> {
    let mut steps = vec![
        step(
            "preflight",
            "read-only checks of every target and the issuer",
            false,
        ),
        step(
            "generate",
            &format!(
                "the {} issuer makes a new key, sealed into the journal",
                issuer.kind()
            ),
            false,
        ),
        step("verify", verify_text(playbook, Stage::Generate), false),
    ];
    for target in plan_targets {
        steps.push(step(
            &format!("push:{}", target.name),
            &format!(
                "write {} (now: {}), read back and compare",
                target.location, target.current
            ),
            false,
        ));
    }
    for target in targets {
        let restarts = target.restarts();
        if !restarts.is_empty() {
            steps.push(step(
                &format!("restart:{}", target.name()),
                &format!(
                    "restart {} and wait until the rollout is complete",
                    restarts.join(", ")
                ),
                false,
            ));
        }
    }
    if playbook
        .verify
        .as_ref()
        .is_some_and(|spec| spec.runs_at(Stage::Push))
    {
        steps.push(step(
            "verify-pushed",
            verify_text(playbook, Stage::Push),
            false,
        ));
    }
    let watch_step = |window: crate::watch::WatchWindow| {
        watch.as_ref().map(|w| {
            step(
                &format!("watch:{window}"),
                &watching::describe(&w.spec, window),
                false,
            )
        })
    };
    let emergency = mode == Mode::Emergency;
    if !emergency {
        steps.extend(watch_step(crate::watch::WatchWindow::Overlap));
    }
    match (issuer.revocation(), emergency) {
        (Revocation::Replace, _) => steps.push(step(
            "finish",
            "the old value is replaced; the issuer keeps no record of keys, so there is nothing to revoke",
            false,
        )),
        (Revocation::DisableThenDelete, false) => {
            steps.push(step(
                "revoke",
                "disable the old key (can be re-enabled by a rollback)",
                false,
            ));
            steps.extend(watch_step(crate::watch::WatchWindow::AfterRevoke));
            steps.push(step("retire", retire_text(false, false), true));
        }
        (Revocation::DeleteOnly, false) => {
            steps.push(step("retire", retire_text(false, true), true));
        }
        (revocation, true) => {
            if revocation == Revocation::DisableThenDelete {
                steps.push(step(
                    "revoke",
                    "disable the leaked key (never enabled again: this is an emergency)",
                    false,
                ));
            }
            let delete_only = revocation == Revocation::DeleteOnly;
            steps.push(step("retire", retire_text(true, delete_only), true));
                        if let Some(mut watch) = watch_step(crate::watch::WatchWindow::AfterRevoke) {
                watch.description = watch.description.replace(
                    "a breach rolls back",
                    "a breach is reported, never undone (emergency)",
                );
                steps.push(watch);
            }
        }
    }
    if playbook
        .verify
        .as_ref()
        .is_some_and(|spec| spec.revoked.is_some())
    {
        steps.push(step(
            "confirm-revoked",
            "a probe with the old key checks that it is refused; a failure is reported, not undone",
            false,
        ));
    }
    if mode == Mode::Emergency && playbook.emergency.revoke_before_push {
        // Revocation moves to right after verify, before any push.
        let early: Vec<PlanStep> = steps
            .iter()
            .filter(|s| {
                s.step == "revoke"
                    || (s.step == "retire" && issuer.revocation() == Revocation::DeleteOnly)
            })
            .cloned()
            .collect();
        steps.retain(|s| !early.iter().any(|e| e.step == s.step));
        let at = steps
            .iter()
            .position(|s| s.step == "verify")
            .map_or(0, |i| i + 1);
        for (offset, step) in early.into_iter().enumerate() {
            steps.insert(at + offset, step);
        }
    }
    steps
}

fn retire_text(emergency: bool, delete_only: bool) -> &'static str {
    match (emergency, delete_only) {
        (false, false) => "delete the old key: the point of no return",
        (false, true) => {
            "delete the old key (the issuer cannot disable keys): the point of no return"
        }
        (true, false) => "delete the leaked key without asking (emergency): the point of no return",
        (true, true) => {
            "delete the leaked key without asking (emergency; the issuer cannot disable keys): the point of no return"
        }
    }
}

fn verify_text(playbook: &Playbook, stage: Stage) -> &'static str {
    let probes = playbook
        .verify
        .as_ref()
        .is_some_and(|spec| spec.runs_at(stage));
    match (stage, probes) {
        (Stage::Generate, true) => {
            "the issuer and the playbook's probes check that the new key works, retrying while it propagates"
        }
        (Stage::Generate, false) => "the issuer checks that the new key works",
        (Stage::Push, _) => "the probes run again now that the targets hold the new key",
    }
}

fn step(name: &str, description: &str, point_of_no_return: bool) -> PlanStep {
    PlanStep {
        step: name.to_string(),
        description: description.to_string(),
        point_of_no_return,
    }
}

/// Largest number of targets whose steps a run's plan lists one by one. A
/// run over more targets shows each kind of per-target step as one line
/// with counts by kind, unless the operator asks for every line with `-v`.
pub(super) const PLAN_TARGETS_LISTED: usize = 10;

/// Replaces each run of per-target steps (`push:NAME`, `restart:NAME`)
/// with one step that counts the targets by kind. `kinds` maps target
/// names to kinds.
pub(super) fn group_target_steps(
    steps: Vec<PlanStep>,
    kinds: &std::collections::HashMap<String, &'static str>,
) -> Vec<PlanStep> {
    let mut grouped: Vec<PlanStep> = Vec::new();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut current: Option<&'static str> = None;
    for plan_step in steps {
        let split = plan_step.step.split_once(':');
        let family = match split {
            Some(("push", _)) => Some("push"),
            Some(("restart", _)) => Some("restart"),
            _ => None,
        };
        if current.is_some() && family != current {
            grouped.push(target_group(current.unwrap_or_default(), &counts));
            counts.clear();
        }
        current = family;
        let Some((_, name)) = split.filter(|_| family.is_some()) else {
            grouped.push(plan_step);
            continue;
        };
        let kind = kinds.get(name).copied().unwrap_or("target");
        match counts.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, count)) => *count += 1,
            None => counts.push((kind, 1)),
        }
    }
    if let Some(family) = current {
        grouped.push(target_group(family, &counts));
    }
    grouped
}

/// Builds the one step that stands for a run of per-target steps of
/// `family`.
fn target_group(family: &str, counts: &[(&str, usize)]) -> PlanStep {
    let total: usize = counts.iter().map(|(_, count)| count).sum();
    let by_kind = counts
        .iter()
        .map(|(kind, count)| format!("{count} {kind}"))
        .collect::<Vec<_>>()
        .join(", ");
    let description = match family {
        "push" => format!(
            "write {total} target(s) ({by_kind}), read each back and compare; `-v` lists them"
        ),
        _ => format!(
            "restart the consumers of {total} target(s) ({by_kind}) and wait until each rollout is complete; `-v` lists them"
        ),
    };
    step(family, &description, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(steps: &[PlanStep]) -> Vec<&str> {
        steps.iter().map(|s| s.step.as_str()).collect()
    }

    #[test]
    fn target_steps_are_grouped_by_kind() {
        let mut steps = vec![step("preflight", "", false), step("generate", "", false)];
        let mut kinds = std::collections::HashMap::new();
        for index in 0..30 {
            let name = format!("t{index}");
            kinds.insert(name.clone(), if index < 20 { "vault" } else { "dotenv" });
            steps.push(step(&format!("push:{name}"), "", false));
        }
        steps.push(step("restart:t3", "", false));
        steps.push(step("revoke", "", false));

        let grouped = group_target_steps(steps, &kinds);
        assert_eq!(
            names(&grouped),
            ["preflight", "generate", "push", "restart", "revoke"]
        );
        assert!(
            grouped[2]
                .description
                .starts_with("write 30 target(s) (20 vault, 10 dotenv), "),
            "{}",
            grouped[2].description
        );
        assert!(
            grouped[3].description.contains(" 1 target(s) (1 vault) "),
            "{}",
            grouped[3].description
        );
    }
}
