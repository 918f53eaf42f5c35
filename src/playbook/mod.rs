//! The playbook: one YAML file that describes how to rotate one credential.
//!
//! Loading happens in two passes. [`yaml::parse`] builds a tree that keeps
//! lines and scalar styles; the decoders then turn it into a validated
//! [`Playbook`], recording every problem with its line, column and field path
//! before any server is contacted. Unknown fields are errors. Environment
//! variables named by the playbook are only read later, when a run starts.

pub mod decode;
pub mod init;
pub mod schema;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::issuers::IssuerSpec;
use crate::targets::TargetSpec;
use crate::verify::VerifySpec;
use decode::{Cx, Decode, Diagnostic, FieldPath, MapReader, Severity, decode_choice};

/// The playbook format version this build reads.
pub const FORMAT_VERSION: u64 = 1;

/// A validated playbook.
#[derive(Clone, Debug)]
pub struct Playbook {
    /// Path the playbook was loaded from.
    pub path: PathBuf,
    /// The file's text; a copy is kept with each run so that `resume` uses
    /// exactly what the run started with.
    pub text: String,
    /// Hex SHA-256 of `text`.
    pub sha256: String,
    /// Name of the credential; it keys the lock and the run history.
    pub name: String,
    pub description: Option<String>,
    pub issuer: IssuerSpec,
    pub targets: Vec<TargetSpec>,
    /// Probes that check the new key, and that the old key is refused.
    pub verify: Option<VerifySpec>,
    pub policy: Policy,
    /// What to sample after the push, and when to roll back.
    pub watch: Option<crate::watch::spec::WatchSpec>,
    /// How `run --emergency` treats the old key.
    pub emergency: Emergency,
    /// Rotate again once the last successful rotation is this old.
    pub max_age: Option<std::time::Duration>,
    /// Webhooks told about the run's start and end.
    pub notify: Vec<crate::notify::NotifySpec>,
    /// Warnings found while loading; the playbook is valid despite them.
    pub warnings: Vec<Diagnostic>,
}

/// What to do when some targets were pushed and others failed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartialFailure {
    /// Restore every pushed target and delete the new key.
    #[default]
    Rollback,
    /// Stop the run as held; `resume` retries the failed targets.
    Hold,
}

/// Run-wide settings.
#[derive(Clone, Debug)]
pub struct Policy {
    pub on_partial_failure: PartialFailure,
    /// Maximum number of targets pushed at the same time.
    pub concurrency: usize,
    /// Time limit of each target's preflight, push, restore or restart
    /// call, retries included. A restart also gets the time the target
    /// itself waits for its consumers.
    pub target_timeout: std::time::Duration,
}

/// Settings of `run --emergency`, for a leaked key.
#[derive(Clone, Debug, Default)]
pub struct Emergency {
    /// Revoke the old key before the push, for a leak that is being abused.
    /// By default it is revoked right after the push.
    pub revoke_before_push: bool,
}

/// Default bound on concurrent pushes.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Largest `policy.concurrency` accepted.
const MAX_CONCURRENCY: usize = 1024;

const PARTIAL_FAILURE_CHOICES: &[&str] = &["rollback", "hold"];
const EMERGENCY_REVOKE_CHOICES: &[&str] = &["after_push", "before_push"];

/// Default time limit of one target call. It is well above what a slow but
/// responsive server needs: each request has its own timeout (30s by
/// default) and retries stop after a minute of waiting, so a call still
/// running after this long is taken as hung.
pub const DEFAULT_TARGET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

impl Default for Policy {
    fn default() -> Self {
        Self {
            on_partial_failure: PartialFailure::Rollback,
            concurrency: DEFAULT_CONCURRENCY,
            target_timeout: DEFAULT_TARGET_TIMEOUT,
        }
    }
}

