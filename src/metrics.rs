//! A Prometheus textfile (for node-exporter's textfile collector) with the
//! last rotation outcome of every playbook, so an alert can fire when
//! rotations stop succeeding.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::engine::report::{RunReport, RunStatus};
use crate::fsutil;

/// File name written in the textfile directory.
pub const TEXTFILE: &str = "keywheel.prom";

const OUTCOMES: &[RunStatus] = &[
    RunStatus::Completed,
    RunStatus::RolledBack,
    RunStatus::Failed,
    RunStatus::Held,
    RunStatus::NeedsAttention,
    RunStatus::Interrupted,
];

/// Renders the metrics from run reports, newest first.
pub fn render(reports: &[RunReport]) -> String {
    let mut last: BTreeMap<&str, &RunReport> = BTreeMap::new();
    let mut last_success: BTreeMap<&str, &RunReport> = BTreeMap::new();
    for report in reports {
        last.entry(report.playbook.as_str()).or_insert(report);
        if report.status == RunStatus::Completed {
            last_success
                .entry(report.playbook.as_str())
                .or_insert(report);
        }
    }
    let mut out = String::new();
    out.push_str(
        "# HELP keywheel_last_success_timestamp_seconds End time of the last completed rotation.\n",
    );
    out.push_str("# TYPE keywheel_last_success_timestamp_seconds gauge\n");
    for (playbook, report) in &last_success {
        let _ = writeln!(
            out,
            "keywheel_last_success_timestamp_seconds{{playbook=\"{}\"}} {}",
            escape(playbook),
            seconds(&report.updated_at)
        );
    }
    out.push_str(
        "# HELP keywheel_last_run_timestamp_seconds Time of the last record of the latest run.\n",
    );
    out.push_str("# TYPE keywheel_last_run_timestamp_seconds gauge\n");
    for (playbook, report) in &last {
        let _ = writeln!(
            out,
            "keywheel_last_run_timestamp_seconds{{playbook=\"{}\"}} {}",
            escape(playbook),
            seconds(&report.updated_at)
        );
    }
    out.push_str("# HELP keywheel_last_run_status Status of the latest run: 1 for its status, 0 for the others.\n");
    out.push_str("# TYPE keywheel_last_run_status gauge\n");
    for (playbook, report) in &last {
        for status in OUTCOMES {
            let value = u8::from(report.status == *status);
            let label = serde_json::to_value(status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "keywheel_last_run_status{{playbook=\"{}\",status=\"{label}\"}} {value}",
                escape(playbook)
            );
        }
    }
    out
}

/// Writes the textfile atomically into `dir`.
pub fn write(dir: &Path, reports: &[RunReport]) -> std::io::Result<()> {
    fsutil::write_atomic(&dir.join(TEXTFILE), render(reports).as_bytes(), 0o644)
}

fn seconds(rfc3339: &str) -> String {
    rfc3339
        .parse::<jiff::Timestamp>()
        .map(|t| format!("{:.3}", t.as_millisecond() as f64 / 1000.0))
        .unwrap_or_else(|_| "NaN".to_string())
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
