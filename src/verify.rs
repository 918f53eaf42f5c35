//! Verification probes: requests made with the new key that show the
//! service accepts it, and after revoke one made with the old key that
//! shows the service refuses it.
//!
//! ```yaml
//! verify:
//!   base_url_env: KEYSERVICE_URL   # or base_url; joined to URLs that start with '/'
//!   propagation_timeout: 30s       # how long a failing probe is retried
//!   timeout: 10s                   # per request
//!   probes:
//!     - name: models
//!       method: GET
//!       url: /v1/models
//!       headers:
//!         Authorization: "Bearer {{ new.secret }}"
//!       expect_status: 200
//!       expect_json:               # JSON pointer: expected value
//!         /object: list
//!       after: [generate, push]    # the default: both
//!   revoked:                       # optional
//!     url: /v1/models
//!     headers:
//!       Authorization: "Bearer {{ old.secret }}"
//!     expect_status: [401, 403]
//! ```
//!
//! New keys often take seconds to work everywhere, so a probe that fails is
//! retried with exponential backoff and jitter until it passes or
//! `propagation_timeout` would be passed. The revocation probe is retried
//! the same way, since a revocation propagates too.
//!
//! Probe templates may use `new.<field>` and `run.*`; the revocation probe
//! `old.<field>` (the values the targets held before the run) and `run.*`.
//! Messages name a probe by its name and URL template, never by the
//! rendered URL or headers, which may hold a key.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use url::Url;

use crate::http_client::{self, BaseUrl, HttpClient, Request};
use crate::issuers::CurrentFields;
use crate::issuers::http::spec::{decode_headers, decode_statuses};
use crate::key::Key;
use crate::playbook::decode::{Cx, Decode, FieldPath, MapReader, decode_choice, format_duration};
use crate::playbook::yaml::{Node, Value as YamlValue};
use crate::retry::{RetryPolicy, backoff_delay};
use crate::run_id::RunId;
use crate::secret::Redactor;
use crate::targets::SetupError;
use crate::template::body::{self, BodyTemplate};
use crate::template::{self, Root, Scope, Template, Vars};

const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
const DEFAULT_STATUS: u16 = 200;
const STAGES: &[&str] = &["generate", "push"];

/// Backoff between probe attempts: from 250 ms, doubling, up to 5 s.
const PROBE_BACKOFF: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    base_delay: Duration::from_millis(250),
    max_delay: Duration::from_secs(5),
    max_elapsed: Duration::MAX,
};

/// When a probe runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// After the new key is made, before any target has it.
    Generate,
    /// After every target holds the new key, before the old one is revoked.
    Push,
}

#[derive(Clone, Debug)]
pub struct VerifySpec {
    pub base_url: Option<BaseUrl>,
    pub propagation_timeout: Duration,
    pub timeout: Duration,
    pub probes: Vec<ProbeSpec>,
    pub revoked: Option<ProbeSpec>,
}

#[derive(Clone, Debug)]
pub struct ProbeSpec {
    pub name: String,
    pub method: Method,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<BodyTemplate>,
    pub expect_status: Vec<u16>,
    /// JSON pointer and the value expected there.
    pub expect_json: Vec<(String, Value)>,
    pub after_generate: bool,
    pub after_push: bool,
}

impl VerifySpec {
    /// Decodes `verify:`. Call after the issuer, whose key fields the
    /// placeholders are checked against.
    pub fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let mut reader = MapReader::new(node, path, cx)?;
        let base_url = BaseUrl::decode(&mut reader, cx);
        let propagation_timeout = reader
            .optional("propagation_timeout", cx)
            .unwrap_or(DEFAULT_PROPAGATION_TIMEOUT);
        let timeout = reader.optional("timeout", cx).unwrap_or(DEFAULT_TIMEOUT);
        if timeout.is_zero()
            && let Some(node) = reader.value("timeout")
        {
            cx.error(
                node,
                &reader.path_of("timeout"),
                "timeout must be longer than 0s",
            );
        }
        let key_fields = cx.key_fields.clone();
        let fields = (!key_fields.is_empty()).then_some(key_fields.as_slice());
        let new_scope = Scope {
            roots: &[Root::New, Root::Run],
            key_fields: fields,
            place: "verify.probes",
        };
        let old_scope = Scope {
            roots: &[Root::Old, Root::Run],
            key_fields: fields,
            place: "verify.revoked",
        };