/// Every error found in one playbook file.
#[derive(Clone, Debug)]
pub struct PlaybookErrors {
    pub path: PathBuf,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PlaybookErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let errors = self
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        writeln!(
            f,
            "{}: {errors} error{}",
            self.path.display(),
            if errors == 1 { "" } else { "s" }
        )?;
        for diagnostic in &self.diagnostics {
            writeln!(
                f,
                "{}:{}:{}: {diagnostic}",
                self.path.display(),
                diagnostic.line,
                diagnostic.column
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for PlaybookErrors {}

/// Reads and validates the playbook at `path`.
pub fn load(path: &Path) -> Result<Playbook, PlaybookErrors> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        let message = match err.kind() {
            std::io::ErrorKind::NotFound => "file not found".to_string(),
            std::io::ErrorKind::InvalidData => "file is not valid UTF-8".to_string(),
            _ => format!("cannot read file: {err}"),
        };
        single_error(path, 0, 0, message, None)
    })?;
    parse(path, &text)
}

/// Validates playbook `text`; `path` is used for messages and to resolve
/// relative paths.
pub fn parse(path: &Path, text: &str) -> Result<Playbook, PlaybookErrors> {
    let root = yaml::parse(text).map_err(|err| {
        single_error(
            path,
            err.line,
            err.column,
            format!("invalid YAML: {}", err.message),
            None,
        )
    })?;
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
    let mut cx = Cx::new(base_dir);
    let playbook = decode_playbook(&root, &mut cx);
    init::warn_placeholders(&root, &mut cx);
    if cx.has_errors() {
        cx.diagnostics.sort_by_key(|d| (d.line, d.column));
        return Err(PlaybookErrors {
            path: path.to_path_buf(),
            diagnostics: cx.diagnostics,
        });
    }
    let Some(fields) = playbook else {
        return Err(single_error(path, 1, 1, "invalid playbook".into(), None));
    };
    Ok(Playbook {
        path: path.to_path_buf(),
        text: text.to_string(),
        sha256: sha256_hex(text.as_bytes()),
        name: fields.name,
        description: fields.description,
        issuer: fields.issuer,
        targets: fields.targets,
        verify: fields.verify,
        policy: fields.policy,
        watch: fields.watch,
        emergency: fields.emergency,
        max_age: fields.max_age,
        notify: fields.notify,
        warnings: cx.diagnostics,
    })
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn single_error(
    path: &Path,
    line: usize,
    column: usize,
    message: String,
    hint: Option<String>,
) -> PlaybookErrors {
    PlaybookErrors {
        path: path.to_path_buf(),
        diagnostics: vec![Diagnostic {
            line,
            column,
            path: String::new(),
            message,
            hint,
            severity: Severity::Error,
        }],
    }
}

struct PlaybookFields {
    name: String,
    description: Option<String>,
    issuer: IssuerSpec,
    targets: Vec<TargetSpec>,
    verify: Option<VerifySpec>,
    policy: Policy,
    watch: Option<crate::watch::spec::WatchSpec>,
    emergency: Emergency,
    max_age: Option<std::time::Duration>,
    notify: Vec<crate::notify::NotifySpec>,
}

fn decode_playbook(root: &yaml::Node, cx: &mut Cx) -> Option<PlaybookFields> {
    let mut top = MapReader::new(root, &FieldPath::root(), cx)?;

    match top.value("version") {
        None => cx.error_hint(
            root,
            &FieldPath::root(),
            "missing required field `version`",
            format!("add `version: {FORMAT_VERSION}` at the top of the playbook"),
        ),
        Some(node) => {
            let path = top.path_of("version");
            if let Some(version) = u64::decode(node, &path, cx)
                && version != FORMAT_VERSION
            {
                cx.error_hint(
                    node,
                    &path,
                    format!("unsupported playbook version {version}"),
                    format!("this keywheel reads version {FORMAT_VERSION}"),
                );
            }
        }
    }

    let name: String = top.required("name", cx);
    if let Some(node) = top.value("name") {
        check_name(node, &top.path_of("name"), &name, cx);
    }
    let description = top.optional::<String>("description", cx);

    let issuer = match top.value("issuer") {
        Some(node) => IssuerSpec::decode(node, &top.path_of("issuer"), cx),
        None => {
            cx.error(root, &FieldPath::root(), "missing required field `issuer`");
            None
        }
    };
    if let Some(issuer) = &issuer {
        cx.key_fields = issuer.fields();
    }

    let targets = decode_targets(&mut top, root, cx);
    let verify = match top.value("verify") {
        Some(node) => VerifySpec::decode(node, &top.path_of("verify"), cx),
        None => None,
    };
    let policy = match top.value("policy") {
        Some(node) => decode_policy(node, &top.path_of("policy"), cx),
        None => Policy::default(),
    };
    let watch = top
        .value("watch")
        .and_then(|node| crate::watch::spec::decode(node, &top.path_of("watch"), cx));
    let emergency = match top.value("emergency") {
        Some(node) => decode_emergency(node, &top.path_of("emergency"), cx),
        None => Emergency::default(),
    };
    let max_age = top.optional::<std::time::Duration>("max_age", cx);
    let notify = match top.value("notify") {
        Some(node) => crate::notify::NotifySpec::decode_list(node, &top.path_of("notify"), cx),
        None => Vec::new(),
    };
    top.finish(cx);

    Some(PlaybookFields {
        name,
        description,
        issuer: issuer?,
        targets,
        verify,
        policy,
        watch,
        emergency,
        max_age,
        notify,
    })
}

fn decode_targets(top: &mut MapReader<'_>, root: &yaml::Node, cx: &mut Cx) -> Vec<TargetSpec> {
    let path = top.path_of("targets");
    let Some(node) = top.value("targets") else {
        cx.error_hint(
            root,
            &FieldPath::root(),
            "missing required field `targets`",
            "list at least one place the new key is written to",
        );
        return Vec::new();
    };
    let yaml::Value::Sequence(items) = &node.value else {
        cx.error(
            node,
            &path,
            format!("expected a list, found {}", node.kind_name()),
        );
        return Vec::new();
    };
    if items.is_empty() {
        cx.error_hint(node, &path, "no targets", "list at least one target");
    }
    let mut targets: Vec<TargetSpec> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let Some(target) = TargetSpec::decode(item, &item_path, cx) else {
            continue;
        };
        if let Some(first) = targets.iter().find(|t| t.name == target.name) {
            cx.error_hint(
                item,
                &item_path.key("name"),
                format!("duplicate target name {:?}", target.name),
                format!(
                    "target names must be unique; line {} uses it already",
                    first.line
                ),
            );
        }
        targets.push(target);
    }
    targets
}

