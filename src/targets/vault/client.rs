//! A minimal client for the Vault / OpenBao KV version 2 HTTP API.
//!
//! It covers exactly the calls the `vault` target makes, and keeps what the
//! target needs from each answer: the status, the `errors` and `warnings`
//! lists, and the `Retry-After` header. Paths are built from segments, never
//! by string prefixes: secret `dataface/test` on mount `test` is
//! `/v1/test/data/dataface/test`.
//!
//! API reference: <https://openbao.org/api-docs/secret/kv/kv-v2/>.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use url::Url;

use crate::retry::{self, Failure, RetryPolicy};
use crate::secret::SecretBytes;
use crate::targets::shared::SharedClients;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("cannot reach {address}: {detail}")]
    Unreachable { address: String, detail: String },
    #[error("{status} from {what}{}", messages_suffix(.errors))]
    Status {
        status: u16,
        what: String,
        errors: Vec<String>,
        warnings: Vec<String>,
        retry_after: Option<Duration>,
    },
    #[error("invalid answer from {what}: {detail}")]
    InvalidAnswer { what: String, detail: String },
}

fn messages_suffix(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

impl KvError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A check-and-set write refused because the version moved.
    pub fn is_cas_mismatch(&self) -> bool {
        self.status() == Some(400) && self.messages_contain("check-and-set parameter did not match")
    }

    /// A 404 that Vault explains as a path that a versioned store cannot
    /// have: a configuration error, not a missing secret.
    pub fn is_invalid_versioned_path(&self) -> bool {
        self.status() == Some(404) && self.messages_contain("Invalid path for a versioned K/V")
    }

    fn messages_contain(&self, needle: &str) -> bool {
        match self {
            Self::Status {
                errors, warnings, ..
            } => errors.iter().chain(warnings).any(|m| m.contains(needle)),
            _ => false,
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            Self::InvalidAnswer { .. } => false,
        }
    }
}

/// The parts of a mount's description that matter here.
#[derive(Clone, Debug)]
pub struct MountInfo {
    /// Mount path with a trailing slash, as Vault reports it.
    pub path: String,
    pub kind: String,
    /// KV version from the mount options: "1", "2", or empty.
    pub version: String,
}

/// Secret metadata: versions and settings.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub current_version: u64,
    #[serde(default)]
    pub cas_required: bool,
    #[serde(default)]
    pub versions: BTreeMap<String, VersionInfo>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct VersionInfo {
    #[serde(default)]
    pub deletion_time: String,
    #[serde(default)]
    pub destroyed: bool,
}

impl Metadata {
    /// Whether `version` is soft-deleted or destroyed.
    pub fn is_deleted(&self, version: u64) -> bool {
        self.versions
            .get(&version.to_string())
            .is_some_and(|v| v.destroyed || !v.deletion_time.is_empty())
    }
}

/// One version's data: field name to string value.
// NOTE: the values are secrets held in plain `String`s, which are not
// zeroed when dropped: serde_json decodes Vault's responses into them and
// writes request bodies from them. Zeroing needs a zeroing deserializer.
/// One version's data: field name to JSON value. Values that are not
/// strings (numbers, booleans, objects) are kept as they are, so a write
/// or restore leaves every unmanaged field exactly as it was.
pub type SecretData = BTreeMap<String, serde_json::Value>;

pub struct KvClient {
    http: reqwest::Client,
    address: Url,
    token: SecretBytes,
    namespace: Option<String>,
    retry: RetryPolicy,
}

/// Builds the HTTP client of Vault targets: no redirects, and the CA
/// certificate, when given, trusted next to the system's roots.
fn http_client(ca_cert: Option<&[u8]>, timeout: Duration) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_cert {
        let certificate = reqwest::Certificate::from_pem(pem)
            .map_err(|err| format!("invalid CA certificate: {err}"))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|err| format!("cannot build HTTP client: {err}"))
}

impl KvClient {
    /// Makes a client of the server at `address`, whose HTTP client is
    /// shared with the other targets in `shared` that have the same CA
    /// certificate and timeout.
    pub fn new(
        address: Url,
        token: SecretBytes,
        namespace: Option<String>,
        ca_cert: Option<&[u8]>,
        timeout: Duration,
        shared: &SharedClients,
    ) -> Result<Self, String> {
        let http = shared.http(ca_cert, timeout, || http_client(ca_cert, timeout))?;
        Ok(Self {
            http,
            address,
            token,
            namespace,
            retry: RetryPolicy::default(),
        })
    }