        let mut probes = Vec::new();
        if let Some(list) = reader.value("probes") {
            let list_path = reader.path_of("probes");
            match &list.value {
                YamlValue::Sequence(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let item_path = list_path.index(index);
                        if let Some(probe) = decode_probe(item, &item_path, cx, &new_scope, None) {
                            check_uses(item, &item_path, cx, &probe, Root::New);
                            probes.push(probe);
                        }
                    }
                }
                _ => cx.error(
                    list,
                    &list_path,
                    format!("expected a list, found {}", list.kind_name()),
                ),
            }
        }
        let revoked = match reader.value("revoked") {
            Some(probe_node) => {
                let probe_path = reader.path_of("revoked");
                let probe = decode_probe(probe_node, &probe_path, cx, &old_scope, Some("revoked"));
                if let Some(probe) = &probe {
                    check_uses(probe_node, &probe_path, cx, probe, Root::Old);
                }
                probe
            }
            None => None,
        };
        if probes.is_empty() && revoked.is_none() {
            cx.error_hint(
                node,
                path,
                "`verify` has no probes",
                "list requests made with the new key under `probes`, or remove `verify`",
            );
        }
        let has_relative = probes
            .iter()
            .chain(revoked.as_ref())
            .any(|probe| probe.url.source.starts_with('/'));
        if has_relative && base_url.is_none() {
            cx.error_hint(
                node,
                path,
                "a probe URL is relative, but no base URL is set",
                "set `base_url` or `base_url_env` under verify, or write absolute URLs",
            );
        }
        reader.finish(cx);
        Some(Self {
            base_url,
            propagation_timeout,
            timeout,
            probes,
            revoked,
        })
    }

    /// Returns the schema of `verify:`.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{duration, object, with_rules};
        let (mut properties, base_url_rule) = BaseUrl::schema_properties("probe");
        properties.extend([
            (
                "propagation_timeout",
                duration(
                    "How long a failing probe is retried while the new key propagates.",
                    Some(DEFAULT_PROPAGATION_TIMEOUT),
                ),
            ),
            (
                "timeout",
                duration("Timeout of each request.", Some(DEFAULT_TIMEOUT)),
            ),
            (
                "probes",
                serde_json::json!({
                    "description": "Requests made with the new key after generate and after push.",
                    "type": "array",
                    "items": probe_schema(false),
                }),
            ),
            ("revoked", probe_schema(true)),
        ]);
        let schema = object(
            "Probes that show the service accepts the new key, and refuses the old one \
             once it is revoked.",
            properties,
            &[],
        );
        let some_probe =
            serde_json::json!({"anyOf": [{"required": ["probes"]}, {"required": ["revoked"]}]});
        with_rules(schema, vec![base_url_rule, some_probe])
    }

    /// Checks what a run needs from the environment, before anything is
    /// contacted.
    pub fn check_setup(&self) -> Result<(), SetupError> {
        match &self.base_url {
            Some(base) => base.resolve().map(drop).map_err(|message| SetupError {
                field: "verify.base_url_env".into(),
                message,
            }),
            None => Ok(()),
        }
    }

    /// Returns whether any probe runs at `stage`.
    pub fn runs_at(&self, stage: Stage) -> bool {
        self.probes.iter().any(|probe| probe.runs_at(stage))
    }
}

