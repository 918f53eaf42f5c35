//! Targets: the places a new key is written to.
//!
//! Each target kind is one module with the same shape: a `Spec` decoded from
//! the playbook, and a type implementing [`Target`] built from that spec when
//! a run starts (reading environment variables then, never at validation).
//!
//! # The contract every target keeps
//!
//! Expected flow: [`Target::preflight`] once per run, before the key is made,
//! then [`Target::push`]. Once every target is pushed, [`Target::restart`]
//! runs for each target whose [`Target::restarts`] is not empty. Only when
//! the run is undone, [`Target::restore`] runs, followed by `restart` again
//! when the forward restart was at least started. The engine journals
//! the [`Snapshot`] that preflight returns (its `previous` bytes sealed)
//! before the push, and gives the same snapshot back to `push` and
//! `restore`, also after a crash and restart.
//!
//! Guarantees:
//! - `preflight` only reads. It checks reachability, permissions and the
//!   shape of what it will write, and captures what `restore` needs.
//! - `push` writes the new values conditionally on the state seen at
//!   preflight (a check-and-set version, a resourceVersion, a file's prior
//!   content) and reads them back, failing with
//!   [`TargetError::ReadBackMismatch`] unless the stored bytes are exactly the
//!   new ones. Calling it again after it succeeded, or after a crash in the
//!   middle, is safe: it sees that its values are already in place and
//!   returns success without writing again.
//! - `restore` puts back exactly the values of the snapshot. It is
//!   idempotent too. It never overwrites a value that is neither the new
//!   key's nor the snapshot's: someone else wrote it after preflight, the new
//!   key is not there to undo, so it leaves the value alone and says so in
//!   its receipt ([`Receipt::left_alone`]).
//! - `restart` makes the consumers load the values now stored (restarts
//!   pods) and returns only once that is confirmed (the rollout is
//!   complete), or fails. It writes the `marker` the engine gives it, which
//!   is unique to the run, the target and the step; called again with the
//!   same marker after a crash, it starts nothing new and only waits.
//!
//! Errors: every message names the object concerned (file, secret path) and,
//! where it can, what to do. Secret values never appear in errors.

pub mod aws_secret;
pub mod dotenv;
pub mod file;
mod json_span;
pub mod kubernetes;
mod local;
pub mod shared;
pub mod vault;

use async_trait::async_trait;

use crate::key::Key;
use crate::playbook::decode::{Cx, FieldPath, MapReader, decode_choice};
use crate::playbook::{check_name, yaml};
use crate::retry::RetryPolicy;
use crate::run_id::RunId;
use crate::secret::SecretBytes;

/// Target kinds a playbook may name in `type:`.
pub const KINDS: &[&str] = &["file", "dotenv", "vault", "kubernetes", "aws_secret"];

/// One target as the playbook declares it.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    pub name: String,
    /// Field path of the entry, such as `targets[2]`, for messages.
    pub path: String,
    /// Line of the entry in the playbook.
    pub line: usize,
    pub kind: TargetKind,
}

#[derive(Clone, Debug)]
pub enum TargetKind {
    File(file::FileSpec),
    Dotenv(dotenv::DotenvSpec),
    Vault(vault::VaultSpec),
    Kubernetes(kubernetes::KubernetesSpec),
    AwsSecret(aws_secret::AwsSecretSpec),
}

/// The choice of target instances to build. Most target entries are one
/// instance named as in the playbook, but a `kubernetes` entry with several
/// namespaces is one instance per namespace.
#[derive(Clone, Copy, Debug)]
pub enum Selection<'a> {
    /// Every instance the playbook describes now, looking up what it must
    /// (the namespaces a label selector matches): for a new run or a plan.
    Current,
    /// The instances with these names, journaled at preflight, without
    /// looking anything up: for `resume` and `rollback`, which must act on
    /// exactly the targets the run checked.
    Journaled(&'a [String]),
}

