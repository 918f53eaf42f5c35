//! Text renderings of reports, plans and validation results.

use std::fmt::Write as _;

use crate::engine::report::{Plan, PlanStep, RunReport};

/// A run report in full, for `status`.
pub fn run_report(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "run {}  {}  {}",
        report.run_id,
        report.playbook,
        report.status.as_str()
    );
    let _ = writeln!(
        out,
        "  started {} by {} on {} ({})",
        report.started_at, report.user, report.host, report.mode
    );
    if !report.message.is_empty() {
        let _ = writeln!(out, "  {}", report.message);
    }
    if let Some(id) = &report.new_key_id {
        let _ = writeln!(out, "  new key: {id}");
    }
    if let Some(id) = &report.old_key_id {
        let _ = writeln!(out, "  old key: {id}");
    }
    if !report.targets.is_empty() {
        let _ = writeln!(out, "  targets:");
        let width = report
            .targets
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(0);
        for target in &report.targets {
            let _ = write!(
                out,
                "    {:width$}  {:14}  {}",
                target.name, target.status, target.location
            );
            if !target.detail.is_empty() {
                let _ = write!(out, ": {}", target.detail);
            }
            // A restore hides why the target was restored: a failed push
            // is the reason a run rolls back, so it is shown too.
            if target.status != target.push && target.push == "push_failed" {
                let _ = write!(out, " (push failed: {})", target.push_detail);
            }
            out.push('\n');
        }
    }
    if !report.steps.is_empty() {
        let _ = writeln!(out, "  steps:");
        let width = report.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
        for step in &report.steps {
            let _ = writeln!(
                out,
                "    {}  {:width$}  {:7}  {}",
                step.at, step.step, step.status, step.detail
            );
        }
    }
    write_watch(&mut out, report);
    if !report.attention.is_empty() {
        let _ = writeln!(out, "  needs attention:");
        for item in &report.attention {
            let _ = writeln!(out, "    - {item}");
        }
    }
    out
}

/// The watch rounds of a run, each check with its samples.
fn write_watch(out: &mut String, report: &RunReport) {
    let watch = &report.watch;
    if watch.rounds.is_empty() && watch.baselines.is_empty() {
        return;
    }
    let _ = writeln!(out, "  watch:");
    for (check, value) in &watch.baselines {
        let _ = writeln!(out, "    baseline of {check}: {value}");
    }
    for round in &watch.rounds {
        let verdict = round.verdict.as_deref().unwrap_or("running");
        let _ = writeln!(
            out,
            "    {} started {}: {verdict}",
            round.window, round.started_at
        );
        if let Some(reason) = &round.reason {
            let _ = writeln!(out, "      {reason}");
        }
        let mut checks: Vec<&str> = round.samples.iter().map(|s| s.check.as_str()).collect();
        checks.dedup();
        checks.sort_unstable();
        checks.dedup();
        for check in checks {
            let samples = round.samples_of(check);
            let _ = writeln!(out, "      {}", super::watch::summarize(check, &samples));
        }
    }
}

/// One line per run, for `history`.
pub fn history(reports: &[RunReport]) -> String {
    let mut out = String::new();
    let name_width = reports
        .iter()
        .map(|r| r.playbook.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        out,
        "{:22}  {:name_width$}  {:15}  {:24}  NEW KEY",
        "RUN", "PLAYBOOK", "STATUS", "STARTED"
    );
    for report in reports {
        let _ = writeln!(
            out,
            "{:22}  {:name_width$}  {:15}  {:24}  {}",
            report.run_id,
            report.playbook,
            report.status.as_str(),
            report.started_at,
            report.new_key_id.as_deref().unwrap_or("-")
        );
    }
    out
}

/// Numbered steps with the point of no return marked.
pub fn plan_steps(steps: &[PlanStep]) -> String {
    let mut out = String::new();
    let width = steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
    for (index, step) in steps.iter().enumerate() {
        let marker = if step.point_of_no_return {
            "  <- point of no return"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {:>2}. {:width$}  {}{marker}",
            index + 1,
            step.step,
            step.description
        );
    }
    out
}

/// A plan, for `plan`.
pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plan for {} ({} issuer: {})",
        plan.playbook, plan.issuer, plan.issuer_summary
    );
    out.push_str(&plan_steps(&plan.steps));
    if plan.problems.is_empty() {
        let _ = writeln!(
            out,
            "read-only checks passed; `keywheel run` would start with these steps"
        );
    } else {
        let _ = writeln!(out, "problems a run would stop on:");
        for problem in &plan.problems {
            let _ = writeln!(out, "  - {problem}");
        }
    }
    out
}

/// A run as a Markdown timeline for a postmortem, from its audit log.
pub fn markdown_report(report: &RunReport, audit: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Rotation of {}: run {}\n",
        report.playbook, report.run_id
    );
    let _ = writeln!(out, "| | |\n|---|---|");
    let _ = writeln!(out, "| status | {} |", report.status.as_str());
    let _ = writeln!(out, "| mode | {} |", report.mode);
    let _ = writeln!(
        out,
        "| started | {} by {} on {} |",
        report.started_at, report.user, report.host
    );
    let _ = writeln!(out, "| last event | {} |", report.updated_at);
    let _ = writeln!(
        out,
        "| new key | {} |",
        report.new_key_id.as_deref().unwrap_or("none")
    );
    let _ = writeln!(
        out,
        "| old key | {} |",
        report.old_key_id.as_deref().unwrap_or("unknown")
    );
    if !report.message.is_empty() {
        let _ = writeln!(out, "\n{}", report.message);
    }

    let _ = writeln!(out, "\n## Timeline\n");
    let _ = writeln!(
        out,
        "| time (UTC) | since start | who | event | step | outcome | detail |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    let start = report.started_at.parse::<jiff::Timestamp>().ok();
    for line in audit.lines() {
        let Ok(entry) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let text = |name: &str| {
            entry
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string()
        };
        let time = text("time");
        let since = match (start, time.parse::<jiff::Timestamp>()) {
            (Some(start), Ok(at)) => format!("+{:.1}s", at.duration_since(start).as_secs_f64()),
            _ => String::new(),
        };
        let who = format!("{}@{}", text("user"), text("host"));
        let mut step = text("step");
        if let Some(location) = entry.get("location").and_then(|v| v.as_str()) {
            step = format!("{step} ({location})");
        }
        let _ = writeln!(
            out,
            "| {time} | {since} | {} | {} | {} | {} | {} |",
            cell(&who),
            cell(&text("event")),
            cell(&step),
            cell(&text("outcome")),
            cell(&text("detail"))
        );
    }

    if !report.targets.is_empty() {
        let _ = writeln!(out, "\n## Targets\n");
        let _ = writeln!(
            out,
            "| target | where | status | detail |\n|---|---|---|---|"
        );
        for target in &report.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                cell(&target.name),
                cell(&target.location),
                target.status,
                cell(&target.detail)
            );
        }
    }
    if !report.attention.is_empty() {
        let _ = writeln!(out, "\n## Needs attention\n");
        for item in &report.attention {
            let _ = writeln!(out, "- {item}");
        }
    }
    out
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
