//! Cluster access for the `kubernetes` target: building a `kube` client from
//! the playbook's settings, retrying calls, and turning API errors into
//! target errors that never quote the server's message.
//!
//! The API server's `message` can contain object content: a 422 response to a
//! PATCH quotes the whole patched object, Secret data included. So errors
//! are described from the Status `code`, `reason` and field names only,
//! together with the object and verb keywheel was working on.

use std::fmt;
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};

use super::spec::ClusterAccess;
use crate::retry::{self, Failure, RetryPolicy};
use crate::targets::TargetError;

/// A client with the address it talks to, for messages.
#[derive(Clone)]
pub struct Connection {
    pub client: kube::Client,
    /// The API server URL, never with credentials.
    pub server: String,
    /// Time limit of each attempt of a call, the whole response included.
    pub timeout: Duration,
}

/// Builds a client from the playbook's cluster settings. Errors name the
/// playbook field concerned.
pub async fn connect(
    access: &ClusterAccess,
    timeout: Duration,
) -> Result<Connection, (&'static str, String)> {
    let options = KubeConfigOptions {
        context: access.context.clone(),
        ..KubeConfigOptions::default()
    };
    let mut config = match (&access.kubeconfig_env, &access.context) {
        (Some(variable), _) => {
            let path = std::env::var(variable)
                .ok()
                .filter(|path| !path.trim().is_empty())
                .ok_or_else(|| {
                    (
                        "kubeconfig_env",
                        format!(
                            "environment variable {variable} is not set; export the path of a kubeconfig file in it"
                        ),
                    )
                })?;
            let kubeconfig = Kubeconfig::read_from(&path)
                .map_err(|err| ("kubeconfig_env", describe_kubeconfig_error(&path, &err)))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|err| context_error(access, &path, &err))?
        }
        (None, Some(_)) => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|err| context_error(access, "the default kubeconfig", &err))?,
        (None, None) => kube::Config::infer().await.map_err(|err| {
            (
                "kubeconfig_env",
                format!(
                    "no cluster configuration found ({err}); set KUBECONFIG, or name a variable holding a kubeconfig path in `kubeconfig_env`"
                ),
            )
        })?,
    };
    config.connect_timeout = Some(timeout.min(Duration::from_secs(10)));
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // Without this, the time a pooled connection sat idle counts against
    // the read timeout of the next request on it.
    config.reset_reader_on_write = true;
    // Retries go through `retry::retry`, with the run's policy, only.
    config.default_retry = false;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).map_err(|err| {
        (
            "kubeconfig_env",
            format!("cannot build a client for {server}: {err}"),
        )
    })?;
    Ok(Connection {
        client,
        server,
        timeout,
    })
}

/// Describes a kubeconfig that cannot be loaded. A parse error is not
/// quoted, because its text may include lines of the file, tokens and keys
/// among them.
fn describe_kubeconfig_error(path: &str, err: &KubeconfigError) -> String {
    match err {
        KubeconfigError::ReadConfig(io, _) => format!("cannot read kubeconfig {path}: {io}"),
        KubeconfigError::Parse(_) => format!(
            "{path} is not a valid kubeconfig (YAML parse error); check it with `kubectl config view --kubeconfig {path}`"
        ),
        other => format!("cannot load kubeconfig {path}: {other}"),
    }
}

fn context_error(
    access: &ClusterAccess,
    source: &str,
    err: &KubeconfigError,
) -> (&'static str, String) {
    match (err, &access.context) {
        (KubeconfigError::LoadContext(_), Some(context)) => (
            "context",
            format!(
                "context {context:?} is not in {source}; `kubectl config get-contexts` lists the contexts"
            ),
        ),
        (KubeconfigError::Parse(_), _) => {
            ("kubeconfig_env", describe_kubeconfig_error(source, err))
        }
        _ => (
            "kubeconfig_env",
            format!("cannot load the cluster settings from {source}: {err}"),
        ),
    }
}

/// A failed API call. Its `Display` never includes the server's message.
#[derive(Debug)]
pub struct CallError(pub kube::Error);

impl CallError {
    /// Returns the Status of the API server's response, when there is one.
    pub fn status(&self) -> Option<&kube::core::Status> {
        match &self.0 {
            kube::Error::Api(status) => Some(status),
            _ => None,
        }
    }

