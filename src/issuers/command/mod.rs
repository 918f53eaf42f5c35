//! The `command` issuer: a local program does each issuer operation.
//!
//! ```yaml
//! issuer:
//!   type: command
//!   program: ../examples/key_service_command.py  # a path, or a name on PATH
//!   args: []                 # fixed arguments; never put secrets here
//!   timeout: 30s             # per call; the program is killed after it
//!   revocation: disable_then_delete   # or delete_only
//!   fields: [secret]         # key fields the program returns
//!   pass_env: [KEYSERVICE_URL]        # the only variables it gets, besides PATH
//!   credential_env: KEYSERVICE_ADMIN_TOKEN   # or credential_file; sent on stdin
//! ```
//!
//! Protocol, version 1. keywheel starts the program once per operation and
//! writes one JSON object to its stdin, then closes it:
//!
//! ```json
//! {"protocol": 1, "operation": "create", "run_id": "...",
//!  "idempotency_key": "keywheel-...", "credential": "...",
//!  "old_key": {"id": "...", "attributes": {...}}}
//! ```
//!
//! | operation | extra request members | response on stdout |
//! |---|---|---|
//! | `preflight` | `current`: key field values the targets hold | `{"old_key": {"id", "attributes"} or null, "summary": "..."}` |
//! | `create` | `old_key` | `{"key": {"id", "fields": {...}, "attributes": {...}}}` |
//! | `find_created` | `old_key` | `{"key": ... or null, "orphan_ids": [...]}` |
//! | `disable`, `enable`, `delete` | `key_id` | any JSON object |
//!
//! Exit status 0 means success; 75 (EX_TEMPFAIL) means a temporary failure
//! that keywheel retries with backoff; anything else is an error whose
//! message shows the end of the program's stderr with every secret keywheel
//! knows replaced by `[redacted]`.
//!
//! Secrets pass only through stdin and stdout. The program's argv is the
//! playbook's `args`, and its environment holds only `PATH` and the
//! variables named in `pass_env`. `old_key.attributes` is journaled in
//! clear, so it must hold no secret. `create` must be idempotent for one
//! `idempotency_key`, and `find_created` must find the key a create with
//! that key made, so a crash between the create and its journal record
//! never leaves a second key behind.

mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

use super::credential::{self, CredentialFields, CredentialSource};
use super::{CurrentFields, Issuer, IssuerCx, IssuerError, IssuerSnapshot, Recovered, Revocation};
use crate::key::Key;
use crate::playbook::decode::{Cx, MapReader};
use crate::retry::{self, Failure};
use crate::secret::{Redactor, SecretBytes};
use crate::targets::SetupError;
use process::RunError;

/// Version of the stdin/stdout protocol.
pub const PROTOCOL_VERSION: u64 = 1;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Exit status that asks for a retry (EX_TEMPFAIL from sysexits.h).
const EXIT_TEMPORARY: i32 = 75;
const CREDENTIAL: CredentialFields = CredentialFields {
    inline: "credential",
    env: "credential_env",
    file: "credential_file",
};

#[derive(Clone, Debug)]
pub struct CommandSpec {
    /// The program as written in the playbook.
    pub program: String,
    /// The program's path when it contains a `/`, resolved against the
    /// playbook's directory; a bare name is looked up on PATH at build.
    pub program_path: Option<PathBuf>,
    pub args: Vec<String>,
    pub timeout: Duration,
    pub revocation: Revocation,
    pub fields: Vec<String>,
    pub pass_env: Vec<String>,
    pub credential: Option<CredentialSource>,
}