impl ProbeSpec {
    fn runs_at(&self, stage: Stage) -> bool {
        match stage {
            Stage::Generate => self.after_generate,
            Stage::Push => self.after_push,
        }
    }
}

/// Warns when a probe never sends the key it is meant to check.
fn check_uses(node: &Node, path: &FieldPath, cx: &mut Cx, probe: &ProbeSpec, root: Root) {
    let mut placeholders: Vec<&template::Placeholder> = probe.url.placeholders().collect();
    for (_, value) in &probe.headers {
        placeholders.extend(value.placeholders());
    }
    if let Some(body) = &probe.body {
        placeholders.extend(body.placeholders());
    }
    if !placeholders.iter().any(|p| p.root == root) {
        cx.warn(
            node,
            path,
            format!(
                "probe {} never sends the {} key, so it cannot tell whether that key works",
                probe.name,
                root.name()
            ),
        );
    }
}

/// Returns the schema of a probe. With `revoked`, it is the probe made with
/// the old key, which has no `name` and no `after`.
fn probe_schema(revoked: bool) -> serde_json::Value {
    use crate::playbook::schema::{choice, headers, name, object, statuses};
    let mut properties = Vec::new();
    if !revoked {
        properties.push(("name", name("Names the probe in output.")));
    }
    let url = serde_json::json!({
        "description": "A path joined to the base URL, or an absolute URL.",
        "type": "string",
        "minLength": 1,
    });
    properties.extend([
        ("method", choice("HTTP method.", METHODS, Some("GET"))),
        ("url", url),
        (
            "headers",
            headers("Request headers; values may contain placeholders."),
        ),
        (
            "body",
            serde_json::json!({"description": "Request body, written as YAML and sent as JSON."}),
        ),
        (
            "expect_status",
            statuses("Statuses that mean the probe passed.", &[DEFAULT_STATUS]),
        ),
        (
            "expect_json",
            serde_json::json!({
                "description": "JSON pointer in the response body to the value expected there.",
                "type": "object",
                "propertyNames": {"pattern": crate::playbook::schema::POINTER_PATTERN},
            }),
        ),
    ]);
    if !revoked {
        let stage = serde_json::json!({"enum": STAGES});
        properties.push((
            "after",
            serde_json::json!({
                "description": "When the probe runs: after generate, after push, or both.",
                "type": "array",
                "minItems": 1,
                "items": stage,
                "default": STAGES,
            }),
        ));
    }
    let (description, required): (&str, &[&str]) = if revoked {
        (
            "A probe made with the old key once it is revoked; when it does not pass, \
             the run completes with a warning that revocation is not confirmed.",
            &["url"],
        )
    } else {
        ("A request made with the new key.", &["name", "url"])
    };
    object(description, properties, required)
}

fn decode_probe(
    node: &Node,
    path: &FieldPath,
    cx: &mut Cx,
    scope: &Scope,
    fixed_name: Option<&str>,
) -> Option<ProbeSpec> {
    let mut reader = MapReader::new(node, path, cx)?;
    let name = match fixed_name {
        Some(name) => name.to_string(),
        None => reader.required::<String>("name", cx),
    };
    let method = match reader.value("method") {
        Some(method_node) => {
            decode_choice(method_node, &reader.path_of("method"), cx, METHODS).unwrap_or("GET")
        }
        None => "GET",
    };
    let url = match reader.value("url") {
        Some(url_node) => template::decode(url_node, &reader.path_of("url"), cx, scope),
        None => {
            cx.error(node, path, "missing required field `url`");
            None
        }
    };
    let headers = match reader.value("headers") {
        Some(headers_node) => decode_headers(headers_node, &reader.path_of("headers"), cx, scope),
        None => Vec::new(),
    };
    let body = match reader.value("body") {
        Some(body_node) => body::decode(body_node, &reader.path_of("body"), cx, scope),
        None => None,
    };
    let expect_status = match reader.value("expect_status") {
        Some(status_node) => decode_statuses(status_node, &reader.path_of("expect_status"), cx),
        None => vec![DEFAULT_STATUS],
    };
    let expect_json = match reader.value("expect_json") {
        Some(json_node) => decode_expect_json(json_node, &reader.path_of("expect_json"), cx),
        None => Vec::new(),
    };
    // The revocation probe runs once, after revoke, so it has no `after`
    // and an `after` there is reported as unknown.
    let after_node = match fixed_name {
        None => reader.value("after"),
        Some(_) => None,
    };
    let (after_generate, after_push) = match after_node {
        Some(node) => decode_after(node, &reader.path_of("after"), cx),
        None => (true, true),
    };
    reader.finish(cx);
    Some(ProbeSpec {
        name,
        method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        url: url?,
        headers,
        body,
        expect_status,
        expect_json,
        after_generate,
        after_push,
    })
}

