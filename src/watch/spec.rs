//! The `watch:` section of a playbook, decoded with every error at once.
//!
//! ```yaml
//! watch:
//!   on_inconclusive: rollback      # or hold
//!   prometheus:
//!     address_env: PROMETHEUS_URL  # default
//!     token_env: PROM_TOKEN        # bearer token; or username_env + password_env
//!     headers: {X-Scope-OrgID: team-a}
//!     ca_cert: prometheus-ca.pem
//!   queries:
//!     - name: error-ratio
//!       query: sum(rate(http_errors_total[1m])) / sum(rate(http_requests_total[1m]))
//!       max_increase: 0.01         # or max: 0.02, or max_ratio: 2.0
//!       interval: 15s
//!       duration: 5m
//!   http:
//!     - name: health
//!       url: https://app.example/healthz
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::playbook::check_name;
use crate::playbook::decode::{Cx, Decode, FieldPath, MapReader, decode_choice, format_duration};
use crate::playbook::yaml::{Node, Value};

pub const DEFAULT_ADDRESS_ENV: &str = "PROMETHEUS_URL";
const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_DURATION: Duration = Duration::from_secs(300);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 3;
/// Shortest interval accepted: faster samples would mostly read the same
/// scraped values again.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const ON_INCONCLUSIVE_CHOICES: &[&str] = &["rollback", "hold"];
const SERIES_CHOICES: &[&str] = &["all", "any"];
const NO_VALUE_CHOICES: &[&str] = &["inconclusive", "pass", "fail"];
/// Fields that would hold a credential inline, each with the field that
/// names its environment variable instead.
const INLINE_CREDENTIALS: [(&str, &str); 3] = [
    ("token", "token_env"),
    ("password", "password_env"),
    ("username", "username_env"),
];

/// A validated `watch:` section.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub on_inconclusive: OnInconclusive,
    /// Set when any check is a Prometheus query.
    pub prometheus: Option<PrometheusSpec>,
    /// Queries first, then HTTP checks, each in playbook order.
    pub checks: Vec<CheckSpec>,
}

impl WatchSpec {
    /// Returns the length of a window: the longest check duration.
    pub fn duration(&self) -> Duration {
        self.checks
            .iter()
            .map(|c| c.sampling.duration)
            .max()
            .unwrap_or_default()
    }

    pub fn check(&self, name: &str) -> Option<&CheckSpec> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// What an inconclusive window does to the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnInconclusive {
    /// Undo the rotation while the old key still works.
    #[default]
    Rollback,
    /// Stop the run as held; `resume` watches again, `rollback` undoes.
    Hold,
}

/// Where Prometheus is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct PrometheusSpec {
    /// Environment variable holding the server's base URL.
    pub address_env: String,
    pub connection: Connection,
}

