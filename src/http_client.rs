//! HTTP requests of the `http` issuer and of verification probes.
//!
//! Requests may carry secrets (an admin token, a new key in a header), and
//! so may responses (the secret a create returns). Request and response
//! bodies therefore live in buffers that are zeroed on drop, header values
//! are marked sensitive, and nothing here logs them. A response that
//! is not what a caller expected is described, never printed raw: an HTML
//! error page becomes "an HTML page titled ...", a JSON error its code and
//! message, with known secrets redacted.
//!
//! Redirects are not followed, so a credential is never sent to a host the
//! playbook did not name.

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use crate::playbook::decode::{Cx, MapReader};
use crate::secret::Redactor;

/// Largest response body read; anything longer is an error.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Maximum length, in characters, of an error message shown from a response.
const MAX_EXCERPT_CHARS: usize = 200;

/// An HTTP client with a timeout per request and no redirects.
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

/// A request ready to send. Header values and the body may hold secrets,
/// so its `Debug` output shows neither.
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Zeroizing<Vec<u8>>>,
}

/// A response: status, content type, body and `Retry-After`. The body may
/// hold a secret, so `Debug` shows only its length.
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Zeroizing<Vec<u8>>,
    pub retry_after: Option<Duration>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_bytes", &self.body.as_ref().map(|b| b.len()))
            .finish()
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// A request that got no response: connection refused, timed out, reset.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<Self, String> {
        let inner = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| format!("cannot build an HTTP client: {err}"))?;
        Ok(Self { inner })
    }

    /// Sends `request` once and reads the whole response.
    pub async fn send(&self, request: &Request) -> Result<Response, TransportError> {
        let mut builder = self
            .inner
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone());
        if let Some(body) = &request.body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let response = builder
            .send()
            .await
            .map_err(|err| TransportError(describe_transport_error(&err)))?;
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let retry_after = header(reqwest::header::RETRY_AFTER)
            .as_deref()
            .and_then(crate::retry::parse_retry_after);
        if response
            .content_length()
            .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
        {
            return Err(TransportError(format!(
                "the response is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|err| TransportError(describe_transport_error(&err)))?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(TransportError(format!(
                "the response is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        Ok(Response {
            status,
            content_type,
            body: Zeroizing::new(bytes.to_vec()),
            retry_after,
        })
    }
}