impl CommandSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let program: String = reader.required("program", cx);
        let program_path = program.contains('/').then(|| cx.resolve_path(&program));
        let args = reader
            .optional::<Vec<String>>("args", cx)
            .unwrap_or_default();
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
        let revocation = super::decode_revocation(reader, cx);
        let fields = reader
            .optional::<Vec<String>>("fields", cx)
            .unwrap_or_else(|| vec![super::random::SECRET_FIELD.to_string()]);
        if let Some(node) = reader.value("fields") {
            let path = reader.path_of("fields");
            if fields.is_empty() {
                cx.error(
                    node,
                    &path,
                    "`fields` is empty; list the key fields the program returns, such as [secret]",
                );
            }
            if fields.iter().any(|f| f == crate::key::ID_FIELD) {
                cx.error_hint(
                    node,
                    &path,
                    "`id` is not a field to list",
                    "every key has an id; list only its secret fields",
                );
            }
        }
        let pass_env = reader
            .optional::<Vec<String>>("pass_env", cx)
            .unwrap_or_default();
        if let Some(node) = reader.value("pass_env")
            && let Some(name) = pass_env.iter().find(|name| {
                name.starts_with("KEYWHEEL_SEAL") || name.is_empty() || name.contains('=')
            })
        {
            cx.error(
                node,
                &reader.path_of("pass_env"),
                format!("{name:?} cannot be passed to the program"),
            );
        }
        let credential = credential::decode(reader, cx, &CREDENTIAL, false);
        Self {
            program,
            program_path,
            args,
            timeout,
            revocation,
            fields,
            pass_env,
            credential,
        }
    }

    /// Returns the schema of a `command` issuer.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{
            duration, env_name_list, kind_tag, object, string_list, text, with_rules,
        };
        let mut fields = string_list(
            "The key fields the program returns; every key also has `id`, which is not listed.",
        );
        fields["minItems"] = 1.into();
        fields["items"]["not"] = serde_json::json!({"const": crate::key::ID_FIELD});
        fields["default"] = serde_json::json!([super::random::SECRET_FIELD]);
        let (credential, credential_rule) =
            credential::schema_properties(&CREDENTIAL, "a credential sent to the program on stdin");
        let mut properties = vec![
            ("type", kind_tag("command")),
            (
                "program",
                text("A path, relative to the playbook, or a name looked up on PATH."),
            ),
            (
                "args",
                string_list("Fixed arguments; never secrets, which go through stdin."),
            ),
            (
                "timeout",
                duration(
                    "Timeout of each call; the program and its children are killed after it.",
                    Some(DEFAULT_TIMEOUT),
                ),
            ),
            ("revocation", super::revocation_schema()),
            ("fields", fields),
            (
                "pass_env",
                env_name_list(
                    "Environment variables passed to the program; it gets nothing else but PATH.",
                ),
            ),
        ];
        properties.extend(credential);
        let schema = object(
            "A local program that does each issuer operation, reading one JSON request on \
             stdin and writing one JSON response on stdout.",
            properties,
            &["type", "program"],
        );
        with_rules(schema, vec![credential_rule])
    }
}

pub struct CommandIssuer {
    spec: CommandSpec,
    program: PathBuf,
    env: Vec<(String, String)>,
    credential: Option<SecretBytes>,
}

impl CommandIssuer {
    /// Builds the issuer: finds the program and reads the variables and
    /// files it names. `path` is the issuer's field path, for errors.
    pub fn new(spec: CommandSpec, path: &str) -> Result<Self, SetupError> {
        let setup = |field: &str, message: String| SetupError {
            field: format!("{path}.{field}"),
            message,
        };
        let program = match &spec.program_path {
            Some(program) => program.clone(),
            None => find_on_path(&spec.program).ok_or_else(|| {
                setup("program", format!("{} was not found on PATH", spec.program))
            })?,
        };
        if !is_executable(&program) {
            return Err(setup(
                "program",
                format!(
                    "{} is not an executable file; check the path and its mode",
                    program.display()
                ),
            ));
        }
        let mut env = Vec::new();
        if let Ok(path) = std::env::var("PATH") {
            env.push(("PATH".to_string(), path));
        }
        for name in &spec.pass_env {
            let value = std::env::var(name).map_err(|_| {
                setup(
                    "pass_env",
                    format!("environment variable {name} is not set; export it or remove it from pass_env"),
                )
            })?;
            env.push((name.clone(), value));
        }
        let credential = match &spec.credential {
            Some(source) => Some(source.read().map_err(|m| setup("credential_env", m))?),
            None => None,
        };
        Ok(Self {
            spec,
            program,
            env,
            credential,
        })
    }

    fn program_name(&self) -> String {
        self.program.display().to_string()
    }