    pub fn is_reason(&self, reason: &str, code: u16) -> bool {
        self.status()
            .is_some_and(|s| s.reason == reason || (s.reason.is_empty() && s.code == code))
    }

    pub fn is_not_found(&self) -> bool {
        self.is_reason("NotFound", 404)
    }

    /// Checks for a write rejected because the object changed since it was
    /// read.
    pub fn is_conflict(&self) -> bool {
        self.is_reason("Conflict", 409)
    }

    pub fn is_already_exists(&self) -> bool {
        self.is_reason("AlreadyExists", 409)
    }

    /// Whether another attempt may succeed, and after how long at least.
    fn retry_hint(&self) -> Option<Option<Duration>> {
        match &self.0 {
            kube::Error::Api(status) => {
                let transient = matches!(status.code, 429 | 500 | 502 | 503 | 504)
                    || matches!(
                        status.reason.as_str(),
                        "TooManyRequests" | "ServiceUnavailable" | "ServerTimeout" | "Timeout"
                    );
                let after = status
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|seconds| *seconds > 0)
                    .map(|seconds| Duration::from_secs(u64::from(seconds.min(3600))));
                transient.then_some(after)
            }
            kube::Error::HyperError(_) | kube::Error::Service(_) => Some(None),
            _ => None,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            kube::Error::Api(status) => write!(f, "{}", describe_status(status)),
            kube::Error::SerdeError(err) => write!(
                f,
                "the response could not be decoded (line {}, column {})",
                err.line(),
                err.column()
            ),
            other => write!(f, "{other}"),
        }
    }
}

/// `422 Invalid (fields: data[KEY])`: the code, the reason and the fields
/// the server named, without its message.
fn describe_status(status: &kube::core::Status) -> String {
    let reason = if status.reason.is_empty() {
        "no reason given"
    } else {
        status.reason.as_str()
    };
    let mut text = format!("{} {reason}", status.code);
    let fields: Vec<&str> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .map(|cause| cause.field.as_str())
        .filter(|field| !field.is_empty())
        .collect();
    if !fields.is_empty() {
        text.push_str(&format!(" (fields: {})", fields.join(", ")));
    }
    text
}

/// Runs one API call under the retry policy: 429, 5xx and transport errors
/// are retried, honouring the server's `retryAfterSeconds`. Each attempt
/// gets `timeout` for the whole response, because the client's read timeout
/// starts again with every part of the body that arrives, so a response
/// that trickles in would otherwise take as long as the server likes.
pub async fn call<T, F, Fut>(
    policy: &RetryPolicy,
    timeout: Duration,
    what: &str,
    mut attempt: F,
) -> Result<T, CallError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry::retry(policy, what, |_| {
        let future = tokio::time::timeout(timeout, attempt());
        async move {
            let result = future.await.unwrap_or_else(|_| {
                let message = format!(
                    "no complete response within {}",
                    crate::playbook::decode::format_duration(timeout)
                );
                let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, message);
                Err(kube::Error::Service(Box::new(timed_out)))
            });
            result.map_err(|err| {
                let err = CallError(err);
                match err.retry_hint() {
                    Some(retry_after) => Failure::Retryable {
                        error: err,
                        retry_after,
                    },
                    None => Failure::Fatal(err),
                }
            })
        }
    })
    .await
}

/// The object a call concerned, for messages.
#[derive(Clone, Debug)]
pub struct Object<'a> {
    /// The resource as RBAC rules name it: `secrets`, `deployments`.
    pub resource: &'static str,
    pub namespace: &'a str,
    /// Empty for calls on a collection (create, list).
    pub name: &'a str,
}

impl fmt::Display for Object<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.name.is_empty(), self.namespace.is_empty()) {
            (true, true) => write!(f, "{}", self.resource),
            (true, false) => write!(f, "{} in namespace {}", self.resource, self.namespace),
            (false, true) => write!(f, "{} {}", self.resource, self.name),
            (false, false) => write!(f, "{} {}/{}", self.resource, self.namespace, self.name),
        }
    }
}