impl TargetSpec {
    /// Decodes one entry of `targets:`.
    pub fn decode(node: &yaml::Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let mut reader = MapReader::new(node, path, cx)?;
        let name: String = reader.required("name", cx);
        if let Some(name_node) = reader.value("name") {
            check_name(name_node, &reader.path_of("name"), &name, cx);
        }
        let kind_name = match reader.value("type") {
            Some(type_node) => decode_choice(type_node, &reader.path_of("type"), cx, KINDS),
            None => {
                cx.error_hint(
                    node,
                    path,
                    "missing required field `type`",
                    format!("set type to one of: {}", KINDS.join(", ")),
                );
                None
            }
        };
        let kind =
            match kind_name {
                Some("file") => Some(TargetKind::File(file::FileSpec::decode(&mut reader, cx))),
                Some("dotenv") => Some(TargetKind::Dotenv(dotenv::DotenvSpec::decode(
                    &mut reader,
                    cx,
                ))),
                Some("vault") => Some(TargetKind::Vault(vault::VaultSpec::decode(&mut reader, cx))),
                Some("kubernetes") => Some(TargetKind::Kubernetes(
                    kubernetes::KubernetesSpec::decode(&mut reader, cx),
                )),
                Some("aws_secret") => Some(TargetKind::AwsSecret(
                    aws_secret::AwsSecretSpec::decode(&mut reader, cx),
                )),
                // Without a valid type the other fields cannot be checked, so
                // they are not reported as unknown either.
                _ => return None,
            };
        reader.finish(cx);
        Some(Self {
            name,
            path: path.to_string(),
            line: node.line,
            kind: kind?,
        })
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            TargetKind::File(_) => "file",
            TargetKind::Dotenv(_) => "dotenv",
            TargetKind::Vault(_) => "vault",
            TargetKind::Kubernetes(_) => "kubernetes",
            TargetKind::AwsSecret(_) => "aws_secret",
        }
    }

    /// Builds the target's instances, reading the environment variables it
    /// names. Only a `kubernetes` entry with a namespace selector makes a
    /// call here, to list the namespaces, and only for
    /// [`Selection::Current`]. Targets built with the same `shared` share
    /// their clients where their settings are equal.
    pub async fn build(
        &self,
        selection: &Selection<'_>,
        shared: &shared::SharedClients,
    ) -> Result<Vec<Box<dyn Target>>, SetupError> {
        let setup = |(field, message): (&str, String)| SetupError {
            field: format!("{}.{field}", self.path),
            message,
        };
        let target: Box<dyn Target> = match &self.kind {
            TargetKind::File(spec) => Box::new(file::FileTarget::new(&self.name, spec.clone())),
            TargetKind::Dotenv(spec) => {
                Box::new(dotenv::DotenvTarget::new(&self.name, spec.clone()))
            }
            TargetKind::Vault(spec) => {
                Box::new(vault::VaultTarget::new(&self.name, spec.clone(), shared).map_err(setup)?)
            }
            TargetKind::AwsSecret(spec) => Box::new(
                aws_secret::AwsSecretTarget::new(&self.name, spec.clone(), shared)
                    .map_err(setup)?,
            ),
            TargetKind::Kubernetes(spec) => {
                let targets = kubernetes::build(&self.name, spec, selection)
                    .await
                    .map_err(setup)?;
                return Ok(targets
                    .into_iter()
                    .map(|target| Box::new(target) as Box<dyn Target>)
                    .collect());
            }
        };
        Ok(vec![target])
    }
}

/// Returns the schema of each target kind, in the order of [`KINDS`].
pub fn kind_schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("file", file::FileSpec::schema()),
        ("dotenv", dotenv::DotenvSpec::schema()),
        ("vault", vault::VaultSpec::schema()),
        ("kubernetes", kubernetes::KubernetesSpec::schema()),
        ("aws_secret", aws_secret::AwsSecretSpec::schema()),
    ]
}

/// Returns the schema of one target kind: `name` and `type`, then the kind's own
/// `properties`, of which `required` are required.
pub fn kind_schema(
    kind: &str,
    description: &str,
    properties: Vec<(&'static str, serde_json::Value)>,
    required: &[&str],
) -> serde_json::Value {
    use crate::playbook::schema::{kind_tag, name, object};
    let mut all = vec![
        (
            "name",
            name("Names the target in output and the journal; unique within the playbook."),
        ),
        ("type", kind_tag(kind)),
    ];
    all.extend(properties);
    let mut all_required = vec!["name", "type"];
    all_required.extend(required);
    object(description, all, &all_required)
}

/// A problem found when a target is built: a missing environment variable or
/// an unusable address. Nothing has been contacted yet.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SetupError {
    pub field: String,
    pub message: String,
}

/// What the engine tells a target about the call.
#[derive(Clone, Debug)]
pub struct TargetCx {
    pub run_id: RunId,
    pub retry: RetryPolicy,
    pub overrides: crate::issuers::Overrides,
}

/// The key fields a target held before the run, one entry per place that
/// contains one, so that places that disagree can be found. Two variables
/// mapped to one field give two entries.
pub type HeldFields = Vec<(String, SecretBytes)>;

/// What a target saw at preflight.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// Public facts (existence, version, mode), journaled in clear.
    pub state: serde_json::Value,
    /// Everything `restore` needs to put the previous values back. The
    /// engine seals it before it reaches the journal.
    pub previous: SecretBytes,
    /// One line for plans and logs, such as `version 3` or `mode 0640`.
    pub summary: String,
}

/// What a push or restore did.
#[derive(Clone, Debug, Default)]
pub struct Receipt {
    /// Public facts such as the version written; journaled in clear.
    pub state: serde_json::Value,
    pub summary: String,
}