    pub fn address(&self) -> &Url {
        &self.address
    }

    /// Describes the mount that holds `mount`, through the same endpoint the
    /// Vault CLI uses to detect KV versions; any token with access to the
    /// path may call it.
    pub async fn mount_info(&self, mount: &[String]) -> Result<MountInfo, KvError> {
        let mut segments = vec!["sys", "internal", "ui", "mounts"];
        segments.extend(mount.iter().map(String::as_str));
        let body = self
            .call(Method::GET, &segments, &[], None, "mount lookup")
            .await?;
        let data = body.get("data").cloned().unwrap_or_default();
        let text =
            |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).unwrap_or("").to_string();
        Ok(MountInfo {
            path: text(data.get("path")),
            kind: text(data.get("type")),
            version: text(data.get("options").and_then(|o| o.get("version"))),
        })
    }

    /// Reads a secret's metadata; `None` when the secret does not exist.
    pub async fn metadata(
        &self,
        mount: &[String],
        path: &[String],
    ) -> Result<Option<Metadata>, KvError> {
        let segments = kv_segments(mount, "metadata", path);
        match self
            .call(Method::GET, &segments, &[], None, "metadata read")
            .await
        {
            Ok(body) => {
                let data = body.get("data").cloned().unwrap_or_default();
                serde_json::from_value(data)
                    .map(Some)
                    .map_err(|err| KvError::InvalidAnswer {
                        what: "metadata read".into(),
                        detail: err.to_string(),
                    })
            }
            Err(err) if err.status() == Some(404) && !err.is_invalid_versioned_path() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Reads one version's data; `None` when that version is deleted,
    /// destroyed or missing.
    pub async fn read(
        &self,
        mount: &[String],
        path: &[String],
        version: u64,
    ) -> Result<Option<SecretData>, KvError> {
        let segments = kv_segments(mount, "data", path);
        let query = [("version", version.to_string())];
        match self
            .call(Method::GET, &segments, &query, None, "secret read")
            .await
        {
            Ok(body) => {
                let data = body.get("data").and_then(|d| d.get("data")).cloned();
                match data {
                    None | Some(serde_json::Value::Null) => Ok(None),
                    Some(value) => decode_data(value).map(Some),
                }
            }
            Err(err) if err.status() == Some(404) && !err.is_invalid_versioned_path() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Writes a new version with check-and-set on `cas`; returns its number.
    pub async fn write(
        &self,
        mount: &[String],
        path: &[String],
        data: &SecretData,
        cas: u64,
    ) -> Result<u64, KvError> {
        let segments = kv_segments(mount, "data", path);
        let body = serde_json::json!({"options": {"cas": cas}, "data": data});
        // The body holds secret values: it is built here and dropped after
        // the call, and never logged.
        let answer = self
            .call(Method::POST, &segments, &[], Some(body), "secret write")
            .await?;
        answer
            .get("data")
            .and_then(|d| d.get("version"))
            .and_then(|v| v.as_u64())
            .ok_or_else(|| KvError::InvalidAnswer {
                what: "secret write".into(),
                detail: "the answer has no data.version".into(),
            })
    }

    /// Soft-deletes the given versions.
    pub async fn delete_versions(
        &self,
        mount: &[String],
        path: &[String],
        versions: &[u64],
    ) -> Result<(), KvError> {
        let segments = kv_segments(mount, "delete", path);
        let body = serde_json::json!({"versions": versions});
        self.call(Method::POST, &segments, &[], Some(body), "version delete")
            .await
            .map(drop)
    }

    /// Deletes the secret's metadata and every version.
    pub async fn delete_all(&self, mount: &[String], path: &[String]) -> Result<(), KvError> {
        let segments = kv_segments(mount, "metadata", path);
        self.call(Method::DELETE, &segments, &[], None, "secret delete")
            .await
            .map(drop)
    }

    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<serde_json::Value, KvError> {
        let mut url = self.address.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| KvError::InvalidAnswer {
                    what: what.into(),
                    detail: "the address cannot have a path".into(),
                })?;
            path.pop_if_empty().push("v1").extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let label = format!("vault {what}");
        retry::retry(&self.retry, &label, |_| {
            let request = self.request(method.clone(), url.clone(), body.as_ref());
            async move {
                match self.send(request, what).await {
                    Ok(value) => Ok(value),
                    Err(err) if err.is_retryable() => {
                        let retry_after = match &err {
                            KvError::Status { retry_after, .. } => *retry_after,
                            _ => None,
                        };
                        Err(Failure::Retryable {
                            error: err,
                            retry_after,
                        })
                    }
                    Err(err) => Err(Failure::Fatal(err)),
                }
            }
        })
        .await
    }

    fn request(
        &self,
        method: Method,
        url: Url,
        body: Option<&serde_json::Value>,
    ) -> reqwest::RequestBuilder {
        let token = String::from_utf8_lossy(self.token.expose());
        let mut header = reqwest::header::HeaderValue::from_str(&token)
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        header.set_sensitive(true);
        let mut request = self
            .http
            .request(method, url)
            .header("X-Vault-Token", header);
        if let Some(namespace) = &self.namespace {
            request = request.header("X-Vault-Namespace", namespace);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<serde_json::Value, KvError> {
        let response = request.send().await.map_err(|err| KvError::Unreachable {
            address: self.address.to_string(),
            detail: describe_transport_error(&err),
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        let bytes = response.bytes().await.map_err(|err| KvError::Unreachable {
            address: self.address.to_string(),
            detail: describe_transport_error(&err),
        })?;
        let body: serde_json::Value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(value) => value,
                Err(_) if status.is_success() => {
                    return Err(KvError::InvalidAnswer {
                        what: what.into(),
                        detail: format!("status {} with a body that is not JSON", status.as_u16()),
                    });
                }
                Err(_) => serde_json::Value::Null,
            }
        };
        if status.is_success() {
            return Ok(body);
        }
        Err(KvError::Status {
            status: status.as_u16(),
            what: what.into(),
            errors: string_list(body.get("errors")),
            warnings: string_list(body.get("warnings")),
            retry_after: if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                retry_after
            } else {
                None
            },
        })
    }
}

fn kv_segments<'a>(mount: &'a [String], kind: &'a str, path: &'a [String]) -> Vec<&'a str> {
    mount
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(kind))
        .chain(path.iter().map(String::as_str))
        .collect()
}