fn decode_expect_json(node: &Node, path: &FieldPath, cx: &mut Cx) -> Vec<(String, Value)> {
    let YamlValue::Mapping(entries) = &node.value else {
        cx.error(
            node,
            path,
            format!(
                "expected a mapping of JSON pointers to values, found {}",
                node.kind_name()
            ),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key_node, value_node) in entries {
        let Some(pointer) = String::decode(key_node, path, cx) else {
            continue;
        };
        let item_path = path.key(&pointer);
        if !crate::issuers::http::spec::check_pointer(key_node, &item_path, &pointer, cx) {
            continue;
        }
        if let Some(value) = body::decode_json(value_node, &item_path, cx) {
            out.push((pointer, value));
        }
    }
    out
}

fn decode_after(node: &Node, path: &FieldPath, cx: &mut Cx) -> (bool, bool) {
    let Some(stages) = Vec::<String>::decode(node, path, cx) else {
        return (true, true);
    };
    let mut after = (false, false);
    for (index, stage) in stages.iter().enumerate() {
        match stage.as_str() {
            "generate" => after.0 = true,
            "push" => after.1 = true,
            other => cx.error_hint(
                node,
                &path.index(index),
                format!("invalid stage {other:?}"),
                "use generate, push, or both",
            ),
        }
    }
    if stages.is_empty() {
        cx.error_hint(
            node,
            path,
            "the list is empty",
            "use generate, push, or both",
        );
    }
    after
}

/// Runs the probes of a [`VerifySpec`].
pub struct Prober<'s> {
    spec: &'s VerifySpec,
    client: HttpClient,
    base_url: Option<Url>,
}

impl<'s> Prober<'s> {
    pub fn new(spec: &'s VerifySpec) -> Result<Self, String> {
        let base_url = match &spec.base_url {
            Some(base) => Some(base.resolve()?),
            None => None,
        };
        Ok(Self {
            spec,
            client: HttpClient::new(spec.timeout)?,
            base_url,
        })
    }

    /// Runs the probes of `stage` with the new key, one after the other.
    /// Returns a summary, `None` when no probe runs at this stage, or the
    /// first probe that did not pass in time.
    pub async fn verify_new(
        &self,
        stage: Stage,
        key: &Key,
        run_id: &RunId,
    ) -> Result<Option<String>, String> {
        let mut vars = Vars::new();
        vars.set_run(run_id);
        vars.set(Root::New, serde_json::json!({ "id": key.id }));
        let mut redactor = Redactor::new();
        for field in key.field_names() {
            if let Some(value) = key.field(field) {
                redactor.add(&value);
                vars.set_secret(Root::New, field, value);
            }
        }
        let mut passed = Vec::new();
        for probe in self.spec.probes.iter().filter(|p| p.runs_at(stage)) {
            passed.push(self.until_passed(probe, &vars, &redactor).await?);
        }
        Ok((!passed.is_empty()).then(|| passed.join("; ")))
    }