/// HTTP client settings shared by Prometheus and HTTP checks. Secrets are
/// only ever named by environment variable.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    pub auth: Auth,
    /// Extra request headers with values written in the playbook, such as a
    /// tenant id; never a secret.
    pub headers: BTreeMap<String, String>,
    /// PEM file of the CA that signed the server's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Timeout of each request.
    pub timeout: Duration,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer`, token read from this variable.
    Bearer { token_env: String },
    /// HTTP basic authentication, both parts read from variables.
    Basic {
        username_env: String,
        password_env: String,
    },
}

/// One thing sampled during a window.
#[derive(Clone, Debug)]
pub struct CheckSpec {
    /// Unique among the playbook's checks; keys the journaled samples.
    pub name: String,
    /// Field path of the entry, such as `watch.queries[0]`, for messages.
    pub path: String,
    pub source: Source,
    /// `None` only for an HTTP check of the status alone.
    pub threshold: Option<Threshold>,
    pub sampling: Sampling,
}

#[derive(Clone, Debug)]
pub enum Source {
    /// A PromQL instant query.
    Query { promql: String, series: SeriesRule },
    /// A GET request whose response must have a 2xx status and, with
    /// `json_pointer`, a number under the threshold at that place of its
    /// JSON body.
    Http {
        url: String,
        json_pointer: Option<String>,
        connection: Connection,
    },
}

/// The bound a sampled value must stay at or under.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    Max(f64),
    /// The baseline plus this.
    MaxIncrease(f64),
    /// The baseline times this.
    MaxRatio(f64),
}

impl Threshold {
    pub fn needs_baseline(self) -> bool {
        !matches!(self, Self::Max(_))
    }

    /// Returns the bound for this baseline, or `None` when a relative
    /// threshold has no baseline.
    pub fn limit(self, baseline: Option<f64>) -> Option<f64> {
        match self {
            Self::Max(max) => Some(max),
            Self::MaxIncrease(increase) => baseline.map(|b| b + increase),
            Self::MaxRatio(ratio) => baseline.map(|b| b * ratio),
        }
    }

    /// Formats the threshold as the playbook writes it, for messages.
    pub fn describe(self) -> String {
        match self {
            Self::Max(max) => format!("max {max}"),
            Self::MaxIncrease(increase) => format!("max_increase {increase}"),
            Self::MaxRatio(ratio) => format!("max_ratio {ratio}"),
        }
    }
}

/// Which series of a multi-series response must pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SeriesRule {
    #[default]
    All,
    Any,
}

/// How a sample without a comparable value counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NoValue {
    /// Neither good nor a breach.
    #[default]
    Inconclusive,
    /// Counts as a good sample.
    Pass,
    /// Counts as a breach.
    Fail,
}

/// When to sample and how samples become a verdict.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    pub interval: Duration,
    pub duration: Duration,
    /// Good samples needed for a pass.
    pub min_samples: u32,
    /// Breaches tolerated; one more fails the check.
    pub failure_limit: u32,
    /// Errors in a row tolerated; one more makes the check inconclusive.
    pub consecutive_error_limit: u32,
    pub on_empty: NoValue,
    pub on_nan: NoValue,
}

impl Sampling {
    /// Samples a full window takes: one at the end of each interval.
    pub fn planned_samples(&self) -> u32 {
        planned_samples(self.interval, self.duration)
    }
}

fn planned_samples(interval: Duration, duration: Duration) -> u32 {
    if interval.is_zero() {
        return 0;
    }
    u32::try_from(duration.as_millis() / interval.as_millis()).unwrap_or(u32::MAX)
}

/// Decodes the `watch:` mapping.
pub fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<WatchSpec> {
    let mut reader = MapReader::new(node, path, cx)?;
    let on_inconclusive = match reader.value("on_inconclusive") {
        Some(value) => {
            let choice = decode_choice(
                value,
                &reader.path_of("on_inconclusive"),
                cx,
                ON_INCONCLUSIVE_CHOICES,
            );
            match choice {
                Some("hold") => OnInconclusive::Hold,
                _ => OnInconclusive::Rollback,
            }
        }
        None => OnInconclusive::default(),
    };
    let prometheus_node = reader.value("prometheus");
    let mut checks = Vec::new();
    if let Some(list) = reader.value("queries") {
        decode_list(
            list,
            &reader.path_of("queries"),
            cx,
            &mut checks,
            decode_query,
        );
    }
    if let Some(list) = reader.value("http") {
        decode_list(list, &reader.path_of("http"), cx, &mut checks, decode_http);
    }
    if reader.value("queries").is_none() && reader.value("http").is_none() {
        cx.error_hint(
            node,
            path,
            "the watch has no checks",
            "add `queries:` (Prometheus) or `http:` checks, or remove `watch:`",
        );
    }
    let has_query = checks
        .iter()
        .any(|c| matches!(c.source, Source::Query { .. }));
    let prometheus = match prometheus_node {
        Some(value) => decode_prometheus(value, &reader.path_of("prometheus"), cx),
        None => Some(PrometheusSpec {
            address_env: DEFAULT_ADDRESS_ENV.into(),
            connection: Connection {
                timeout: DEFAULT_TIMEOUT,
                ..Connection::default()
            },
        }),
    };
    if let (Some(value), false) = (prometheus_node, has_query) {
        cx.warn(
            value,
            &reader.path_of("prometheus"),
            "`prometheus` is set but no check is a query, so it is not used",
        );
    }
    reader.finish(cx);
    Some(WatchSpec {
        on_inconclusive,
        prometheus: prometheus.filter(|_| has_query),
        checks,
    })
}

/// Returns the schema of `watch:`.
pub fn schema() -> serde_json::Value {
    use crate::playbook::schema::{choice, object, with_rules};
    let properties = vec![
        (
            "on_inconclusive",
            choice(
                "What a window without a clear pass does: undo the rotation (rollback), or \
                 hold the run for `keywheel resume` or `keywheel rollback` (hold).",
                ON_INCONCLUSIVE_CHOICES,
                Some("rollback"),
            ),
        ),
        ("prometheus", prometheus_schema()),
        (
            "queries",
            serde_json::json!({
                "description": "Prometheus checks.",
                "type": "array",
                "minItems": 1,
                "items": query_schema(),
            }),
        ),
        (
            "http",
            serde_json::json!({
                "description": "HTTP checks, for services without Prometheus.",
                "type": "array",
                "minItems": 1,
                "items": http_schema(),
            }),
        ),
    ];
    let schema = object(
        "Checks sampled after the push, and after the old key is disabled; a breach \
         rolls the run back.",
        properties,
        &[],
    );
    let some_check =
        serde_json::json!({"anyOf": [{"required": ["queries"]}, {"required": ["http"]}]});
    with_rules(schema, vec![some_check])
}

fn prometheus_schema() -> serde_json::Value {
    use crate::playbook::schema::{env_name, object, rejected, with_rules};
    let (connection, rules) = connection_schema();
    let mut properties = vec![
        (
            "address_env",
            env_name(
                "Environment variable holding the base URL, such as http://127.0.0.1:9090.",
                Some(DEFAULT_ADDRESS_ENV),
            ),
        ),
        (
            "address",
            rejected("Never written in a playbook: name the variable in `address_env`."),
        ),
    ];
    properties.extend(connection);
    let schema = object("Where Prometheus is and how to reach it.", properties, &[]);
    with_rules(schema, rules)
}

fn query_schema() -> serde_json::Value {
    use crate::playbook::schema::{choice, exactly_one, object, with_rules};
    let query = serde_json::json!({
        "description": "PromQL, run as an instant query; it must return an instant vector or a scalar.",
        "type": "string",
        "minLength": 1,
    });
    let mut properties = vec![
        ("name", check_name_schema()),
        ("query", query),
        (
            "series",
            choice(
                "With several series: every one must pass (all), or one is enough (any).",
                SERIES_CHOICES,
                Some("all"),
            ),
        ),
    ];
    properties.extend(threshold_schema());
    properties.extend(sampling_schema());
    let schema = object("A Prometheus check.", properties, &["name", "query"]);
    with_rules(schema, vec![exactly_one(&THRESHOLD_FIELDS)])
}

fn http_schema() -> serde_json::Value {
    use crate::playbook::schema::{exactly_one, object, pointer, with_rules};
    let url = serde_json::json!({
        "description": "An http:// or https:// URL without credentials, fetched with GET.",
        "type": "string",
        "pattern": "^https?://",
    });
    let mut properties = vec![
        ("name", check_name_schema()),
        ("url", url),
        (
            "json_pointer",
            pointer(
                "JSON pointer into the response body of the value compared with the \
                 threshold. Without it only the status is checked.",
            ),
        ),
    ];
    properties.extend(threshold_schema());
    let (connection, mut rules) = connection_schema();
    properties.extend(connection);
    properties.extend(sampling_schema());
    let schema = object(
        "An HTTP check: a response that is not 2xx is a breach.",
        properties,
        &["name", "url"],
    );
    // A threshold compares the value at `json_pointer`, so it comes with
    // one; without a pointer only the status is checked.
    let any_threshold: Vec<serde_json::Value> = THRESHOLD_FIELDS
        .iter()
        .map(|field| serde_json::json!({"required": [field]}))
        .collect();
    rules.push(serde_json::json!({
        "if": {"required": ["json_pointer"]},
        "then": exactly_one(&THRESHOLD_FIELDS),
        "else": {"not": {"anyOf": any_threshold}},
    }));
    with_rules(schema, rules)
}

fn check_name_schema() -> serde_json::Value {
    crate::playbook::schema::name("Names the check; unique among the checks.")
}

fn threshold_schema() -> Vec<(&'static str, serde_json::Value)> {
    use crate::playbook::schema::number;
    let mut max_increase = number("The value must stay at or under the baseline plus this.");
    max_increase["minimum"] = 0.into();
    let mut max_ratio = number("The value must stay at or under the baseline times this.");
    max_ratio["exclusiveMinimum"] = 0.into();
    vec![
        ("max", number("The value must stay at or under this.")),
        ("max_increase", max_increase),
        ("max_ratio", max_ratio),
    ]
}

fn sampling_schema() -> Vec<(&'static str, serde_json::Value)> {
    use crate::playbook::schema::{choice, duration, integer};
    let mut failure_limit = integer(
        "Breaches tolerated; one more fails the window at once.",
        0,
        None,
    );
    failure_limit["default"] = 0.into();
    let mut error_limit = integer(
        "Errors in a row tolerated; one more ends the window as inconclusive.",
        0,
        None,
    );
    error_limit["default"] = DEFAULT_CONSECUTIVE_ERROR_LIMIT.into();
    vec![
        (
            "interval",
            duration(
                "Time between samples; the first is taken one interval after the window starts.",
                Some(DEFAULT_INTERVAL),
            ),
        ),
        (
            "duration",
            duration(
                "Length of the window for this check.",
                Some(DEFAULT_DURATION),
            ),
        ),
        (
            "min_samples",
            integer(
                "Good samples needed to pass (default: half the samples of a window, rounded up).",
                1,
                None,
            ),
        ),
        ("failure_limit", failure_limit),
        ("consecutive_error_limit", error_limit),
        (
            "on_empty",
            choice(
                "What a sample with no series counts as.",
                NO_VALUE_CHOICES,
                Some("inconclusive"),
            ),
        ),
        (
            "on_nan",
            choice(
                "What a NaN value counts as; NaN is never compared with a threshold.",
                NO_VALUE_CHOICES,
                Some("inconclusive"),
            ),
        ),
    ]
}

/// Returns the schema of the fields [`decode_connection`] reads, and the rules
/// between them.
fn connection_schema() -> (
    Vec<(&'static str, serde_json::Value)>,
    Vec<serde_json::Value>,
) {
    use crate::playbook::schema::{duration, env_name, headers, rejected, text};
    let mut headers = headers(
        "Extra request headers with non-secret values, such as X-Scope-OrgID: team-a; \
         Authorization is rejected.",
    );
    headers["propertyNames"]["not"] =
        serde_json::json!({"pattern": "^[Aa][Uu][Tt][Hh][Oo][Rr][Ii][Zz][Aa][Tt][Ii][Oo][Nn]$"});
    let mut properties = vec![
        (
            "token_env",
            env_name("Environment variable holding a bearer token.", None),
        ),
        (
            "username_env",
            env_name(
                "Environment variable holding the basic authentication user.",
                None,
            ),
        ),
        (
            "password_env",
            env_name(
                "Environment variable holding the basic authentication password.",
                None,
            ),
        ),
        ("headers", headers),
        (
            "ca_cert",
            text(
                "PEM file of the CA that signed the server's certificate, relative to the playbook.",
            ),
        ),
        (
            "timeout",
            duration("Timeout of each request.", Some(DEFAULT_TIMEOUT)),
        ),
    ];
    for (field, env_field) in INLINE_CREDENTIALS {
        let description =
            format!("Never written in a playbook: name the variable in `{env_field}`.");
        properties.push((field, rejected(&description)));
    }
    let rules = vec![
        serde_json::json!({
            "dependentRequired": {
                "username_env": ["password_env"],
                "password_env": ["username_env"],
            },
        }),
        crate::playbook::schema::at_most_one(&["token_env", "username_env"]),
    ];
    (properties, rules)
}

type DecodeCheck = fn(&Node, &FieldPath, &mut Cx) -> Option<CheckSpec>;

fn decode_list(
    node: &Node,
    path: &FieldPath,
    cx: &mut Cx,
    checks: &mut Vec<CheckSpec>,
    decode_one: DecodeCheck,
) {
    let Value::Sequence(items) = &node.value else {
        cx.error(
            node,
            path,
            format!("expected a list, found {}", node.kind_name()),
        );
        return;
    };
    if items.is_empty() {
        cx.error_hint(
            node,
            path,
            "the list is empty",
            "add a check or remove the field",
        );
    }
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let Some(check) = decode_one(item, &item_path, cx) else {
            continue;
        };
        if let Some(first) = checks.iter().find(|c| c.name == check.name) {
            cx.error_hint(
                item,
                &item_path.key("name"),
                format!("duplicate check name {:?}", check.name),
                format!("check names must be unique; {} uses it already", first.path),
            );
        }
        checks.push(check);
    }
}

fn decode_query(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<CheckSpec> {
    let mut reader = MapReader::new(node, path, cx)?;
    let name = decode_check_name(&mut reader, cx);
    let promql: String = reader.required("query", cx);
    if let Some(value) = reader.value("query")
        && promql.trim().is_empty()
    {
        cx.error(value, &reader.path_of("query"), "the query is empty");
    }
    let series = match reader.value("series") {
        Some(value) => match decode_choice(value, &reader.path_of("series"), cx, SERIES_CHOICES) {
            Some("any") => SeriesRule::Any,
            _ => SeriesRule::All,
        },
        None => SeriesRule::All,
    };
    let threshold = decode_threshold(&mut reader, cx, true);
    let sampling = decode_sampling(&mut reader, cx);
    reader.finish(cx);
    Some(CheckSpec {
        name,
        path: path.to_string(),
        source: Source::Query { promql, series },
        threshold,
        sampling,
    })
}

fn decode_http(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<CheckSpec> {
    let mut reader = MapReader::new(node, path, cx)?;
    let name = decode_check_name(&mut reader, cx);
    let url: String = reader.required("url", cx);
    if let Some(value) = reader.value("url") {
        check_url(value, &reader.path_of("url"), &url, cx);
    }
    let json_pointer = reader.optional::<String>("json_pointer", cx);
    if let (Some(pointer), Some(value)) = (&json_pointer, reader.value("json_pointer"))
        && !pointer.is_empty()
        && !pointer.starts_with('/')
    {
        cx.error_hint(
            value,
            &reader.path_of("json_pointer"),
            format!("invalid JSON pointer {pointer:?}"),
            "start it with '/', for example /errors/ratio",
        );
    }
    let threshold = decode_threshold(&mut reader, cx, json_pointer.is_some());
    let connection = decode_connection(&mut reader, cx);
    let sampling = decode_sampling(&mut reader, cx);
    reader.finish(cx);
    Some(CheckSpec {
        name,
        path: path.to_string(),
        source: Source::Http {
            url,
            json_pointer,
            connection,
        },
        threshold,
        sampling,
    })
}

fn decode_check_name(reader: &mut MapReader<'_>, cx: &mut Cx) -> String {
    let name: String = reader.required("name", cx);
    if let Some(node) = reader.value("name") {
        check_name(node, &reader.path_of("name"), &name, cx);
    }
    name
}

fn check_url(node: &Node, path: &FieldPath, text: &str, cx: &mut Cx) {
    match url::Url::parse(text) {
        Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host().is_none() => {
            cx.error_hint(
                node,
                path,
                format!("invalid URL {text:?}"),
                "use an http:// or https:// URL",
            );
        }
        Ok(url) if !url.username().is_empty() || url.password().is_some() => {
            cx.error_hint(
                node,
                path,
                "the URL contains credentials",
                "credentials never go in a playbook: name environment variables in `token_env`, or in `username_env` and `password_env`",
            );
        }
        Ok(_) => {}
        Err(err) => cx.error_hint(
            node,
            path,
            format!("invalid URL {text:?}: {err}"),
            "use an http:// or https:// URL",
        ),
    }
}

const THRESHOLD_FIELDS: [&str; 3] = ["max", "max_increase", "max_ratio"];

/// Reads the one threshold field. `compares_values` is false for a check
/// of the HTTP status alone, which takes no threshold.
fn decode_threshold(
    reader: &mut MapReader<'_>,
    cx: &mut Cx,
    compares_values: bool,
) -> Option<Threshold> {
    let mut found: Vec<(&'static str, &Node, Threshold)> = Vec::new();
    let mut present = false;
    for field in THRESHOLD_FIELDS {
        let Some(node) = reader.value(field) else {
            continue;
        };
        present = true;
        let path = reader.path_of(field);
        let Some(value) = f64::decode(node, &path, cx) else {
            continue;
        };
        let threshold = match field {
            "max" => Threshold::Max(value),
            "max_increase" if value < 0.0 => {
                cx.error_hint(
                    node,
                    &path,
                    format!("invalid max_increase {value}"),
                    "use 0 or more: the increase over the baseline that is still acceptable",
                );
                continue;
            }
            "max_increase" => Threshold::MaxIncrease(value),
            _ if value <= 0.0 => {
                cx.error_hint(
                    node,
                    &path,
                    format!("invalid max_ratio {value}"),
                    "use a number above 0, such as 2.0 for twice the baseline",
                );
                continue;
            }
            _ => Threshold::MaxRatio(value),
        };
        found.push((field, node, threshold));
    }
    match (found.as_slice(), compares_values) {
        ([], true) if !present => {
            cx.error_hint(
                reader.node(),
                reader.path(),
                "missing threshold",
                "set one of `max`, `max_increase` or `max_ratio`",
            );
            None
        }
        ([(_, _, threshold)], true) => Some(*threshold),
        ([(field, node, _), ..], false) => {
            cx.error_hint(
                node,
                &reader.path_of(field),
                format!("`{field}` needs `json_pointer`"),
                "name the JSON value to compare in `json_pointer`, or remove the threshold to check the status alone",
            );
            None
        }
        ([_, (field, node, _), ..], true) => {
            cx.error_hint(
                node,
                &reader.path_of(field),
                "more than one threshold",
                "keep one of `max`, `max_increase` or `max_ratio`",
            );
            None
        }
        _ => None,
    }
}

fn decode_sampling(reader: &mut MapReader<'_>, cx: &mut Cx) -> Sampling {
    let interval = reader
        .optional::<Duration>("interval", cx)
        .unwrap_or(DEFAULT_INTERVAL);
    if interval < MIN_INTERVAL
        && let Some(node) = reader.value("interval")
    {
        cx.error_hint(
            node,
            &reader.path_of("interval"),
            format!("interval {} is too short", format_duration(interval)),
            format!("use {} or more", format_duration(MIN_INTERVAL)),
        );
    }
    let duration = reader
        .optional::<Duration>("duration", cx)
        .unwrap_or(DEFAULT_DURATION);
    if duration < interval {
        let node = reader.value("duration").unwrap_or(reader.node());
        cx.error_hint(
            node,
            &reader.path_of("duration"),
            format!(
                "duration {} is shorter than the interval {}",
                format_duration(duration),
                format_duration(interval)
            ),
            "a window takes one sample at the end of each interval; make the duration a multiple of the interval",
        );
    }
    let planned = planned_samples(interval, duration);
    let min_samples = match reader.value("min_samples") {
        Some(node) => {
            let path = reader.path_of("min_samples");
            let value = u32::decode(node, &path, cx).unwrap_or(1);
            if value == 0 {
                cx.error_hint(
                    node,
                    &path,
                    "min_samples is 0",
                    "a pass needs at least one good sample",
                );
            } else if value > planned && planned > 0 {
                cx.error_hint(
                    node,
                    &path,
                    format!(
                        "min_samples {value} is more than the {planned} samples the window takes"
                    ),
                    format!(
                        "lower it, or lengthen `duration`: {} every {} gives {planned}",
                        format_duration(duration),
                        format_duration(interval)
                    ),
                );
            }
            value
        }
        None => planned.div_ceil(2).max(1),
    };
    Sampling {
        interval,
        duration,
        min_samples,
        failure_limit: reader.optional("failure_limit", cx).unwrap_or(0),
        consecutive_error_limit: reader
            .optional("consecutive_error_limit", cx)
            .unwrap_or(DEFAULT_CONSECUTIVE_ERROR_LIMIT),
        on_empty: decode_no_value(reader, "on_empty", cx),
        on_nan: decode_no_value(reader, "on_nan", cx),
    }
}

fn decode_no_value(reader: &mut MapReader<'_>, field: &'static str, cx: &mut Cx) -> NoValue {
    let Some(node) = reader.value(field) else {
        return NoValue::default();
    };
    match decode_choice(node, &reader.path_of(field), cx, NO_VALUE_CHOICES) {
        Some("pass") => NoValue::Pass,
        Some("fail") => NoValue::Fail,
        _ => NoValue::Inconclusive,
    }
}

fn decode_prometheus(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<PrometheusSpec> {
    let mut reader = MapReader::new(node, path, cx)?;
    if let Some(value) = reader.value("address") {
        cx.error_hint(
            value,
            &reader.path_of("address"),
            "`address` cannot be written in a playbook",
            format!(
                "export the address in an environment variable and name it in `address_env` (default {DEFAULT_ADDRESS_ENV})"
            ),
        );
    }
    let address_env = reader
        .optional("address_env", cx)
        .unwrap_or_else(|| DEFAULT_ADDRESS_ENV.to_string());
    let connection = decode_connection(&mut reader, cx);
    reader.finish(cx);
    Some(PrometheusSpec {
        address_env,
        connection,
    })
}

fn decode_connection(reader: &mut MapReader<'_>, cx: &mut Cx) -> Connection {
    for (field, hint) in INLINE_CREDENTIALS {
        if let Some(value) = reader.value(field) {
            cx.error_hint(
                value,
                &reader.path_of(field),
                format!("`{field}` cannot be written in a playbook"),
                format!("put it in an environment variable and name that variable in `{hint}`"),
            );
        }
    }
    let token_env = reader.optional::<String>("token_env", cx);
    let username_env = reader.optional::<String>("username_env", cx);
    let password_env = reader.optional::<String>("password_env", cx);
    let auth = match (token_env, username_env, password_env) {
        (None, None, None) => Auth::None,
        (Some(token_env), None, None) => Auth::Bearer { token_env },
        (None, Some(username_env), Some(password_env)) => Auth::Basic {
            username_env,
            password_env,
        },
        (Some(_), _, _) => {
            let node = reader.value("token_env").unwrap_or(reader.node());
            cx.error_hint(
                node,
                &reader.path_of("token_env"),
                "a bearer token and basic authentication cannot both be set",
                "keep `token_env`, or `username_env` and `password_env`",
            );
            Auth::None
        }
        (None, username, _) => {
            let (field, other) = if username.is_some() {
                ("username_env", "password_env")
            } else {
                ("password_env", "username_env")
            };
            let node = reader.value(field).unwrap_or(reader.node());
            cx.error_hint(
                node,
                &reader.path_of(field),
                format!("`{field}` needs `{other}`"),
                "basic authentication needs both variables",
            );
            Auth::None
        }
    };
    let headers = match reader.value("headers") {
        Some(node) => decode_headers(node, &reader.path_of("headers"), cx),
        None => BTreeMap::new(),
    };
    Connection {
        auth,
        headers,
        ca_cert: reader
            .optional::<String>("ca_cert", cx)
            .map(|p| cx.resolve_path(&p)),
        timeout: reader.optional("timeout", cx).unwrap_or(DEFAULT_TIMEOUT),
    }
}

fn decode_headers(node: &Node, path: &FieldPath, cx: &mut Cx) -> BTreeMap<String, String> {
    let Some(headers) = BTreeMap::<String, String>::decode(node, path, cx) else {
        return BTreeMap::new();
    };
    for (name, value) in &headers {
        let header_path = path.key(name);
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            cx.error(node, &header_path, format!("invalid header name {name:?}"));
        } else if name.eq_ignore_ascii_case("authorization") {
            cx.error_hint(
                node,
                &header_path,
                "the Authorization header cannot be written in a playbook",
                "name the variable holding a bearer token in `token_env`",
            );
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            cx.error_hint(
                node,
                &header_path,
                "invalid header value",
                "use visible ASCII characters and spaces",
            );
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::decode::Diagnostic;
    use crate::playbook::yaml;

    fn decode_text(text: &str) -> (Option<WatchSpec>, Vec<Diagnostic>) {
        let root = yaml::parse(text).unwrap();
        let mut cx = Cx::new(PathBuf::from("/base"));
        let mut reader = MapReader::new(&root, &FieldPath::root(), &mut cx).unwrap();
        let node = reader.value("watch").unwrap();
        let spec = decode(node, &FieldPath::root().key("watch"), &mut cx);
        reader.finish(&mut cx);
        (spec, cx.diagnostics)
    }

    #[test]
    fn query_takes_defaults() {
        let (spec, diags) = decode_text(
            "watch:\n  queries:\n    - name: errors\n      query: up\n      max: 0.05\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let spec = spec.unwrap();
        let check = &spec.checks[0];
        assert_eq!(check.threshold, Some(Threshold::Max(0.05)));
        assert_eq!(check.sampling.interval, DEFAULT_INTERVAL);
        assert_eq!(check.sampling.planned_samples(), 20);
        assert_eq!(check.sampling.min_samples, 10);
        assert_eq!(check.sampling.on_empty, NoValue::Inconclusive);
        assert_eq!(check.sampling.on_nan, NoValue::Inconclusive);
        assert_eq!(spec.on_inconclusive, OnInconclusive::Rollback);
        let prometheus = spec.prometheus.unwrap();
        assert_eq!(prometheus.address_env, "PROMETHEUS_URL");
    }

    #[test]
    fn two_thresholds_are_rejected() {
        let (_, diags) = decode_text(
            "watch:\n  queries:\n    - name: errors\n      query: up\n      max: 1\n      max_ratio: 2\n",
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].message, "more than one threshold");
        assert_eq!(diags[0].line, 6);
        assert_eq!(diags[0].path, "watch.queries[0].max_ratio");
    }

    #[test]
    fn missing_threshold_is_reported_at_the_entry() {
        let (_, diags) = decode_text("watch:\n  queries:\n    - name: errors\n      query: up\n");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].message, "missing threshold");
        assert_eq!(diags[0].line, 3);
    }

    #[test]
    fn every_sampling_error_is_collected() {
        let (_, diags) = decode_text(
            "watch:
  on_inconclusive: wait
  queries:
    - name: errors
      query: up
      max_ratio: 0
      interval: 10s
      duration: 5s
      on_nan: ignore
      series: some
",
        );
        let mut lines: Vec<(usize, &str)> =
            diags.iter().map(|d| (d.line, d.path.as_str())).collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            vec![
                (2, "watch.on_inconclusive"),
                (6, "watch.queries[0].max_ratio"),
                (8, "watch.queries[0].duration"),
                (9, "watch.queries[0].on_nan"),
                (10, "watch.queries[0].series"),
            ]
        );
    }
}