fn decode_policy(node: &yaml::Node, path: &FieldPath, cx: &mut Cx) -> Policy {
    let mut policy = Policy::default();
    let Some(mut reader) = MapReader::new(node, path, cx) else {
        return policy;
    };
    if let Some(value) = reader.value("on_partial_failure") {
        let choice = decode_choice(
            value,
            &reader.path_of("on_partial_failure"),
            cx,
            PARTIAL_FAILURE_CHOICES,
        );
        match choice {
            Some("hold") => policy.on_partial_failure = PartialFailure::Hold,
            Some(_) => policy.on_partial_failure = PartialFailure::Rollback,
            None => {}
        }
    }
    if let Some(value) = reader.value("concurrency") {
        let value_path = reader.path_of("concurrency");
        if let Some(concurrency) = usize::decode(value, &value_path, cx) {
            if concurrency == 0 || concurrency > MAX_CONCURRENCY {
                cx.error_hint(
                    value,
                    &value_path,
                    format!("invalid concurrency {concurrency}"),
                    format!("use a number from 1 to {MAX_CONCURRENCY}"),
                );
            } else {
                policy.concurrency = concurrency;
            }
        }
    }
    if let Some(value) = reader.value("target_timeout") {
        let value_path = reader.path_of("target_timeout");
        if let Some(timeout) = std::time::Duration::decode(value, &value_path, cx) {
            if timeout.is_zero() {
                cx.error_hint(
                    value,
                    &value_path,
                    "target_timeout must be longer than 0s",
                    "give the time one target call may take, for example 2m",
                );
            } else {
                policy.target_timeout = timeout;
            }
        }
    }
    reader.finish(cx);
    policy
}

