//! HTTP clients of the watch: Prometheus instant queries and generic HTTP
//! checks.
//!
//! Prometheus API reference:
//! <https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries>.
//! A response is `{"status": "success", "data": {"resultType": ..., "result":
//! ...}}` or `{"status": "error", "errorType": ..., "error": ...}`. Only the
//! `vector` and `scalar` result types have one value per series, so a range
//! vector or a string answer is an error of the query.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use super::sample::{ProbeError, Reading, SeriesValue, parse_value};
use super::spec::{Auth, Connection};

/// An HTTP client with the authentication and headers of a [`Connection`],
/// read from the environment when it is built.
pub struct HttpClient {
    http: reqwest::Client,
    headers: HeaderMap,
}

impl HttpClient {
    /// Builds the client. Errors name the spec field concerned.
    pub fn new(connection: &Connection) -> Result<Self, (&'static str, String)> {
        let mut builder = reqwest::Client::builder()
            .timeout(connection.timeout)
            .connect_timeout(connection.timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &connection.ca_cert {
            let pem = std::fs::read(path).map_err(|err| {
                (
                    "ca_cert",
                    format!("cannot read CA certificate {}: {err}", path.display()),
                )
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|err| {
                (
                    "ca_cert",
                    format!("invalid CA certificate {}: {err}", path.display()),
                )
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder
            .build()
            .map_err(|err| ("ca_cert", format!("cannot build the HTTP client: {err}")))?;

        let mut headers = HeaderMap::new();
        for (name, value) in &connection.headers {
            // Both were validated when the playbook was decoded.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        if let Some(value) = authorization(&connection.auth)? {
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Self { http, headers })
    }

    async fn get(&self, url: Url) -> Result<reqwest::Response, ProbeError> {
        self.http
            .get(url.clone())
            .headers(self.headers.clone())
            .send()
            .await
            .map_err(|err| {
                let what = if err.is_timeout() {
                    "timed out"
                } else if err.is_connect() {
                    "cannot connect"
                } else {
                    "request failed"
                };
                ProbeError::retryable(format!(
                    "{} {what}: {}",
                    without_query(&url),
                    error_chain(&err)
                ))
            })
    }
}

/// Builds the `Authorization` header value from the environment. The value
/// is marked sensitive so that reqwest never prints it.
fn authorization(auth: &Auth) -> Result<Option<HeaderValue>, (&'static str, String)> {
    let read = |field: &'static str, name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                (
                    field,
                    format!(
                        "environment variable {name} is not set or empty; export it or name another variable in `{field}`"
                    ),
                )
            })
    };
    let text = match auth {
        Auth::None => return Ok(None),
        Auth::Bearer { token_env } => format!("Bearer {}", read("token_env", token_env)?.trim()),
        Auth::Basic {
            username_env,
            password_env,
        } => {
            use base64::Engine as _;
            let user = read("username_env", username_env)?;
            let password = read("password_env", password_env)?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {encoded}")
        }
    };
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        (
            "token_env",
            "the credentials hold characters that cannot be sent in an HTTP header".to_string(),
        )
    })?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// Returns the URL without its query string, for messages.
fn without_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A Prometheus server.
pub struct PrometheusClient {
    client: HttpClient,
    query_url: Url,
}

impl PrometheusClient {
    /// Builds the client for the server at `address`, such as
    /// `http://127.0.0.1:9090` or `https://host/prometheus/`.
    pub fn new(address: &Url, connection: &Connection) -> Result<Self, (&'static str, String)> {
        let mut base = address.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let query_url = base
            .join("api/v1/query")
            .map_err(|err| ("address_env", format!("invalid Prometheus address: {err}")))?;
        Ok(Self {
            client: HttpClient::new(connection)?,
            query_url,
        })
    }