fn string_list(value: Option<&serde_json::Value>) -> Vec<String> {
    value
        .and_then(|v| v.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn decode_data(value: serde_json::Value) -> Result<SecretData, KvError> {
    let serde_json::Value::Object(object) = value else {
        return Err(KvError::InvalidAnswer {
            what: "secret read".into(),
            detail: "data.data is not an object".into(),
        });
    };
    Ok(object.into_iter().collect())
}

/// Describes a transport error with its causes, which name the real problem
/// (connection refused, timed out, certificate invalid).
fn describe_transport_error(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    // rustls reports a plain-HTTP answer to a TLS handshake this way.
    if text.contains("InvalidContentType") || text.contains("corrupt message") {
        text.push_str(
            " (the server does not seem to speak TLS: use an http:// address for a server without TLS)",
        );
    }
    text
}

/// Splits a mount or secret path into segments, rejecting empty, `.` and
/// `..` segments.
pub fn split_path(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() {
        return Err("path is empty".into());
    }
    let segments: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if let Some(bad) = segments
        .iter()
        .find(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(format!("path {text:?} has an invalid segment {bad:?}"));
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_built_exactly() {
        let mount = split_path("test").unwrap();
        let path = split_path("dataface/test").unwrap();
        assert_eq!(
            kv_segments(&mount, "data", &path).join("/"),
            "test/data/dataface/test"
        );
        let path = split_path("data/foo").unwrap();
        assert_eq!(
            kv_segments(&mount, "data", &path).join("/"),
            "test/data/data/foo"
        );
    }

    #[test]
    fn split_path_rejects_traversal() {
        assert!(split_path("a/../b").is_err());
        assert!(split_path("a//b").is_err());
        assert!(split_path("/").is_err());
        assert_eq!(split_path("/team/kv/").unwrap(), ["team", "kv"]);
    }
}