/// Returns the schema of `policy:`.
fn policy_schema() -> serde_json::Value {
    use schema::{choice, duration, integer, object};
    let mut concurrency = integer(
        "Targets pushed at the same time.",
        1,
        Some(MAX_CONCURRENCY as u64),
    );
    concurrency["default"] = DEFAULT_CONCURRENCY.into();
    object(
        "Run-wide settings.",
        vec![
            (
                "on_partial_failure",
                choice(
                    "When some targets were pushed and others failed: undo the pushed \
                     ones (rollback), or keep them and wait for `keywheel resume` (hold).",
                    PARTIAL_FAILURE_CHOICES,
                    Some("rollback"),
                ),
            ),
            ("concurrency", concurrency),
            (
                "target_timeout",
                duration(
                    "Time limit of each target's preflight, push, restore or restart call, \
                     retries included. A Kubernetes restart also gets its rollout_timeout.",
                    Some(DEFAULT_TARGET_TIMEOUT),
                ),
            ),
        ],
        &[],
    )
}

fn decode_emergency(node: &yaml::Node, path: &FieldPath, cx: &mut Cx) -> Emergency {
    let mut emergency = Emergency::default();
    let Some(mut reader) = MapReader::new(node, path, cx) else {
        return emergency;
    };
    if let Some(value) = reader.value("revoke") {
        let choices = EMERGENCY_REVOKE_CHOICES;
        let choice = decode_choice(value, &reader.path_of("revoke"), cx, choices);
        emergency.revoke_before_push = choice == Some("before_push");
    }
    reader.finish(cx);
    emergency
}

/// Returns the schema of `emergency:`.
fn emergency_schema() -> serde_json::Value {
    schema::object(
        "Settings of `keywheel run --emergency`, for a leaked key.",
        vec![(
            "revoke",
            schema::choice(
                "When the old key is revoked: as soon as every target holds the new \
                 key, or, for a leak that is being abused, before the push (right after \
                 the new key is verified).",
                EMERGENCY_REVOKE_CHOICES,
                Some("after_push"),
            ),
        )],
        &[],
    )
}

/// The rule a valid name follows, for messages.
pub const NAME_RULE: &str =
    "use 1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit";

/// Whether `name` can be used as a file name and lock key.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a name used as a file name and lock key.
pub fn check_name(node: &yaml::Node, path: &FieldPath, name: &str, cx: &mut Cx) {
    if !is_valid_name(name) {
        cx.error_hint(node, path, format!("invalid name {name:?}"), NAME_RULE);
    }
}

/// Reads a target's mapping from the names it writes to key field names,
/// checking that the issuer provides every field.
pub fn decode_field_map(
    node: &yaml::Node,
    path: &FieldPath,
    cx: &mut Cx,
) -> std::collections::BTreeMap<String, String> {
    let Some(map) = std::collections::BTreeMap::<String, String>::decode(node, path, cx) else {
        return Default::default();
    };
    if map.is_empty() {
        cx.error_hint(
            node,
            path,
            "no fields to write",
            "map at least one name to a key field, for example `API_KEY: secret`",
        );
    }
    for (slot, field) in &map {
        check_key_field(node, &path.key(slot), field, cx);
    }
    map
}

/// Checks that `field` is one the issuer provides.
pub fn check_key_field(node: &yaml::Node, path: &FieldPath, field: &str, cx: &mut Cx) {
    if cx.key_fields.is_empty() || cx.key_fields.iter().any(|f| f == field) {
        return;
    }
    let known: Vec<&str> = cx.key_fields.iter().map(String::as_str).collect();
    let hint = match decode::closest(field, &known) {
        Some(suggestion) => format!("did you mean `{suggestion}`?"),
        None => format!("the issuer provides: {}", known.join(", ")),
    };
    cx.error_hint(node, path, format!("unknown key field {field:?}"), hint);
}