    /// Runs an instant query at the server's current time.
    pub async fn query(&self, promql: &str) -> Result<Vec<SeriesValue>, ProbeError> {
        let mut url = self.query_url.clone();
        url.query_pairs_mut().append_pair("query", promql);
        let response = self.client.get(url).await?;
        let status = response.status();
        let body = response.bytes().await.map_err(|err| {
            ProbeError::retryable(format!("reading the Prometheus response failed: {err}"))
        })?;
        parse_query_answer(status.as_u16(), &body)
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<AnswerData>,
    #[serde(default, rename = "errorType")]
    error_type: String,
    #[serde(default)]
    error: String,
}

#[derive(Deserialize)]
struct AnswerData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorItem {
    #[serde(default)]
    metric: std::collections::BTreeMap<String, String>,
    value: (serde_json::Value, String),
}

/// Parses the body of an instant query response.
pub fn parse_query_answer(status: u16, body: &[u8]) -> Result<Vec<SeriesValue>, ProbeError> {
    let answer: Answer = match serde_json::from_slice(body) {
        Ok(answer) => answer,
        Err(_) => {
            let message = format!("Prometheus responded HTTP {status} without a JSON body");
            return Err(if status >= 500 || status == 429 {
                ProbeError::retryable(message)
            } else {
                ProbeError::fatal(message)
            });
        }
    };
    if answer.status != "success" {
        // bad_data is a query that cannot work as written; the other types
        // (execution, timeout, canceled, internal, unavailable) may pass.
        let message = format!(
            "Prometheus rejected the query ({}): {}",
            answer.error_type, answer.error
        );
        return Err(if answer.error_type == "bad_data" {
            ProbeError::fatal(message)
        } else {
            ProbeError::retryable(message)
        });
    }
    let data = answer.data.ok_or_else(|| {
        ProbeError::fatal("the Prometheus response has status success but no data")
    })?;
    match data.result_type.as_str() {
        "vector" => {
            let items: Vec<VectorItem> = serde_json::from_value(data.result).map_err(|err| {
                ProbeError::fatal(format!("invalid vector in the Prometheus response: {err}"))
            })?;
            items
                .into_iter()
                .map(|item| {
                    let value = parse_value(&item.value.1).map_err(ProbeError::fatal)?;
                    Ok(SeriesValue {
                        labels: format_labels(&item.metric),
                        value,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, text): (serde_json::Value, String) = serde_json::from_value(data.result)
                .map_err(|err| {
                    ProbeError::fatal(format!("invalid scalar in the Prometheus response: {err}"))
                })?;
            let value = parse_value(&text).map_err(ProbeError::fatal)?;
            Ok(vec![SeriesValue {
                labels: "{}".into(),
                value,
            }])
        }
        other => Err(ProbeError::fatal(format!(
            "the query returned a {other}; a watch query must return an instant vector or a scalar (aggregate a range with rate() or avg_over_time())"
        ))),
    }
}

fn format_labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .filter(|(name, _)| *name != "__name__")
        .map(|(name, value)| format!("{name}={value:?}"))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Reads a generic HTTP check: the status alone, or with `pointer` the
/// number at that place of the JSON body.
pub async fn read_http(
    client: &HttpClient,
    url: &Url,
    pointer: Option<&str>,
) -> Result<Reading, ProbeError> {
    let response = client.get(url.clone()).await?;
    let status = response.status().as_u16();
    let Some(pointer) = pointer else {
        return Ok(Reading::Status(status));
    };
    if !response.status().is_success() {
        return Ok(Reading::Status(status));
    }
    let body: serde_json::Value = response.json().await.map_err(|err| {
        ProbeError::fatal(format!(
            "{} did not respond with JSON: {err}",
            without_query(url)
        ))
    })?;
    json_reading(&body, pointer)
        .map_err(|message| ProbeError::fatal(format!("{}: {message}", without_query(url))))
}

/// Reads the value at `pointer`: a number, or a string in Prometheus's
/// number format. A missing or null value is no data.
pub fn json_reading(body: &serde_json::Value, pointer: &str) -> Result<Reading, String> {
    let value = match body.pointer(pointer) {
        None | Some(serde_json::Value::Null) => return Ok(Reading::Series(Vec::new())),
        Some(serde_json::Value::Number(number)) => number
            .as_f64()
            .ok_or_else(|| format!("{pointer} is not a number keywheel can read"))?,
        Some(serde_json::Value::String(text)) => parse_value(text)?,
        Some(other) => {
            return Err(format!(
                "{pointer} holds {}, not a number",
                match other {
                    serde_json::Value::Bool(_) => "a boolean",
                    serde_json::Value::Array(_) => "a list",
                    _ => "an object",
                }
            ));
        }
    };
    Ok(Reading::Series(vec![SeriesValue {
        labels: pointer.to_string(),
        value,
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_answer_parses_every_series() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"x","job":"a"},"value":[1700000000.1,"0.25"]},
            {"metric":{"job":"b"},"value":[1700000000.1,"+Inf"]}]}}"#;
        let series = parse_query_answer(200, body).unwrap();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].labels, r#"{job="a"}"#);
        assert_eq!(series[0].value, 0.25);
        assert_eq!(series[1].value, f64::INFINITY);
    }

    #[test]
    fn scalar_nan_answer_is_nan() {
        let body =
            br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.1,"NaN"]}}"#;
        let series = parse_query_answer(200, body).unwrap();
        assert!(series[0].value.is_nan());
    }

    #[test]
    fn empty_vector_is_no_series() {
        let body = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(parse_query_answer(200, body).unwrap().is_empty());
    }

    #[test]
    fn bad_data_is_not_retryable() {
        let body = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        let err = parse_query_answer(400, body).unwrap_err();
        assert!(!err.retryable);
        assert!(err.message.contains("parse error"));
    }

    #[test]
    fn server_error_without_json_is_retryable() {
        let err = parse_query_answer(502, b"<html>bad gateway</html>").unwrap_err();
        assert!(err.retryable);
    }

    #[test]
    fn range_vector_is_an_error() {
        let body = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let err = parse_query_answer(200, body).unwrap_err();
        assert!(err.message.contains("matrix"), "{}", err.message);
    }

    #[test]
    fn invalid_sample_text_is_an_error() {
        let body = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"inf"]}}"#;
        assert!(parse_query_answer(200, body).is_err());
    }

    #[test]
    fn json_pointer_reads_numbers_and_special_strings() {
        let body = serde_json::json!({"a": {"ratio": 0.5, "nan": "NaN", "flag": true}});
        let value = |reading: Reading| match reading {
            Reading::Series(series) => series.first().map(|s| s.value),
            Reading::Status(_) => panic!("status"),
        };
        assert_eq!(value(json_reading(&body, "/a/ratio").unwrap()), Some(0.5));
        assert!(
            value(json_reading(&body, "/a/nan").unwrap())
                .unwrap()
                .is_nan()
        );
        assert_eq!(value(json_reading(&body, "/a/missing").unwrap()), None);
        assert!(json_reading(&body, "/a/flag").is_err());
    }
}