/// Member of a restore receipt's `state` that marks a value written by
/// someone else after preflight, which the restore left alone.
pub const LEFT_ALONE: &str = "left_alone";

impl Receipt {
    /// Marks the receipt of a restore that left another writer's value in
    /// place, so that the rollback does not report the target as restored.
    pub fn left_alone(mut self) -> Self {
        if !self.state.is_object() {
            self.state = serde_json::json!({});
        }
        self.state[LEFT_ALONE] = serde_json::Value::Bool(true);
        self
    }

    /// Whether the journaled `state` of a restore marks it as left alone.
    pub fn was_left_alone(state: &serde_json::Value) -> bool {
        state.get(LEFT_ALONE).and_then(serde_json::Value::as_bool) == Some(true)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The playbook does not match what the target found: a KV version 1
    /// mount, a file that is a directory, a variable missing without
    /// `create: true`.
    #[error("{0}")]
    Misconfigured(String),
    /// The server or file system could not be reached, or kept failing.
    #[error("{0}")]
    Unavailable(String),
    /// Authentication or permission failure.
    #[error("{0}")]
    Denied(String),
    /// Someone else changed the object since preflight.
    #[error("{0}")]
    ConcurrentModification(String),
    /// The value read back after a write differs from the one written.
    #[error("{0}")]
    ReadBackMismatch(String),
    /// A restart did not complete: the rollout failed or timed out.
    #[error("{0}")]
    RolloutFailed(String),
    /// The server answered something keywheel cannot interpret.
    #[error("{0}")]
    InvalidResponse(String),
    /// A quota of the server is reached; repeating cannot help.
    #[error("{0}")]
    LimitReached(String),
    /// The engine stopped the call at the playbook's `target_timeout`.
    /// Whether its writes took effect is unknown.
    #[error(
        "timed out after {}; the call was stopped, so whether it wrote anything is unknown",
        crate::playbook::decode::format_duration(*.0)
    )]
    TimedOut(std::time::Duration),
}

impl TargetError {
    /// Short class name for journals and `--json` output.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Misconfigured(_) => "misconfigured",
            Self::Unavailable(_) => "unavailable",
            Self::Denied(_) => "denied",
            Self::ConcurrentModification(_) => "concurrent_modification",
            Self::ReadBackMismatch(_) => "read_back_mismatch",
            Self::RolloutFailed(_) => "rollout_failed",
            Self::InvalidResponse(_) => "invalid_response",
            Self::LimitReached(_) => "limit_reached",
            Self::TimedOut(_) => "timed_out",
        }
    }
}

/// A place a key is written to. See the module documentation for the
/// contract of each method.
#[async_trait]
pub trait Target: Send + Sync {
    /// The target's name in the playbook.
    fn name(&self) -> &str;

    /// Where it writes, for plans and messages: never a secret.
    fn location(&self) -> String;

    /// Reads the current state; never writes.
    async fn preflight(&self, cx: &TargetCx) -> Result<Snapshot, TargetError>;

    /// Writes `key`'s fields conditionally on `snapshot`, then reads them back.
    async fn push(
        &self,
        cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError>;

    /// The key fields the target held at preflight, by key field name, so
    /// that an issuer can recognise the key in use. Targets that cannot
    /// tell return nothing.
    fn previous_fields(&self, _snapshot: &Snapshot) -> HeldFields {
        HeldFields::new()
    }

    /// Puts back the values of `snapshot`; `key` is the new key that `push`
    /// may have written.
    async fn restore(
        &self,
        cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError>;

    /// Lists the consumers that `restart` restarts, one line each for plans
    /// and messages. The default is an empty list, for a target that
    /// restarts nothing, and the engine then never calls `restart`.
    fn restarts(&self) -> Vec<String> {
        Vec::new()
    }

    /// Returns how long `restart` may wait for its consumers beyond the
    /// time its calls take (a rollout's deadline). The engine adds it to the
    /// playbook's `target_timeout` when it bounds a restart.
    fn restart_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Restarts the consumers so that they load the values stored now, and
    /// waits until the restart is confirmed. `marker` is unique to the run,
    /// the target and the step; see the module documentation.
    async fn restart(&self, _cx: &TargetCx, _marker: &str) -> Result<Receipt, TargetError> {
        Ok(Receipt {
            state: serde_json::Value::Null,
            summary: "nothing to restart".into(),
        })
    }
}

/// Looks up every mapped key field; the playbook was validated against the
/// issuer's fields, so a missing one means the issuer broke its contract.
pub fn mapped_values(
    key: &Key,
    mapping: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, SecretBytes)>, TargetError> {
    mapping
        .iter()
        .map(|(slot, field)| {
            key.field(field)
                .map(|value| (slot.clone(), value))
                .ok_or_else(|| {
                    TargetError::Misconfigured(format!(
                        "the new key has no field {field:?} for {slot:?}"
                    ))
                })
        })
        .collect()
}