    /// The request members every operation gets.
    fn request(&self, cx: &IssuerCx, operation: &str) -> Map<String, Value> {
        let mut request = Map::new();
        request.insert("protocol".into(), json!(PROTOCOL_VERSION));
        request.insert("operation".into(), json!(operation));
        request.insert("run_id".into(), json!(cx.run_id.as_str()));
        request.insert(
            "idempotency_key".into(),
            json!(crate::template::idempotency_key(&cx.run_id)),
        );
        if let Some(text) = self.credential.as_ref().and_then(SecretBytes::expose_str) {
            request.insert("credential".into(), json!(text));
        }
        request
    }

    /// Runs one operation and returns the program's JSON response. `secrets`
    /// are the values in the request besides the credential, for redaction.
    async fn call(
        &self,
        cx: &IssuerCx,
        operation: &str,
        request: Map<String, Value>,
        secrets: &[SecretBytes],
    ) -> Result<Map<String, Value>, IssuerError> {
        let mut redactor = Redactor::new();
        if let Some(credential) = &self.credential {
            redactor.add(credential);
        }
        for secret in secrets {
            redactor.add(secret);
        }
        // NOTE: the request is built as a serde_json value, whose strings
        // are not zeroed when dropped; only the serialised bytes are.
        let input = Zeroizing::new(serde_json::to_vec(&Value::Object(request)).unwrap_or_default());
        let label = format!("command issuer {operation}");
        let output = retry::retry(&cx.retry, &label, |_| {
            let input = &input;
            let redactor = &redactor;
            async move {
                let result = process::run(
                    &self.program,
                    &self.spec.args,
                    &self.env,
                    input,
                    self.spec.timeout,
                )
                .await;
                result.map_err(|err| self.run_error(operation, err, redactor))
            }
        })
        .await?;
        match serde_json::from_slice::<Value>(&output) {
            Ok(Value::Object(response)) => Ok(response),
            _ => Err(IssuerError::InvalidResponse(format!(
                "command issuer: {operation}: {} exited with status 0 but wrote {} bytes to stdout that are not a JSON object; it must write one JSON object",
                self.program_name(),
                output.len()
            ))),
        }
    }

    fn run_error(
        &self,
        operation: &str,
        err: RunError,
        redactor: &Redactor,
    ) -> Failure<IssuerError> {
        let program = self.program_name();
        match err {
            RunError::Spawn(detail) => Failure::Fatal(IssuerError::Misconfigured(format!(
                "command issuer: {operation}: cannot start {program}: {detail}"
            ))),
            RunError::TimedOut(timeout) => Failure::Fatal(IssuerError::Unavailable(format!(
                "command issuer: {operation}: {program} timed out after {} and was killed; raise issuer.timeout if it needs longer",
                crate::playbook::decode::format_duration(timeout)
            ))),
            RunError::Output(detail) => Failure::Fatal(IssuerError::InvalidResponse(format!(
                "command issuer: {operation}: {program}: {detail}"
            ))),
            RunError::Exited {
                code,
                signal,
                stderr,
            } => {
                let how = match (code, signal) {
                    (Some(code), _) => format!("exited with status {code}"),
                    (None, Some(signal)) => format!("was killed by signal {signal}"),
                    (None, None) => "failed".to_string(),
                };
                // Redact the known secrets first, then any word shaped like
                // a key, because the program may print a key keywheel never saw.
                let stderr = crate::secret::redact_credential_like(&redactor.redact(stderr.trim()));
                let shown = match stderr.is_empty() {
                    true => "; it wrote nothing to stderr".to_string(),
                    false => format!("; its stderr ends with:\n{}", indent(&stderr)),
                };
                let error = IssuerError::Unavailable(format!(
                    "command issuer: {operation}: {program} {how}{shown}"
                ));
                match code == Some(EXIT_TEMPORARY) {
                    true => Failure::retryable(error),
                    false => Failure::Fatal(error),
                }
            }
        }
    }