/// Turns a failed call into a target error that names the verb and the
/// object. `verb` is the RBAC verb of the call: get, list, create, update,
/// patch or delete.
pub fn target_error(err: CallError, verb: &str, object: &Object<'_>) -> TargetError {
    let Some(status) = err.status() else {
        return match err.0 {
            kube::Error::SerdeError(_) => {
                TargetError::InvalidResponse(format!("{verb} {object}: {err}"))
            }
            kube::Error::Auth(_) => TargetError::Denied(format!(
                "{verb} {object}: cannot get credentials for the cluster: {err}; check the user of the kubeconfig context"
            )),
            _ => TargetError::Unavailable(format!(
                "{verb} {object}: cannot reach the API server: {err}"
            )),
        };
    };
    let described = describe_status(status);
    match (status.code, status.reason.as_str()) {
        (403, _) | (_, "Forbidden") => {
            let scope = if object.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in namespace {}", object.namespace)
            };
            TargetError::Denied(format!(
                "permission denied ({described}): cannot {verb} {} {scope}{}; grant the credentials `{verb}` on `{}` there",
                object.resource,
                if object.name.is_empty() {
                    String::new()
                } else {
                    format!(" (object {})", object.name)
                },
                object.resource,
            ))
        }
        (401, _) | (_, "Unauthorized") => TargetError::Denied(format!(
            "{verb} {object}: the API server rejected the credentials ({described}); check the user of the kubeconfig context"
        )),
        (409, _) => TargetError::ConcurrentModification(format!("{verb} {object}: {described}")),
        (422, _) | (_, "Invalid") => TargetError::Misconfigured(format!(
            "{verb} {object}: the API server rejected the object as invalid ({described})"
        )),
        (404, _) => TargetError::Misconfigured(format!("{verb} {object}: not found ({described})")),
        _ if err.retry_hint().is_some() => {
            TargetError::Unavailable(format!("{verb} {object}: {described}"))
        }
        _ => TargetError::InvalidResponse(format!("{verb} {object}: {described}")),
    }
}

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::core::response::{StatusCause, StatusDetails};

    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> CallError {
        let mut status = Status::failure(message, reason).with_code(code);
        status.details = Some(StatusDetails {
            name: "s".into(),
            group: String::new(),
            kind: "secrets".into(),
            uid: String::new(),
            causes: vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: message.into(),
                field: "data[API_KEY]".into(),
            }],
            retry_after_seconds: 0,
        });
        CallError(kube::Error::Api(status.boxed()))
    }

    #[test]
    fn messages_never_quote_the_server() {
        let err = api_error(422, "Invalid", "Secret \"s\" is invalid: data: czNjcjN0");
        let text = target_error(
            err,
            "patch",
            &Object {
                resource: "secrets",
                namespace: "team-a",
                name: "s",
            },
        )
        .to_string();
        assert!(!text.contains("czNjcjN0"), "{text}");
        assert!(text.contains("422 Invalid"), "{text}");
        assert!(text.contains("data[API_KEY]"), "{text}");
        assert!(text.contains("secrets team-a/s"), "{text}");
    }

    #[test]
    fn forbidden_names_verb_resource_and_namespace() {
        let err = api_error(403, "Forbidden", "secret data");
        let text = target_error(
            err,
            "update",
            &Object {
                resource: "secrets",
                namespace: "team-b",
                name: "app",
            },
        );
        assert_eq!(text.class(), "denied");
        let text = text.to_string();
        assert!(
            text.contains("cannot update secrets in namespace team-b"),
            "{text}"
        );
        assert!(!text.contains("secret data"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn attempt_without_complete_response_times_out() {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let result: Result<(), CallError> =
            call(&policy, Duration::from_secs(2), "test read", || {
                attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::future::pending()
            })
            .await;
        let err = result.unwrap_err();
        assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert!(
            err.to_string().contains("no complete response within 2s"),
            "{err}"
        );
    }

    #[test]
    fn transient_statuses_are_retried() {
        assert!(
            api_error(503, "ServiceUnavailable", "")
                .retry_hint()
                .is_some()
        );
        assert!(api_error(429, "TooManyRequests", "").retry_hint().is_some());
        assert!(api_error(409, "Conflict", "").retry_hint().is_none());
        assert!(api_error(403, "Forbidden", "").retry_hint().is_none());
    }
}
