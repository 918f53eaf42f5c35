//! Issuers: where new keys come from, and how old keys are revoked.
//!
//! Each issuer kind is one module with a `Spec` decoded from the playbook and
//! a type implementing [`Issuer`].
//!
//! # The contract every issuer keeps
//!
//! Expected flow: `preflight`, then `create`; then, as the run goes on,
//! `disable` of the old key (revoke), `delete` of the old key (retire), or on
//! rollback `enable` of the old key and `delete` of the new one.
//!
//! Guarantees:
//! - `preflight` only reads: reachability, permissions, free key slots, and
//!   which key is in use now.
//! - `create` is safe to repeat for the same run: it sends an idempotency
//!   key or a tag with the run id, so that [`Issuer::find_created`] can find
//!   a key made before a crash cut the journal write short.
//! - `disable`, `enable` and `delete` succeed when the key is already in the
//!   requested state (a deleted key counts as deleted, not as an error).
//!
//! Errors name the issuer's object (user, key id, URL) and never include a
//! secret value.

pub mod aws_iam;
pub mod command;
pub mod credential;
pub mod http;
pub mod random;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::key::Key;
use crate::playbook::decode::{Cx, FieldPath, MapReader, decode_choice};
use crate::playbook::yaml;
use crate::retry::RetryPolicy;
use crate::run_id::RunId;
use crate::secret::SecretBytes;
use crate::targets::SetupError;

/// Issuer kinds a playbook may name in `type:`.
pub const KINDS: &[&str] = &["random", "http", "command", "aws_iam"];

#[derive(Clone, Debug)]
pub struct IssuerSpec {
    /// Field path of the issuer, for messages.
    pub path: String,
    pub kind: IssuerKind,
}

#[derive(Clone, Debug)]
pub enum IssuerKind {
    Random(random::RandomSpec),
    Http(Box<http::spec::HttpSpec>),
    Command(command::CommandSpec),
    AwsIam(aws_iam::AwsIamSpec),
}

impl IssuerSpec {
    pub fn decode(node: &yaml::Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let mut reader = MapReader::new(node, path, cx)?;
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
        let kind = match kind_name {
            Some("random") => IssuerKind::Random(random::RandomSpec::decode(&mut reader, cx)),
            Some("http") => {
                let spec = http::spec::HttpSpec::decode(&mut reader, cx);
                match spec {
                    Some(spec) => IssuerKind::Http(Box::new(spec)),
                    None => {
                        reader.finish(cx);
                        return None;
                    }
                }
            }
            Some("command") => IssuerKind::Command(command::CommandSpec::decode(&mut reader, cx)),
            Some("aws_iam") => IssuerKind::AwsIam(aws_iam::AwsIamSpec::decode(&mut reader, cx)),
            _ => return None,
        };
        reader.finish(cx);
        Some(Self {
            path: path.to_string(),
            kind,
        })
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            IssuerKind::Random(_) => "random",
            IssuerKind::Http(_) => "http",
            IssuerKind::Command(_) => "command",
            IssuerKind::AwsIam(_) => "aws_iam",
        }
    }

    /// Names of the fields the issuer's keys have, `id` included.
    pub fn fields(&self) -> Vec<String> {
        let mut fields = match &self.kind {
            IssuerKind::Random(_) => vec![random::SECRET_FIELD.to_string()],
            IssuerKind::Http(spec) => spec.fields(),
            IssuerKind::Command(spec) => spec.fields.clone(),
            IssuerKind::AwsIam(_) => vec![
                aws_iam::ACCESS_KEY_ID_FIELD.to_string(),
                aws_iam::SECRET_FIELD.to_string(),
            ],
        };
        fields.push(crate::key::ID_FIELD.to_string());
        fields
    }

    /// Builds the issuer, reading the environment variables it names.
    pub fn build(&self) -> Result<Box<dyn Issuer>, SetupError> {
        Ok(match &self.kind {
            IssuerKind::Random(spec) => Box::new(random::RandomIssuer::new(spec.clone())),
            IssuerKind::Http(spec) => {
                Box::new(http::HttpIssuer::new((**spec).clone(), &self.path)?)
            }
            IssuerKind::Command(spec) => {
                Box::new(command::CommandIssuer::new(spec.clone(), &self.path)?)
            }
            IssuerKind::AwsIam(spec) => Box::new(
                aws_iam::AwsIamIssuer::new(spec.clone()).map_err(|(field, message)| {
                    SetupError {
                        field: format!("{}.{field}", self.path),
                        message,
                    }
                })?,
            ),
        })
    }
}

/// What the engine tells an issuer about the call.
#[derive(Clone, Debug)]
pub struct IssuerCx {
    pub run_id: RunId,
    pub retry: RetryPolicy,
    pub overrides: Overrides,
    /// Ids of old keys that earlier runs of the same playbook disabled and
    /// did not enable again, from their journals.
    pub disabled_by_earlier_runs: Vec<String>,
}

/// Decisions the operator made on the command line that let a run go past
/// a check that would otherwise stop it.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Restore an AWS secret that is scheduled for deletion (`--restore`).
    pub restore_secret: bool,
    /// Drop the `AWSPENDING` label of another rotation's version
    /// (`--discard-pending`).
    pub discard_pending: bool,
    /// Write the new key into the value of another rotation's pending
    /// version (`--adopt-pending`).
    pub adopt_pending: bool,
    /// Delete an inactive access key that no keywheel run deactivated, to
    /// free a slot for the new key (`--delete-inactive-key`).
    pub delete_inactive_key: bool,
}

