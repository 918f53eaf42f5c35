//! The watch: after the new key is live, sample the service's error rates
//! and judge whether the rotation hurt it.
//!
//! A playbook's `watch:` section ([`spec`]) lists checks: Prometheus
//! queries or plain HTTP requests, each with a threshold, an interval, a
//! duration and the rules that turn samples into a verdict ([`verdict`]).
//! The engine runs a window of them after the push, while the old key
//! still exists, and again after the old key is disabled; [`window`] is that
//! sampling loop. A relative threshold is measured against a baseline that
//! the engine samples and journals before the push.

pub mod client;
pub mod sample;
pub mod spec;
pub mod verdict;
pub mod window;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::retry::{self, Failure, RetryPolicy};
use crate::targets::SetupError;
use client::{HttpClient, PrometheusClient};
use sample::{ProbeError, Reading};
use spec::{CheckSpec, Source, WatchSpec};
use window::Probe;

/// The two windows of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchWindow {
    /// After the push, before revoke: an issuer that keeps keys still has
    /// the old one enabled.
    Overlap,
    /// After the old key is disabled, before it is deleted.
    AfterRevoke,
}

impl WatchWindow {
    /// Returns the name used in step names (`watch:overlap`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overlap => "overlap",
            Self::AfterRevoke => "after-revoke",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "overlap" => Some(Self::Overlap),
            "after-revoke" => Some(Self::AfterRevoke),
            _ => None,
        }
    }

    /// Words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Overlap => "after the push",
            Self::AfterRevoke => "after the old key was disabled",
        }
    }
}

impl fmt::Display for WatchWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A playbook's watch, ready to sample: its spec and the clients it needs.
pub struct Watcher {
    pub spec: WatchSpec,
    prometheus: Option<PrometheusClient>,
    http: BTreeMap<String, (HttpClient, Url)>,
    /// Replaces the clients in tests.
    probe: Option<Box<dyn Probe>>,
}

impl Watcher {
    /// Builds the clients, reading the environment variables the spec
    /// names. Every problem is returned, each naming its field.
    pub fn new(spec: WatchSpec) -> Result<Self, Vec<SetupError>> {
        let mut errors = Vec::new();
        let prometheus = spec.prometheus.as_ref().and_then(|prometheus| {
            let setup = |field: &str, message: String| SetupError {
                field: format!("watch.prometheus.{field}"),
                message,
            };
            let address = match read_address(&prometheus.address_env) {
                Ok(address) => address,
                Err(message) => {
                    errors.push(setup("address_env", message));
                    return None;
                }
            };
            PrometheusClient::new(&address, &prometheus.connection)
                .map_err(|(field, message)| errors.push(setup(field, message)))
                .ok()
        });
        let mut http = BTreeMap::new();
        for check in &spec.checks {
            let Source::Http {
                url, connection, ..
            } = &check.source
            else {
                continue;
            };
            let parsed = Url::parse(url).map_err(|err| SetupError {
                field: format!("{}.url", check.path),
                message: format!("invalid URL: {err}"),
            });
            let client = HttpClient::new(connection).map_err(|(field, message)| SetupError {
                field: format!("{}.{field}", check.path),
                message,
            });
            match (client, parsed) {
                (Ok(client), Ok(url)) => {
                    http.insert(check.name.clone(), (client, url));
                }
                (client, parsed) => {
                    errors.extend(client.err());
                    errors.extend(parsed.err());
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            spec,
            prometheus,
            http,
            probe: None,
        })
    }

    /// Builds a watcher that reads through `probe` instead of the network.
    pub fn with_probe(spec: WatchSpec, probe: Box<dyn Probe>) -> Self {
        Self {
            spec,
            prometheus: None,
            http: BTreeMap::new(),
            probe: Some(probe),
        }
    }

    /// Reads a check's baseline, retrying errors that may pass. The
    /// baseline must be one finite number.
    pub async fn baseline(&self, check: &CheckSpec, policy: &RetryPolicy) -> Result<f64, String> {
        let what = format!("baseline of {}", check.name);
        let reading = retry::retry(policy, &what, |_| async {
            self.read(check).await.map_err(|err| {
                if err.retryable {
                    Failure::retryable(err)
                } else {
                    Failure::Fatal(err)
                }
            })
        })
        .await
        .map_err(|err| err.message)?;
        match reading {
            Reading::Series(series) => match series.as_slice() {
                [] => Err("the query returned no data".into()),
                [one] if one.value.is_finite() => Ok(one.value),
                [one] => Err(format!(
                    "the value is {}, not a finite number",
                    sample::format_value(one.value)
                )),
                many => Err(format!(
                    "the query returned {} series; a relative threshold needs one (aggregate with sum() or avg())",
                    many.len()
                )),
            },
            Reading::Status(status) => Err(format!("HTTP {status} without a value")),
        }
    }
}

#[async_trait]
impl Probe for Watcher {
    async fn read(&self, check: &CheckSpec) -> Result<Reading, ProbeError> {
        if let Some(probe) = &self.probe {
            return probe.read(check).await;
        }
        match &check.source {
            Source::Query { promql, .. } => {
                let client = self.prometheus.as_ref().ok_or_else(|| {
                    ProbeError::fatal("no Prometheus client was configured for this query")
                })?;
                client.query(promql).await.map(Reading::Series)
            }
            Source::Http { json_pointer, .. } => {
                let (client, url) = self.http.get(&check.name).ok_or_else(|| {
                    ProbeError::fatal("no HTTP client was configured for this check")
                })?;
                client::read_http(client, url, json_pointer.as_deref()).await
            }
        }
    }
}

fn read_address(variable: &str) -> Result<Url, String> {
    let text = std::env::var(variable).map_err(|_| {
        format!(
            "environment variable {variable} is not set; export the Prometheus address in it (for example http://127.0.0.1:9090) or name another variable in address_env"
        )
    })?;
    Url::parse(text.trim())
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .ok_or_else(|| {
            format!("{variable} holds {text:?}, which is not an http:// or https:// URL")
        })
}
