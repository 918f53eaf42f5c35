//! Webhook notifications about runs: Slack-compatible or plain JSON.
//!
//! ```yaml
//! notify:
//!   - webhook_env: SLACK_WEBHOOK_URL   # the variable holding the URL
//!     events: [start, success, failure, rollback, needs_attention]
//!     format: slack                    # or json: the whole run report
//! ```
//!
//! A webhook URL often carries its own credential (Slack's do), so it is
//! read from the environment when sent and never printed. A notification
//! that fails is logged as a warning and never changes the run.

use std::time::Duration;

use serde::Serialize;

use crate::engine::report::{RunReport, RunStatus};
use crate::output::Output;
use crate::playbook::decode::{Cx, Decode, FieldPath, MapReader, decode_choice};
use crate::playbook::yaml::{Node, Value};

const EVENTS: &[&str] = &["start", "success", "failure", "rollback", "needs_attention"];
const FORMATS: &[&str] = &["slack", "json"];
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a run reached, as far as notifications are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Start,
    Success,
    Failure,
    Rollback,
    NeedsAttention,
}

impl NotifyEvent {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Rollback => "rollback",
            Self::NeedsAttention => "needs_attention",
        }
    }

    /// The event that ends a run in `status`.
    pub fn for_status(status: RunStatus) -> Self {
        match status {
            RunStatus::Completed => Self::Success,
            RunStatus::RolledBack => Self::Rollback,
            RunStatus::Failed => Self::Failure,
            RunStatus::Held | RunStatus::NeedsAttention | RunStatus::Interrupted => {
                Self::NeedsAttention
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `{"text": "..."}`, which Slack, Mattermost and Rocket.Chat accept.
    Slack,
    /// `{"event": "...", "report": {...}}` with the run report of `--json`.
    Json,
}

#[derive(Clone, Debug)]
pub struct NotifySpec {
    pub webhook_env: String,
    pub events: Vec<NotifyEvent>,
    pub format: Format,
}

impl NotifySpec {
    pub fn decode_list(node: &Node, path: &FieldPath, cx: &mut Cx) -> Vec<Self> {
        let Value::Sequence(items) = &node.value else {
            cx.error(
                node,
                path,
                format!("expected a list, found {}", node.kind_name()),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| Self::decode(item, &path.index(index), cx))
            .collect()
    }

    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let mut reader = MapReader::new(node, path, cx)?;
        let webhook_env: String = reader.required("webhook_env", cx);
        if let Some(value) = reader.value("webhook") {
            cx.error_hint(
                value,
                &reader.path_of("webhook"),
                "a webhook URL cannot be written in a playbook",
                "put it in an environment variable and name that variable in `webhook_env`",
            );
        }
        let events = match reader.value("events") {
            Some(list) => decode_events(list, &reader.path_of("events"), cx),
            None => vec![
                NotifyEvent::Start,
                NotifyEvent::Success,
                NotifyEvent::Failure,
                NotifyEvent::Rollback,
                NotifyEvent::NeedsAttention,
            ],
        };
        let format = match reader.value("format") {
            Some(value) => match decode_choice(value, &reader.path_of("format"), cx, FORMATS) {
                Some("json") => Format::Json,
                _ => Format::Slack,
            },
            None => Format::Slack,
        };
        reader.finish(cx);
        Some(Self {
            webhook_env,
            events,
            format,
        })
    }

    /// Returns the schema of `notify:`.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{choice, env_name, object, rejected};
        let events = serde_json::json!({
            "description": "Events that are sent (default: all); needs_attention covers held \
                            runs and runs that need attention.",
            "type": "array",
            "items": {"enum": EVENTS},
            "default": EVENTS,
        });
        let webhook = object(
            "One webhook. A notification that fails is a warning and never changes the run.",
            vec![
                (
                    "webhook_env",
                    env_name(
                        "Environment variable holding the webhook URL; the URL is never \
                         written in a playbook or printed.",
                        None,
                    ),
                ),
                (
                    "webhook",
                    rejected("Never written in a playbook: name the variable in `webhook_env`."),
                ),
                ("events", events),
                (
                    "format",
                    choice(
                        "{\"text\": ...} for Slack, Mattermost and Rocket.Chat (slack), or \
                         {\"event\": ..., \"report\": ...} with the --json run report (json).",
                        FORMATS,
                        Some("slack"),
                    ),
                ),
            ],
            &["webhook_env"],
        );
        serde_json::json!({
            "description": "Webhooks told of a run's start and end.",
            "type": "array",
            "items": webhook,
        })
    }
}

fn decode_events(node: &Node, path: &FieldPath, cx: &mut Cx) -> Vec<NotifyEvent> {
    let Some(names) = Vec::<String>::decode(node, path, cx) else {
        return Vec::new();
    };
    let mut events = Vec::new();
    for name in names {
        let event = match name.as_str() {
            "start" => NotifyEvent::Start,
            "success" => NotifyEvent::Success,
            "failure" => NotifyEvent::Failure,
            "rollback" => NotifyEvent::Rollback,
            "needs_attention" => NotifyEvent::NeedsAttention,
            other => {
                cx.error_hint(
                    node,
                    path,
                    format!("unknown event {other:?}"),
                    format!("events are {}", EVENTS.join(", ")),
                );
                continue;
            }
        };
        events.push(event);
    }
    events
}

/// Sends `event` about `report` to every webhook that wants it. Failures are
/// reported as warnings and never returned.
pub async fn send(specs: &[NotifySpec], event: NotifyEvent, report: &RunReport, out: &Output) {
    for spec in specs.iter().filter(|spec| spec.events.contains(&event)) {
        if let Err(message) = send_one(spec, event, report).await {
            tracing::debug!(webhook_env = %spec.webhook_env, event = event.name(), "notification failed: {message}");
            out.warn(format!(
                "notification to the webhook in {} failed: {message}; the run is not affected",
                spec.webhook_env
            ));
        }
    }
}

async fn send_one(spec: &NotifySpec, event: NotifyEvent, report: &RunReport) -> Result<(), String> {
    let url = std::env::var(&spec.webhook_env)
        .map_err(|_| format!("environment variable {} is not set", spec.webhook_env))?;
    let url = url::Url::parse(url.trim())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| {
            format!(
                "{} does not hold an http:// or https:// URL",
                spec.webhook_env
            )
        })?;
    let body = match spec.format {
        Format::Slack => serde_json::json!({ "text": slack_text(event, report) }),
        Format::Json => serde_json::json!({ "event": event, "report": report }),
    };
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|err| format!("cannot build an HTTP client: {err}"))?;
    // Errors are described without the URL, which may hold a credential.
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|err| describe_send_error(&err))?;
    if !response.status().is_success() {
        return Err(format!(
            "the webhook answered status {}",
            response.status().as_u16()
        ));
    }
    Ok(())
}

/// Describes why a request failed from the error's causes, leaving out the
/// top-level message, which names the URL.
fn describe_send_error(err: &reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_string();
    }
    let mut text = if err.is_connect() {
        "cannot connect".to_string()
    } else {
        "the request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn slack_text(event: NotifyEvent, report: &RunReport) -> String {
    let headline = match event {
        NotifyEvent::Start => "started",
        NotifyEvent::Success => "completed",
        NotifyEvent::Failure => "failed, nothing was changed",
        NotifyEvent::Rollback => "rolled back",
        NotifyEvent::NeedsAttention => "needs attention",
    };
    let mut text = format!(
        "keywheel: rotation of {} {headline} (run {} on {})",
        report.playbook, report.run_id, report.host
    );
    if event != NotifyEvent::Start && !report.message.is_empty() {
        text.push_str(&format!("\n{}", report.message));
    }
    for item in &report.attention {
        text.push_str(&format!("\n- {item}"));
    }
    text
}