    /// Reads a key from `{"id": ..., "fields": {...}, "attributes": {...}}`.
    fn parse_key(&self, operation: &str, value: &Value) -> Result<Key, IssuerError> {
        let invalid = |what: String| {
            IssuerError::InvalidResponse(format!(
                "command issuer: {operation}: the response of {} {what}",
                self.program_name()
            ))
        };
        let id = value
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| invalid("has no key.id".into()))?;
        let mut key = Key::new(id);
        for field in &self.spec.fields {
            let text = value
                .pointer(&format!("/fields/{field}"))
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
                .ok_or_else(|| invalid(format!("has no key.fields.{field}")))?;
            key = key.with_field(field.clone(), SecretBytes::from_text(text));
        }
        if let Some(Value::Object(attributes)) = value.get("attributes") {
            key.attributes = attributes.clone();
        }
        Ok(key)
    }

    fn old_key(snapshot: &IssuerSnapshot) -> Value {
        snapshot
            .state
            .get("old_key")
            .cloned()
            .unwrap_or(Value::Null)
    }

    async fn act(&self, cx: &IssuerCx, operation: &str, key_id: &str) -> Result<(), IssuerError> {
        let mut request = self.request(cx, operation);
        request.insert("key_id".into(), json!(key_id));
        self.call(cx, operation, request, &[]).await.map(drop)
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[async_trait]
impl Issuer for CommandIssuer {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn revocation(&self) -> Revocation {
        self.spec.revocation
    }

    async fn preflight(
        &self,
        cx: &IssuerCx,
        current: &CurrentFields,
    ) -> Result<IssuerSnapshot, IssuerError> {
        let mut request = self.request(cx, "preflight");
        let mut values = Map::new();
        let mut secrets = Vec::new();
        for (field, value) in current {
            if let Some(text) = value.expose_str() {
                values.insert(field.clone(), json!(text));
                secrets.push(value.clone());
            }
        }
        request.insert("current".into(), Value::Object(values));
        let response = self.call(cx, "preflight", request, &secrets).await?;

        let old_key = response.get("old_key").cloned().unwrap_or(Value::Null);
        let old_key_id = match &old_key {
            Value::Null => None,
            value => Some(
                value
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        IssuerError::InvalidResponse(format!(
                            "command issuer: preflight: the response of {} has an old_key without an id",
                            self.program_name()
                        ))
                    })?,
            ),
        };
        let summary = response
            .get("summary")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| match &old_key_id {
                Some(id) => format!("old key {id}"),
                None => "no old key".to_string(),
            });
        Ok(IssuerSnapshot {
            state: json!({ "old_key": old_key }),
            old_key_id,
            summary,
        })
    }

    async fn create(&self, cx: &IssuerCx, snapshot: &IssuerSnapshot) -> Result<Key, IssuerError> {
        let mut request = self.request(cx, "create");
        request.insert("old_key".into(), Self::old_key(snapshot));
        let response = self.call(cx, "create", request, &[]).await?;
        let key = response.get("key").unwrap_or(&Value::Null);
        self.parse_key("create", key)
    }

    async fn find_created(
        &self,
        cx: &IssuerCx,
        snapshot: &IssuerSnapshot,
    ) -> Result<Recovered, IssuerError> {
        let mut request = self.request(cx, "find_created");
        request.insert("old_key".into(), Self::old_key(snapshot));
        let response = self.call(cx, "find_created", request, &[]).await?;
        let key = match response.get("key") {
            None | Some(Value::Null) => None,
            Some(value) => Some(self.parse_key("find_created", value)?),
        };
        let orphan_ids = response
            .get("orphan_ids")
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Recovered { key, orphan_ids })
    }

    async fn disable(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        if self.spec.revocation == Revocation::DeleteOnly {
            return Err(IssuerError::Unsupported(format!(
                "command issuer: revocation is delete_only, so key {key_id} cannot be disabled"
            )));
        }
        self.act(cx, "disable", key_id).await
    }

    async fn enable(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        if self.spec.revocation == Revocation::DeleteOnly {
            return Err(IssuerError::Unsupported(format!(
                "command issuer: revocation is delete_only, so key {key_id} cannot be enabled"
            )));
        }
        self.act(cx, "enable", key_id).await
    }

    async fn delete(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.act(cx, "delete", key_id).await
    }
}
