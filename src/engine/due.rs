//! Whether a playbook is due for rotation under its `max_age` policy.

use std::time::Duration;

use serde::Serialize;

use super::report::RunStatus;
use super::{Engine, EngineError};
use crate::playbook::Playbook;

/// How old a playbook's credential is.
#[derive(Clone, Debug, Serialize)]
pub struct DueStatus {
    pub playbook: String,
    pub path: String,
    /// Run id and end time of the last completed rotation.
    pub last_rotation: Option<String>,
    pub last_rotated_at: Option<String>,
    pub age_seconds: Option<u64>,
    pub max_age_seconds: Option<u64>,
    pub due: bool,
    /// One sentence for people.
    pub reason: String,
}

impl Engine {
    /// Finds the last completed rotation of `playbook` and compares its age
    /// with the playbook's `max_age`. Without `max_age`, a playbook is
    /// always due.
    pub async fn due_status(&self, playbook: &Playbook) -> Result<DueStatus, EngineError> {
        let last = self
            .history(Some(&playbook.name), usize::MAX)
            .await?
            .into_iter()
            .find(|report| report.status == RunStatus::Completed);
        let now = jiff::Timestamp::now();
        let finished = last
            .as_ref()
            .and_then(|report| report.updated_at.parse::<jiff::Timestamp>().ok());
        let age = finished.map(|at| {
            let seconds = now.duration_since(at).as_secs().max(0);
            Duration::from_secs(seconds as u64)
        });
        let max_age = playbook.max_age;
        let (due, reason) = match (age, max_age) {
            (_, None) => (
                true,
                "the playbook sets no max_age, so it is always due".to_string(),
            ),
            (None, Some(_)) => (true, "never rotated".to_string()),
            (Some(age), Some(max)) if age >= max => (
                true,
                format!("last rotated {} ago, max_age is {}", human(age), human(max)),
            ),
            (Some(age), Some(max)) => (
                false,
                format!(
                    "last rotated {} ago, due in {}",
                    human(age),
                    human(max - age)
                ),
            ),
        };
        Ok(DueStatus {
            playbook: playbook.name.clone(),
            path: playbook.path.display().to_string(),
            last_rotation: last.as_ref().map(|r| r.run_id.clone()),
            last_rotated_at: last.as_ref().map(|r| r.updated_at.clone()),
            age_seconds: age.map(|a| a.as_secs()),
            max_age_seconds: max_age.map(|m| m.as_secs()),
            due,
            reason,
        })
    }
}

/// Formats a duration in its two largest units, such as `89d 23h`.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = seconds;
    for (name, size) in units {
        if rest >= size && parts.len() < 2 {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        } else if !parts.is_empty() {
            break;
        }
    }
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_uses_two_largest_units() {
        assert_eq!(
            human(Duration::from_secs(90 * 86_400 + 3_600 * 5 + 7)),
            "90d 5h"
        );
        assert_eq!(human(Duration::from_secs(61)), "1m 1s");
        assert_eq!(human(Duration::from_secs(0)), "0s");
    }
}
