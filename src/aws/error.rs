//! AWS errors, classified by their error code rather than the HTTP status.
//!
//! AWS rejects a throttled call with HTTP 400 and a code such as
//! `ThrottlingException`, the same status as a malformed request, so the
//! status alone cannot tell a call worth repeating from one that never
//! succeeds. [`classify_code`] maps the codes of the services keywheel calls
//! (Secrets Manager, IAM, STS) to a class; [`call`] retries throttled and
//! transient failures within the run's [`RetryPolicy`].

use std::fmt;
use std::future::Future;
use std::time::Duration;

use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use crate::retry::{self, Failure, RetryPolicy};

/// The class of a failed AWS call, which decides whether to repeat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The service refused the call because of its rate: repeat later.
    Throttled,
    /// A server error, timeout or lost connection: repeat later.
    Transient,
    /// Credentials are missing, invalid or lack a permission.
    Denied,
    /// The named object does not exist.
    NotFound,
    /// A quota is reached; repeating cannot help.
    LimitExceeded,
    /// The object exists in a state that conflicts with the call.
    Conflict,
    /// The request is invalid for the object's current state.
    Invalid,
    /// keywheel could not set up the call (no region, bad settings).
    Setup,
    /// Anything else; not repeated.
    Other,
}

/// A failed AWS call: its class, AWS error code and message. It contains
/// no secret, because AWS error messages do not echo request values.
#[derive(Clone, Debug)]
pub struct AwsError {
    pub class: ErrorClass,
    pub code: Option<String>,
    pub message: String,
    pub status: Option<u16>,
    /// The response's `Retry-After`, when it had one: the least time to
    /// wait before repeating.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, self.status) {
            (Some(code), Some(status)) => write!(f, "{code} (HTTP {status}): {}", self.message),
            (Some(code), None) => write!(f, "{code}: {}", self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for AwsError {}

impl AwsError {
    /// An error found before any call: a missing region, a bad setting.
    pub fn setup(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Setup,
            code: None,
            message: message.into(),
            status: None,
            retry_after: None,
        }
    }

    /// Classifies an SDK error by its AWS error code.
    ///
    /// Messages are built from the error code, the service's message and
    /// the chain of causes, never from the SDK's `Debug` output, which
    /// includes the raw response body: for a `GetSecretValue` whose answer
    /// failed to parse, that body holds the secret.
    pub fn from_sdk<E>(err: SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match &err {
            SdkError::ServiceError(context) => {
                let status = context.raw().status().as_u16();
                let code = context.err().code().map(str::to_string);
                let message = match context.err().message() {
                    Some(message) => message.to_string(),
                    None if code.is_some() => "no message".to_string(),
                    None => format!("HTTP {status} without an AWS error code"),
                };
                let class = match code.as_deref() {
                    Some(code) => classify_code(code, status),
                    None => classify_status(status),
                };
                let retry_after = context
                    .raw()
                    .headers()
                    .get("retry-after")
                    .and_then(crate::retry::parse_retry_after);
                Self {
                    class,
                    code,
                    message,
                    status: Some(status),
                    retry_after,
                }
            }
            SdkError::TimeoutError(_) => Self {
                class: ErrorClass::Transient,
                code: None,
                message: "the request timed out".into(),
                status: None,
                retry_after: None,
            },
            SdkError::DispatchFailure(failure) => {
                let message = match failure.as_connector_error() {
                    Some(connector) => format!("cannot send the request: {}", causes(connector)),
                    None => "cannot send the request".into(),
                };
                let class = if failure.is_user() || message.contains("credential") {
                    ErrorClass::Denied
                } else {
                    ErrorClass::Transient
                };
                Self {
                    class,
                    code: None,
                    message,
                    status: None,
                    retry_after: None,
                }
            }
            SdkError::ResponseError(context) => {
                let status = context.raw().status().as_u16();
                // A body cut short by the connection (a reset, a close
                // before Content-Length) fails with an I/O error, unlike
                // a body that arrived whole and failed to parse.
                let source = std::error::Error::source(&err);
                let lost = source.is_some_and(has_io_cause);
                let class = if status >= 500 || lost {
                    ErrorClass::Transient
                } else {
                    ErrorClass::Other
                };
                let message = match source {
                    Some(source) => {
                        format!("cannot read the answer (HTTP {status}): {}", causes(source))
                    }
                    None => format!("cannot read the answer (HTTP {status})"),
                };
                Self {
                    class,
                    code: None,
                    message,
                    status: Some(status),
                    retry_after: None,
                }
            }
            _ => {
                let message = match std::error::Error::source(&err) {
                    Some(source) => format!("cannot build the request: {}", causes(source)),
                    None => "cannot build the request".into(),
                };
                let class = if message.contains("credential") {
                    ErrorClass::Denied
                } else {
                    ErrorClass::Setup
                };
                Self {
                    class,
                    code: None,
                    message,
                    status: None,
                    retry_after: None,
                }
            }
        }
    }

    pub fn is(&self, class: ErrorClass) -> bool {
        self.class == class
    }

    pub fn has_code(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

/// Whether `error` or one of its causes is an I/O error.
fn has_io_cause(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(cause) = next {
        if cause.is::<std::io::Error>() {
            return true;
        }
        next = cause.source();
    }
    false
}

/// `error` and its causes, joined by ": ", each by its `Display` only.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

/// Classifies an error answer without an AWS error code by its status: a
/// proxy or load balancer in front of AWS answers this way.
fn classify_status(status: u16) -> ErrorClass {
    match status {
        429 => ErrorClass::Throttled,
        500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Other,
    }
}

/// Maps an AWS error code to its class. Codes are shared across the query
/// (IAM, STS) and JSON (Secrets Manager) protocols where they mean the same.
pub fn classify_code(code: &str, status: u16) -> ErrorClass {
    match code {
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "SlowDown"
        | "PriorRequestNotComplete" => ErrorClass::Throttled,
        "InternalServiceError"
        | "InternalServiceErrorException"
        | "InternalFailure"
        | "InternalError"
        | "ServiceFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException"
        // IAM asks to repeat these after a moment.
        | "ConcurrentModification"
        | "EntityTemporarilyUnmodifiable" => ErrorClass::Transient,
        "AccessDenied"
        | "AccessDeniedException"
        | "UnauthorizedOperation"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "AuthFailure"
        | "MissingAuthenticationToken"
        | "InvalidSignatureException"
        | "IncompleteSignature" => ErrorClass::Denied,
        "ResourceNotFoundException" | "NoSuchEntity" => ErrorClass::NotFound,
        "LimitExceeded" | "LimitExceededException" | "ServiceQuotaExceededException" => {
            ErrorClass::LimitExceeded
        }
        "ResourceExistsException" | "EntityAlreadyExists" | "PreconditionNotMetException" => {
            ErrorClass::Conflict
        }
        "InvalidRequestException"
        | "InvalidParameterException"
        | "InvalidParameterValue"
        | "ValidationError"
        | "ValidationException"
        | "DecryptionFailure"
        | "EncryptionFailure"
        | "MalformedPolicyDocumentException" => ErrorClass::Invalid,
        _ => classify_status(status),
    }
}

/// Whether repeating a call whose answer was lost could do it twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idempotency {
    /// Reads, and writes that are safe to repeat (a `ClientRequestToken`,
    /// setting a status, a delete that treats "not found" as done).
    Safe,
    /// A create without an idempotency token: only a call the service
    /// refused outright (throttled) is repeated. After a timeout or a lost
    /// connection the call may have succeeded, so it is not sent again.
    Unsafe,
}

/// Makes one AWS call through [`retry::retry`]: throttled calls are always
/// repeated within `policy`, transient failures only when `idempotency`
/// allows. `what` names the call in log lines.
pub async fn call<T, E, F, Fut>(
    policy: &RetryPolicy,
    idempotency: Idempotency,
    what: &str,
    mut send: F,
) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    retry::retry(policy, what, |_| {
        let sent = send();
        async move {
            sent.await.map_err(|err| {
                let err = AwsError::from_sdk(err);
                let repeat = match err.class {
                    ErrorClass::Throttled => true,
                    ErrorClass::Transient => idempotency == Idempotency::Safe,
                    _ => false,
                };
                if repeat {
                    let retry_after = err.retry_after;
                    Failure::Retryable {
                        error: err,
                        retry_after,
                    }
                } else {
                    Failure::Fatal(err)
                }
            })
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_differs_from_bad_request() {
        assert_eq!(
            classify_code("ThrottlingException", 400),
            ErrorClass::Throttled
        );
        assert_eq!(classify_code("Throttling", 400), ErrorClass::Throttled);
        assert_eq!(
            classify_code("InvalidRequestException", 400),
            ErrorClass::Invalid
        );
    }

    #[test]
    fn limits_are_terminal() {
        assert_eq!(
            classify_code("LimitExceeded", 409),
            ErrorClass::LimitExceeded
        );
        assert_eq!(
            classify_code("LimitExceededException", 400),
            ErrorClass::LimitExceeded
        );
    }

    #[test]
    fn unknown_codes_follow_the_status() {
        assert_eq!(classify_code("SomethingNew", 503), ErrorClass::Transient);
        assert_eq!(classify_code("SomethingNew", 429), ErrorClass::Throttled);
        assert_eq!(classify_code("SomethingNew", 400), ErrorClass::Other);
    }

    #[test]
    fn io_errors_are_found_among_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read the body")]
        struct Body(#[source] std::io::Error);

        let cut = Body(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(has_io_cause(&cut));
        let parse = serde_json::from_str::<u8>("x").unwrap_err();
        assert!(!has_io_cause(&parse));
    }

    #[test]
    fn display_shows_code_status_and_message() {
        let err = AwsError {
            class: ErrorClass::Throttled,
            code: Some("ThrottlingException".into()),
            message: "Rate exceeded".into(),
            status: Some(400),
            retry_after: None,
        };
        assert_eq!(
            err.to_string(),
            "ThrottlingException (HTTP 400): Rate exceeded"
        );
    }
}