/// Builds a header, marked sensitive so that no debug output shows it.
pub fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    let mut value = HeaderValue::from_str(value).map_err(|_| {
        format!(
            "the value of header {name} has characters a header cannot carry, such as a line break"
        )
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

impl Response {
    /// Returns whether a retry may help: the status says the server is
    /// throttling, or that it or a gateway before it failed.
    pub fn is_retryable(&self) -> bool {
        matches!(self.status, 429 | 500 | 502 | 503 | 504)
    }

    /// Parses the body as JSON; the error describes what came instead.
    // NOTE: the parsed value holds any secret in the body (the secret of a
    // created key) in plain `String`s, which serde_json does not zero when
    // they are dropped; only the body buffer is zeroed.
    pub fn json(&self, redactor: &Redactor) -> Result<Value, String> {
        if self.looks_like_html() {
            return Err(self.describe(redactor));
        }
        serde_json::from_slice(&self.body).map_err(|_| self.describe(redactor))
    }

    fn looks_like_html(&self) -> bool {
        if self.content_type.to_ascii_lowercase().contains("html") {
            return true;
        }
        let start = String::from_utf8_lossy(&self.body[..self.body.len().min(256)])
            .trim_start()
            .to_ascii_lowercase();
        start.starts_with("<!doctype html") || start.starts_with("<html")
    }

    /// Describes the body in a few words, for error messages: an HTML
    /// page's title, a JSON error's code and message, or a short excerpt
    /// of text. Known secrets are redacted.
    pub fn describe(&self, redactor: &Redactor) -> String {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return "an empty body".into();
        }
        let text = String::from_utf8_lossy(&self.body);
        if self.looks_like_html() {
            return match html_title(&text) {
                Some(title) => format!(
                    "an HTML page titled {:?}",
                    excerpt(&redactor.redact(&title))
                ),
                None => "an HTML page".into(),
            };
        }
        if let Ok(value) = serde_json::from_slice::<Value>(&self.body) {
            return match json_error_message(&value) {
                Some(message) => excerpt(&redactor.redact(&message)),
                None => "a JSON body without an error message".into(),
            };
        }
        let first_line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        format!(
            "{} bytes of {}: {:?}",
            self.body.len(),
            if self.content_type.is_empty() {
                "text"
            } else {
                self.content_type.as_str()
            },
            excerpt(&redactor.redact(first_line.trim()))
        )
    }
}

/// Finds an error code and message where common APIs put them.
fn json_error_message(value: &Value) -> Option<String> {
    let text = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let code = text("/error/code")
        .or_else(|| text("/error/type"))
        .or_else(|| text("/code"));
    let message = text("/error/message")
        .or_else(|| text("/error"))
        .or_else(|| text("/message"))
        .or_else(|| text("/detail"))
        .or_else(|| text("/errors/0/message"))
        .or_else(|| text("/errors/0"))
        .or_else(|| text("/title"));
    match (code, message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (code, message) => code.or(message),
    }
}

fn html_title(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let end = start + lower[start..].find("</title>")?;
    let title = text.get(start..end)?.trim();
    (!title.is_empty()).then(|| title.to_string())
}

/// Cuts `text` to a bounded excerpt without control characters.
fn excerpt(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= MAX_EXCERPT_CHARS {
        return clean;
    }
    let cut: String = clean.chars().take(MAX_EXCERPT_CHARS).collect();
    format!("{cut}...")
}

/// Describes a transport error with its causes, which name the real problem
/// (connection refused, timed out, reset).
fn describe_transport_error(err: &reqwest::Error) -> String {
    let mut text = match (err.is_timeout(), err.is_connect()) {
        (true, _) => "timed out".to_string(),
        (false, true) => "connection failed".to_string(),
        (false, false) => "request failed".to_string(),
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Joins a rendered URL to a base: a URL that starts with `/` is appended
/// to the base's path, anything else must be an absolute http(s) URL.
pub fn resolve_url(base: Option<&Url>, rendered: &str) -> Result<Url, String> {
    if rendered.starts_with('/') {
        let Some(base) = base else {
            return Err("the URL is relative, but no base URL is set".into());
        };
        let joined = format!("{}{rendered}", base.as_str().trim_end_matches('/'));
        return Url::parse(&joined).map_err(|err| format!("invalid URL: {err}"));
    }
    let url = Url::parse(rendered).map_err(|err| format!("invalid URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("URL scheme {} is not http or https", url.scheme()));
    }
    Ok(url)
}

/// Where the base URL of relative request URLs comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseUrl {
    Literal(Url),
    /// The name of an environment variable read when a run starts.
    Env(String),
}

impl BaseUrl {
    /// Reads `base_url` or `base_url_env` from `reader`; at most one.
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        let literal = reader.optional::<String>("base_url", cx);
        let env = reader.optional::<String>("base_url_env", cx);
        match (literal, env) {
            (Some(_), Some(_)) => {
                let node = reader.value("base_url_env").unwrap_or(reader.node());
                cx.error_hint(
                    node,
                    &reader.path_of("base_url_env"),
                    "`base_url` and `base_url_env` cannot both be set",
                    "keep one of them",
                );
                None
            }
            (Some(text), None) => match parse_base(&text) {
                Ok(url) => Some(Self::Literal(url)),
                Err(message) => {
                    let node = reader.value("base_url").unwrap_or(reader.node());
                    cx.error(node, &reader.path_of("base_url"), message);
                    None
                }
            },
            (None, Some(name)) => Some(Self::Env(name)),
            (None, None) => None,
        }
    }

    /// Returns the schema of the fields [`BaseUrl::decode`] reads, and the rule
    /// that at most one of them is set.
    pub fn schema_properties(
        of: &str,
    ) -> (Vec<(&'static str, serde_json::Value)>, serde_json::Value) {
        use crate::playbook::schema::{at_most_one, env_name};
        let base_url = serde_json::json!({
            "description": format!("Base URL of relative {of} URLs, such as https://api.example.com."),
            "type": "string",
            "pattern": "^https?://",
        });
        let base_url_env = env_name(
            &format!("Environment variable holding the base URL of relative {of} URLs."),
            None,
        );
        (
            vec![("base_url", base_url), ("base_url_env", base_url_env)],
            at_most_one(&["base_url", "base_url_env"]),
        )
    }

    /// The URL, reading the environment variable when there is one.
    pub fn resolve(&self) -> Result<Url, String> {
        match self {
            Self::Literal(url) => Ok(url.clone()),
            Self::Env(name) => {
                let text = std::env::var(name).map_err(|_| {
                    format!("environment variable {name} is not set; export the service's base URL in it, for example http://127.0.0.1:8080")
                })?;
                parse_base(text.trim()).map_err(|message| format!("{name}: {message}"))
            }
        }
    }
}

fn parse_base(text: &str) -> Result<Url, String> {
    Url::parse(text)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .ok_or_else(|| format!("{text:?} is not an http:// or https:// URL"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    fn sample(status: u16, content_type: &str, body: &str) -> Response {
        Response {
            status,
            content_type: content_type.into(),
            body: Zeroizing::new(body.as_bytes().to_vec()),
            retry_after: None,
        }
    }

    #[test]
    fn html_page_is_described_by_its_title() {
        let page = sample(
            502,
            "text/html; charset=utf-8",
            "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>x</body></html>",
        );
        let redactor = Redactor::new();
        assert_eq!(
            page.describe(&redactor),
            "an HTML page titled \"502 Bad Gateway\""
        );
        assert!(page.json(&redactor).unwrap_err().contains("HTML page"));
    }

    #[test]
    fn json_error_shows_code_and_message_redacted() {
        let mut redactor = Redactor::new();
        redactor.add(&SecretBytes::from_text("tok123"));
        let body = sample(
            401,
            "application/json",
            r#"{"error":{"code":"invalid_admin_token","message":"bad token tok123"}}"#,
        );
        assert_eq!(
            body.describe(&redactor),
            "invalid_admin_token: bad token [redacted]"
        );
    }

    #[test]
    fn relative_urls_join_the_base_path() {
        let base = Url::parse("http://127.0.0.1:8080/api/").unwrap();
        assert_eq!(
            resolve_url(Some(&base), "/v1/keys").unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1/keys"
        );
        assert!(resolve_url(None, "/v1/keys").is_err());
        assert!(resolve_url(None, "ftp://x/y").is_err());
    }
}