    /// Runs the revocation probe with the old key's values. Returns `None`
    /// when there is none, else its summary or why it did not pass.
    pub async fn confirm_revoked(
        &self,
        old_id: Option<&str>,
        old: &CurrentFields,
        run_id: &RunId,
    ) -> Option<Result<String, String>> {
        let probe = self.spec.revoked.as_ref()?;
        let mut vars = Vars::new();
        vars.set_run(run_id);
        vars.set(Root::Old, serde_json::json!({ "id": old_id }));
        let mut redactor = Redactor::new();
        for (field, value) in old {
            redactor.add(value);
            vars.set_secret(Root::Old, field, value.clone());
        }
        Some(self.until_passed(probe, &vars, &redactor).await)
    }

    /// Repeats a probe with backoff until it passes or the propagation
    /// timeout would be passed.
    async fn until_passed(
        &self,
        probe: &ProbeSpec,
        vars: &Vars,
        redactor: &Redactor,
    ) -> Result<String, String> {
        let started = Instant::now();
        let deadline = started + self.spec.propagation_timeout;
        let shown = format!(
            "probe {} ({} {})",
            probe.name, probe.method, probe.url.source
        );
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (reason, retry_after) = match self.attempt(probe, vars, redactor).await {
                Ok(()) => {
                    return Ok(format!(
                        "{} passed after {attempt} attempt(s) in {}",
                        probe.name,
                        elapsed_text(started)
                    ));
                }
                Err(Attempt::Invalid(message)) => return Err(format!("{shown}: {message}")),
                Err(Attempt::Failed {
                    reason,
                    retry_after,
                }) => (reason, retry_after),
            };
            let delay = backoff_delay(&PROBE_BACKOFF, attempt, retry_after);
            if Instant::now() + delay > deadline {
                return Err(format!(
                    "{shown} did not pass within the propagation timeout of {}: {attempt} attempt(s), the last one: {reason}",
                    format_duration(self.spec.propagation_timeout)
                ));
            }
            tracing::info!(probe = %probe.name, attempt, delay_ms = delay.as_millis() as u64, %reason, "probe not passing yet; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        probe: &ProbeSpec,
        vars: &Vars,
        redactor: &Redactor,
    ) -> Result<(), Attempt> {
        let request = self.request(probe, vars).map_err(Attempt::Invalid)?;
        let response = self
            .client
            .send(&request)
            .await
            .map_err(|err| Attempt::failed(err.to_string(), None))?;
        if !probe.expect_status.contains(&response.status) {
            let expected: Vec<String> = probe.expect_status.iter().map(u16::to_string).collect();
            return Err(Attempt::failed(
                format!(
                    "status {} (expected {}): {}",
                    response.status,
                    expected.join(" or "),
                    response.describe(redactor)
                ),
                response.retry_after,
            ));
        }
        if probe.expect_json.is_empty() {
            return Ok(());
        }
        let body = response.json(redactor).map_err(|described| {
            Attempt::failed(format!("expected a JSON response, got {described}"), None)
        })?;
        for (pointer, expected) in &probe.expect_json {
            match body.pointer(pointer) {
                Some(found) if found == expected => {}
                Some(found) => {
                    let found = redactor.redact(&found.to_string());
                    return Err(Attempt::failed(
                        format!("{pointer} is {} (expected {expected})", shorten(&found)),
                        None,
                    ));
                }
                None => {
                    return Err(Attempt::failed(
                        format!("the response has no {pointer} (expected {expected})"),
                        None,
                    ));
                }
            }
        }
        Ok(())
    }

    fn request(&self, probe: &ProbeSpec, vars: &Vars) -> Result<Request, String> {
        let rendered = probe.url.render_url(vars).map_err(|err| err.to_string())?;
        let url = http_client::resolve_url(self.base_url.as_ref(), &rendered)?;
        let mut headers = HeaderMap::new();
        for (name, template) in &probe.headers {
            let value = template.render_text(vars).map_err(|err| err.to_string())?;
            let (name, value) = http_client::header(name, &value)?;
            headers.insert(name, value);
        }
        let body = match &probe.body {
            Some(body) => Some(body.render(vars).map_err(|err| err.to_string())?),
            None => None,
        };
        Ok(Request {
            method: probe.method.clone(),
            url,
            headers,
            body,
        })
    }
}

/// The reason one attempt of a probe did not pass.
enum Attempt {
    /// The probe cannot be sent at all; retrying will not help.
    Invalid(String),
    Failed {
        reason: String,
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    fn failed(reason: String, retry_after: Option<Duration>) -> Self {
        Self::Failed {
            reason,
            retry_after,
        }
    }
}

fn elapsed_text(started: Instant) -> String {
    format!("{:.1}s", started.elapsed().as_secs_f64())
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= 80 {
        return text.to_string();
    }
    let cut: String = text.chars().take(80).collect();
    format!("{cut}...")
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::playbook::yaml;

    fn decode_text(text: &str) -> (Option<VerifySpec>, Cx) {
        let root = yaml::parse(text).unwrap();
        let mut cx = Cx::new(PathBuf::from("."));
        cx.key_fields = vec!["secret".into(), "id".into()];
        let spec = VerifySpec::decode(&root, &FieldPath::root().key("verify"), &mut cx);
        (spec, cx)
    }

    #[test]
    fn probe_reads_every_field() {
        let (spec, cx) = decode_text(
            "base_url: http://127.0.0.1:1\npropagation_timeout: 5s\nprobes:\n  - name: models\n    url: /v1/models\n    headers:\n      Authorization: \"Bearer {{ new.secret }}\"\n    expect_status: [200, 204]\n    expect_json:\n      /object: list\n    after: [push]\nrevoked:\n  url: /v1/models\n  headers:\n    Authorization: \"Bearer {{ old.secret }}\"\n  expect_status: 401\n",
        );
        assert!(cx.diagnostics.is_empty(), "{:?}", cx.diagnostics);
        let spec = spec.unwrap();
        assert_eq!(spec.propagation_timeout, Duration::from_secs(5));
        let probe = &spec.probes[0];
        assert_eq!(probe.expect_status, [200, 204]);
        assert_eq!(probe.expect_json[0].1, Value::String("list".into()));
        assert!(!probe.after_generate);
        assert!(probe.after_push);
        assert_eq!(spec.revoked.unwrap().expect_status, [401]);
    }

    #[test]
    fn revoked_probe_has_no_after() {
        let (_, cx) = decode_text(
            "base_url: http://127.0.0.1:1\nrevoked:\n  url: /x\n  headers:\n    A: \"{{ old.secret }}\"\n  after: [push]\n",
        );
        let error = cx
            .diagnostics
            .iter()
            .find(|d| d.message == "unknown field `after`")
            .unwrap();
        assert_eq!(error.path, "verify.revoked.after");
        assert_eq!(error.line, 6);
    }

    #[test]
    fn probe_cannot_use_the_old_key() {
        let (_, cx) = decode_text(
            "base_url: http://127.0.0.1:1\nprobes:\n  - name: p\n    url: /x\n    headers:\n      A: \"{{ old.secret }}\"\n",
        );
        let error = cx
            .diagnostics
            .iter()
            .find(|d| d.message.contains("not available"))
            .unwrap();
        assert_eq!(error.line, 6);
        assert_eq!(error.path, "verify.probes[0].headers.A");
    }

    #[test]
    fn probe_without_the_key_gets_a_warning() {
        let (spec, cx) = decode_text("probes:\n  - name: p\n    url: http://127.0.0.1:1/x\n");
        assert!(spec.is_some());
        assert!(
            cx.diagnostics[0]
                .message
                .contains("never sends the new key")
        );
        assert!(!cx.has_errors());
    }
}