/// How an issuer takes an old key out of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// The issuer keeps no record of keys (a random value): the old key is
    /// gone once every target holds the new one.
    Replace,
    /// Disable first (reversible), delete after the watch.
    DisableThenDelete,
    /// Delete only: revoke is the point of no return.
    DeleteOnly,
}

const REVOCATION_CHOICES: &[&str] = &["disable_then_delete", "delete_only"];

/// Reads `revocation`: `disable_then_delete` (the default) or `delete_only`.
pub fn decode_revocation(reader: &mut MapReader<'_>, cx: &mut Cx) -> Revocation {
    let Some(node) = reader.value("revocation") else {
        return Revocation::DisableThenDelete;
    };
    match decode_choice(node, &reader.path_of("revocation"), cx, REVOCATION_CHOICES) {
        Some("delete_only") => Revocation::DeleteOnly,
        _ => Revocation::DisableThenDelete,
    }
}

/// Returns the schema of `revocation`.
pub fn revocation_schema() -> serde_json::Value {
    crate::playbook::schema::choice(
        "How the old key is taken out of service: disabled first and deleted after the \
         watch, or, for an API that cannot disable keys, deleted at once (the delete is \
         then the point of no return).",
        REVOCATION_CHOICES,
        Some("disable_then_delete"),
    )
}

/// Returns the schema of each issuer kind, in the order of [`KINDS`].
pub fn kind_schemas() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("random", random::RandomSpec::schema()),
        ("http", http::spec::HttpSpec::schema()),
        ("command", command::CommandSpec::schema()),
        ("aws_iam", aws_iam::AwsIamSpec::schema()),
    ]
}

/// What preflight learned. Journaled in clear: never a secret.
#[derive(Clone, Debug, Default)]
pub struct IssuerSnapshot {
    pub state: serde_json::Value,
    /// Id of the key in use now, when the issuer can tell.
    pub old_key_id: Option<String>,
    pub summary: String,
}

/// Key field values that the targets held at preflight, by field name. An
/// issuer uses them to recognise the key in use.
pub type CurrentFields = BTreeMap<String, SecretBytes>;

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("{0}")]
    Misconfigured(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    InvalidResponse(String),
    /// The issuer has no such operation.
    #[error("{0}")]
    Unsupported(String),
    /// A limit such as the number of keys per user is reached.
    #[error("{0}")]
    LimitReached(String),
    /// The new key did not pass verification in time.
    #[error("{0}")]
    VerificationFailed(String),
    /// The operation failed but may have left a key at the issuer that
    /// keywheel could not remove; the message names it.
    #[error("{0}")]
    KeyLeftBehind(String),
}

impl IssuerError {
    pub fn class(&self) -> &'static str {
        match self {
            Self::Misconfigured(_) => "misconfigured",
            Self::Unavailable(_) => "unavailable",
            Self::Denied(_) => "denied",
            Self::InvalidResponse(_) => "invalid_response",
            Self::Unsupported(_) => "unsupported",
            Self::LimitReached(_) => "limit_reached",
            Self::VerificationFailed(_) => "verification_failed",
            Self::KeyLeftBehind(_) => "key_left_behind",
        }
    }
}

/// A source of keys. See the module documentation for the contract.
#[async_trait]
pub trait Issuer: Send + Sync {
    fn kind(&self) -> &'static str;

    fn revocation(&self) -> Revocation;

    /// Reads the issuer's state; never writes.
    async fn preflight(
        &self,
        cx: &IssuerCx,
        current: &CurrentFields,
    ) -> Result<IssuerSnapshot, IssuerError>;

    /// Makes the new key.
    async fn create(&self, cx: &IssuerCx, snapshot: &IssuerSnapshot) -> Result<Key, IssuerError>;

    /// Returns the new key when the issuer can give it again for this run
    /// (an idempotent create replayed), else the ids of keys this run
    /// created whose secret is lost, so they can be deleted.
    async fn find_created(
        &self,
        _cx: &IssuerCx,
        _snapshot: &IssuerSnapshot,
    ) -> Result<Recovered, IssuerError> {
        Ok(Recovered::default())
    }

    /// Checks that the new key works at the issuer itself, retrying while
    /// it propagates. Returns what was checked, or `None` when the issuer
    /// has no way to check a key.
    async fn verify(&self, _cx: &IssuerCx, _key: &Key) -> Result<Option<String>, IssuerError> {
        Ok(None)
    }

    async fn disable(&self, _cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        Err(IssuerError::Unsupported(format!(
            "the {} issuer cannot disable key {key_id}",
            self.kind()
        )))
    }

    async fn enable(&self, _cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        Err(IssuerError::Unsupported(format!(
            "the {} issuer cannot enable key {key_id}",
            self.kind()
        )))
    }

    async fn delete(&self, _cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        Err(IssuerError::Unsupported(format!(
            "the {} issuer cannot delete key {key_id}",
            self.kind()
        )))
    }
}

/// Keys found by [`Issuer::find_created`].
#[derive(Debug, Default)]
pub struct Recovered {
    pub key: Option<Key>,
    pub orphan_ids: Vec<String>,
}
