//! `plan`: what a run would do, found with read-only calls.

use std::sync::Arc;

use futures_util::StreamExt as _;

use super::report::{Plan, PlanStep, PlanTarget};
use super::{EngineError, build, watching};
use crate::issuers::{CurrentFields, IssuerCx, Overrides, Revocation};
use crate::playbook::Playbook;
use crate::retry::RetryPolicy;
use crate::run_id::RunId;
use crate::targets::{Selection, TargetCx};
use crate::verify::Stage;

/// Builds the plan of `playbook`. Targets and issuer are only read.
/// `disabled_keys` are the old keys earlier runs of the playbook disabled
/// (see [`super::keys_disabled_by_runs`]).
pub async fn plan(
    playbook: &Playbook,
    retry: RetryPolicy,
    disabled_keys: Vec<String>,
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
    let mut current = CurrentFields::new();
    let mut plan_targets = Vec::new();
    for (target, result) in &results {
        let (current_text, ok) = match result {
            Ok(snapshot) => {
                for (field, value) in target.previous_fields(snapshot) {
                    current.entry(field).or_insert(value);
                }
                (snapshot.summary.clone(), true)
            }
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
    let issuer_summary = match issuer.preflight(&icx, &current).await {
        Ok(snapshot) => snapshot.summary,
        Err(err) => {
            problems.push(format!("issuer: {err}"));
            err.to_string()
        }
    };

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
    for target in &plan_targets {
        steps.push(step(
            &format!("push:{}", target.name),
            &format!(
                "write {} (now: {}), read back and compare",
                target.location, target.current
            ),
            false,
        ));
    }
    for target in &targets {
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
    steps.extend(watch_step(crate::watch::WatchWindow::Overlap));
    match issuer.revocation() {
        Revocation::Replace => steps.push(step(
            "finish",
            "the old value is replaced; the issuer keeps no record of keys, so there is nothing to revoke",
            false,
        )),
        Revocation::DisableThenDelete => {
            steps.push(step("revoke", "disable the old key (can be re-enabled by a rollback)", false));
            steps.extend(watch_step(crate::watch::WatchWindow::AfterRevoke));
            steps.push(step("retire", "delete the old key: the point of no return", true));
        }
        Revocation::DeleteOnly => {
            steps.push(step("retire", "delete the old key (the issuer cannot disable keys): the point of no return", true));
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
    Ok(Plan {
        playbook: playbook.name.clone(),
        issuer: issuer.kind().to_string(),
        issuer_summary,
        targets: plan_targets,
        steps,
        problems,
    })
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
