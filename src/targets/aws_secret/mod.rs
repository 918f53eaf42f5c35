//! The `aws_secret` target: a secret in AWS Secrets Manager, written the way
//! AWS's own rotation does it.
//!
//! ```yaml
//! - name: aws-app
//!   type: aws_secret
//!   secret_id: prod/app/aws    # name or ARN
//!   set:                       # fields of a JSON SecretString <- key fields
//!     AWS_ACCESS_KEY_ID: access_key_id
//!     AWS_SECRET_ACCESS_KEY: secret_access_key
//!   # field: secret            # or: the whole SecretString
//!   # binary: secret           # or: the whole SecretBinary
//!   create: false              # with `set`: add JSON fields the secret lacks
//!   region: us-east-1          # optional, see `crate::aws`
//!   endpoint_url_env: AWS_ENDPOINT_URL
//! ```
//!
//! A push is two-phase. The new value is put as a new version labelled
//! `AWSPENDING`, with a `ClientRequestToken` derived from the run id and the
//! target name. A resumed run sends the same token and value, so AWS treats
//! the repeat as the same request. The version is read back by id,
//! then `AWSCURRENT` is moved onto it with `RemoveFromVersionId` naming the
//! version that carries `AWSCURRENT` (no `RemoveFromVersionId` when none
//! does), and the value is read back by stage. Restore moves `AWSCURRENT`
//! back to the version that carried it at preflight.
//!
//! Preflight stops on a secret scheduled for deletion (`--restore` restores
//! it) and on a pending version left by another rotation (`--discard-pending`
//! drops its label; `--adopt-pending` writes the new fields into its value).
//! A version carrying both `AWSPENDING` and `AWSCURRENT` is a finished
//! rotation and is not in the way.

mod client;
mod value;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Receipt, Snapshot, Target, TargetCx, TargetError};
use crate::aws::error::ErrorClass;
use crate::aws::{AwsError, AwsSpec};
use crate::key::Key;
use crate::playbook::decode::{Cx, MapReader};
use crate::playbook::{check_key_field, decode_field_map};
use crate::run_id::RunId;
use client::{CURRENT, PENDING, SecretsClient, Select, Stages};
pub use value::ValueSpec;
use value::{Previous, SecretValue};

/// Namespace of the version-5 UUIDs used as `ClientRequestToken`s.
const TOKEN_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x1d4f_5f3e_8c2b_4b7a_9e51_6a0c_3d27_b8e4);

#[derive(Clone, Debug)]
pub struct AwsSecretSpec {
    /// Name or ARN of the secret.
    pub secret_id: String,
    pub value: ValueSpec,
    /// With `set`: add managed JSON fields that the secret lacks. The
    /// secret itself must exist.
    pub create: bool,
    pub aws: AwsSpec,
}

impl AwsSecretSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let secret_id: String = reader.required("secret_id", cx);
        if let Some(node) = reader.value("secret_id")
            && (secret_id.is_empty() || secret_id.chars().any(char::is_whitespace))
        {
            cx.error_hint(
                node,
                &reader.path_of("secret_id"),
                format!("invalid secret id {secret_id:?}"),
                "give the secret's name or ARN, without blanks",
            );
        }

        let mut given = Vec::new();
        if let Some(node) = reader.value("field") {
            let path = reader.path_of("field");
            if let Some(field) = reader.optional::<String>("field", cx) {
                check_key_field(node, &path, &field, cx);
                given.push((node, "field", ValueSpec::Text(field)));
            }
        }
        if let Some(node) = reader.value("set") {
            let set = decode_field_map(node, &reader.path_of("set"), cx);
            given.push((node, "set", ValueSpec::Json(set)));
        }
        if let Some(node) = reader.value("binary") {
            let path = reader.path_of("binary");
            if let Some(field) = reader.optional::<String>("binary", cx) {
                check_key_field(node, &path, &field, cx);
                given.push((node, "binary", ValueSpec::Binary(field)));
            }
        }
        if let [(_, first, _), (node, second, _), ..] = given.as_slice() {
            cx.error_hint(
                node,
                &reader.path_of(second),
                format!("`{first}` and `{second}` cannot both be set"),
                "a target writes either JSON fields (`set`), the whole SecretString (`field`) or the whole SecretBinary (`binary`)",
            );
        }
        let present = ["field", "set", "binary"]
            .iter()
            .any(|field| reader.value(field).is_some());
        if !present {
            cx.error_hint(
                reader.node(),
                reader.path(),
                "missing what to write: `set`, `field` or `binary`",
                "map JSON fields to key fields (`set: {API_KEY: secret}`), or name the key field that becomes the whole SecretString (`field: secret`) or SecretBinary (`binary: secret`)",
            );
        }
        // After an error the value is never used.
        let value = given
            .into_iter()
            .next()
            .map_or(ValueSpec::Json(BTreeMap::new()), |(_, _, value)| value);

        let create = reader.optional::<bool>("create", cx).unwrap_or(false);
        if let Some(node) = reader.value("create")
            && create
            && !matches!(value, ValueSpec::Json(_))
        {
            cx.error_hint(
                node,
                &reader.path_of("create"),
                "`create` only applies to `set`, where it adds missing JSON fields",
                "remove it: `field` and `binary` replace the whole value, and keywheel never creates the secret itself",
            );
        }
        Self {
            secret_id,
            value,
            create,
            aws: AwsSpec::decode(reader, cx),
        }
    }

    /// Returns the schema of an `aws_secret` target.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{boolean, exactly_one, field_map, text, with_rules};
        let secret_id = serde_json::json!({
            "description": "Name or ARN of the Secrets Manager secret.",
            "type": "string",
            "pattern": "^\\S+$",
        });
        let mut properties = vec![
            ("secret_id", secret_id),
            (
                "set",
                field_map(
                    "JSON field in the SecretString to key field; other fields are kept.",
                    None,
                ),
            ),
            (
                "field",
                text("The key field that is the whole SecretString."),
            ),
            (
                "binary",
                text("The key field that is the whole SecretBinary."),
            ),
            (
                "create",
                boolean(
                    "With `set`: add JSON fields the secret lacks. The secret itself must exist.",
                    false,
                ),
            ),
        ];
        properties.extend(AwsSpec::schema_properties());
        let schema = super::kind_schema(
            "aws_secret",
            "A secret in AWS Secrets Manager: fields of its JSON SecretString, the whole \
             SecretString or the SecretBinary.",
            properties,
            &["secret_id"],
        );
        with_rules(schema, vec![exactly_one(&["set", "field", "binary"])])
    }
}

/// Facts preflight found, journaled in clear.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SecretState {
    arn: String,
    /// The version that carried `AWSCURRENT`, if any.
    current_version: Option<String>,
    /// The `ClientRequestToken` of the push, which becomes its version id.
    token: String,
    /// The version that carried `AWSPENDING`, and what the push does to it.
    pending: Option<Pending>,
    /// Whether preflight cancelled a scheduled deletion.
    restored_from_deletion: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    version_id: String,
    action: PendingAction,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PendingAction {
    /// `AWSPENDING` sits on the `AWSCURRENT` version: a rotation that
    /// finished. The push moves the label to its own version.
    Finished,
    /// The operator chose to drop the label from another version.
    Discard,
    /// The operator chose to build the new value on that version's value.
    Adopt,
}

/// Returns the `ClientRequestToken` of `target`'s push in `run_id`: the
/// same on every attempt of the run, and different for every other run or
/// target.
pub fn request_token(run_id: &RunId, target: &str) -> String {
    let name = format!("keywheel/{run_id}/{target}");
    uuid::Uuid::new_v5(&TOKEN_NAMESPACE, name.as_bytes()).to_string()
}

pub struct AwsSecretTarget {
    name: String,
    spec: AwsSecretSpec,
    client: SecretsClient,
}

impl AwsSecretTarget {
    /// Builds the target, reading the environment variable that
    /// `endpoint_url_env` names. Errors name the spec field concerned.
    pub fn new(
        name: &str,
        spec: AwsSecretSpec,
        shared: &crate::targets::shared::SharedClients,
    ) -> Result<Self, (&'static str, String)> {
        let settings = spec.aws.resolve()?;
        let config = shared.aws_config(&settings);
        Ok(Self {
            name: name.to_string(),
            client: SecretsClient::new(settings, config, spec.secret_id.clone()),
            spec,
        })
    }

    /// Maps an AWS error to a target error that names this secret.
    fn error(&self, action: &str, err: AwsError) -> TargetError {
        let secret = &self.spec.secret_id;
        match err.class {
            ErrorClass::Throttled | ErrorClass::Transient => TargetError::Unavailable(format!(
                "{action} secret {secret}: {err}; AWS kept failing after the retries"
            )),
            ErrorClass::Denied => TargetError::Denied(format!(
                "{action} secret {secret}: {err}; check the AWS credentials and that their policy allows this on the secret"
            )),
            ErrorClass::NotFound => {
                // keywheel never creates a secret: its KMS key, resource
                // policy and replication are the owner's choices.
                let hint = match action {
                    "describing" => {
                        "; create it first, for example with `aws secretsmanager create-secret`"
                    }
                    _ => "",
                };
                TargetError::Misconfigured(format!(
                    "{action} secret {secret} in {}: not found ({err}){hint}",
                    self.client.settings().describe()
                ))
            }
            ErrorClass::LimitExceeded => TargetError::LimitReached(format!(
                "{action} secret {secret}: an AWS limit is reached ({err}); retrying does not help until the limit is raised or usage drops"
            )),
            ErrorClass::Conflict => {
                TargetError::ConcurrentModification(format!("{action} secret {secret}: {err}"))
            }
            ErrorClass::Invalid | ErrorClass::Setup => {
                TargetError::Misconfigured(format!("{action} secret {secret}: {err}"))
            }
            ErrorClass::Other => {
                TargetError::InvalidResponse(format!("{action} secret {secret}: {err}"))
            }
        }
    }

    /// Decides about the version carrying `AWSPENDING` at preflight.
    fn check_pending(
        &self,
        arn: &str,
        stages: &Stages,
        current: Option<&str>,
        cx: &TargetCx,
    ) -> Result<Option<Pending>, TargetError> {
        let holders = stages.holders(PENDING);
        let version_id = match holders.as_slice() {
            [] => return Ok(None),
            [one] => one.to_string(),
            many => {
                return Err(TargetError::ConcurrentModification(format!(
                    "secret {arn} has AWSPENDING on several versions ({}), which AWS itself never allows; remove the label from all of them with `aws secretsmanager update-secret-version-stage`, then run again",
                    many.join(", ")
                )));
            }
        };
        let action = if current == Some(version_id.as_str()) {
            PendingAction::Finished
        } else if cx.overrides.discard_pending {
            PendingAction::Discard
        } else if cx.overrides.adopt_pending {
            PendingAction::Adopt
        } else {
            return Err(TargetError::ConcurrentModification(format!(
                "secret {arn} has a pending version {version_id} (AWSPENDING, not AWSCURRENT): another rotation may be unfinished; finish or cancel it, or run again with --discard-pending to drop its AWSPENDING label, or --adopt-pending to write the new key into its value"
            )));
        };
        Ok(Some(Pending { version_id, action }))
    }

    /// Reads one version and checks it has the shape the spec writes.
    async fn read_version(
        &self,
        cx: &TargetCx,
        arn: &str,
        version: &str,
    ) -> Result<Option<SecretValue>, TargetError> {
        let value = self
            .client
            .value(&cx.retry, Select::Version(version))
            .await
            .map_err(|err| self.error("reading", err))?;
        if let Some(value) = &value {
            self.spec
                .value
                .check_shape(value, &format!("version {version} of secret {arn}"))?;
        }
        Ok(value)
    }

    /// Reads `select` and fails unless it contains exactly `expected`.
    async fn read_back(
        &self,
        cx: &TargetCx,
        select: Select<'_>,
        expected: &SecretValue,
    ) -> Result<(), TargetError> {
        let found = self
            .client
            .value(&cx.retry, select)
            .await
            .map_err(|err| self.error("reading back", err))?;
        if found.is_some_and(|found| found.same_as(expected)) {
            return Ok(());
        }
        let what = match select {
            Select::Version(id) => format!("version {id}"),
            Select::Stage(stage) => format!("the {stage} version"),
        };
        Err(TargetError::ReadBackMismatch(format!(
            "{what} of secret {} does not hold the {} just written",
            self.spec.secret_id,
            expected.kind()
        )))
    }

    /// Removes `AWSPENDING` from versions other than `token`: the one
    /// preflight decided about. A label that appeared since is someone
    /// else's rotation starting, and stops the push.
    async fn clear_pending(
        &self,
        cx: &TargetCx,
        state: &SecretState,
        stages: &Stages,
    ) -> Result<(), TargetError> {
        for holder in stages.holders(PENDING) {
            if holder == state.token {
                continue;
            }
            let decided = state.pending.as_ref().map(|p| p.version_id.as_str());
            if decided != Some(holder) {
                return Err(TargetError::ConcurrentModification(format!(
                    "version {holder} of secret {} got the AWSPENDING label after preflight: another rotation started; run `keywheel rollback`, let it finish, then run again",
                    state.arn
                )));
            }
            self.client
                .move_stage(&cx.retry, PENDING, None, Some(holder))
                .await
                .map_err(|err| self.error("removing AWSPENDING from", err))?;
        }
        Ok(())
    }

    /// Moves `AWSCURRENT` onto the new version, from the version that
    /// carries it now. After a lost response the labels show whether the
    /// move happened.
    async fn promote(&self, cx: &TargetCx, state: &SecretState) -> Result<(), TargetError> {
        let stages = self.describe_stages(cx).await?;
        if stages.has(&state.token, CURRENT) {
            return Ok(());
        }
        let holder = stages.holder(CURRENT);
        check_current_unmoved(state, holder)?;
        let moved = self
            .client
            .move_stage(&cx.retry, CURRENT, Some(&state.token), holder)
            .await;
        if let Err(err) = moved {
            let stages = self.describe_stages(cx).await?;
            if !stages.has(&state.token, CURRENT) {
                return Err(self.error("moving AWSCURRENT on", err));
            }
        }
        Ok(())
    }

    async fn describe_stages(&self, cx: &TargetCx) -> Result<Stages, TargetError> {
        let description = self
            .client
            .describe(&cx.retry)
            .await
            .map_err(|err| self.error("describing", err))?;
        Ok(description.stages)
    }

    /// Ends a push whose version carries `AWSCURRENT`: drops the run's own
    /// `AWSPENDING` label and reads the value back by stage.
    async fn finish_push(
        &self,
        cx: &TargetCx,
        state: &SecretState,
        desired: &SecretValue,
    ) -> Result<Receipt, TargetError> {
        let stages = self.describe_stages(cx).await?;
        if stages.has(&state.token, PENDING) {
            self.client
                .move_stage(&cx.retry, PENDING, None, Some(&state.token))
                .await
                .map_err(|err| self.error("removing AWSPENDING from", err))?;
        }
        self.read_back(cx, Select::Stage(CURRENT), desired).await?;
        Ok(receipt(
            &state.token,
            format!("version {} is AWSCURRENT", state.token),
        ))
    }

    /// Puts `AWSPENDING` back where preflight saw it, unless another
    /// rotation has put it elsewhere since.
    async fn restore_pending(&self, cx: &TargetCx, state: &SecretState) -> Result<(), TargetError> {
        let stages = self.describe_stages(cx).await?;
        let holders = stages.holders(PENDING);
        let ours = holders.contains(&state.token.as_str());
        let from = ours.then_some(state.token.as_str());
        let others = holders.iter().any(|h| *h != state.token);
        let target = state
            .pending
            .as_ref()
            .map(|p| p.version_id.as_str())
            .filter(|version| stages.contains_version(version));
        // Where the label goes back to: the version preflight saw it on,
        // unless it is there already or another rotation has taken it.
        let back_to = target.filter(|version| !stages.has(version, PENDING) && !others);
        if back_to.is_none() && !ours {
            return Ok(());
        }
        self.client
            .move_stage(&cx.retry, PENDING, back_to, from)
            .await
            .map_err(|err| self.error("restoring AWSPENDING on", err))?;
        Ok(())
    }
}

/// Fails when `AWSCURRENT` is no longer where preflight saw it.
fn check_current_unmoved(state: &SecretState, holder: Option<&str>) -> Result<(), TargetError> {
    if holder == state.current_version.as_deref() {
        return Ok(());
    }
    Err(TargetError::ConcurrentModification(format!(
        "AWSCURRENT of secret {} moved from {} to {} since preflight: someone else changed the secret; run `keywheel rollback` and start again",
        state.arn,
        describe_version(state.current_version.as_deref()),
        describe_version(holder)
    )))
}

fn describe_version(version: Option<&str>) -> String {
    match version {
        Some(version) => format!("version {version}"),
        None => "no version".into(),
    }
}

fn parse_state(snapshot: &Snapshot) -> Result<(SecretState, Previous), TargetError> {
    let state: SecretState = serde_json::from_value(snapshot.state.clone()).map_err(|err| {
        TargetError::InvalidResponse(format!("journaled aws_secret state is invalid: {err}"))
    })?;
    let previous = Previous::from_bytes(&snapshot.previous)?;
    Ok((state, previous))
}

fn receipt(version: &str, summary: String) -> Receipt {
    Receipt {
        state: serde_json::json!({"version_id": version}),
        summary,
    }
}

#[async_trait]
impl Target for AwsSecretTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!(
            "aws secret {} in {} ({})",
            self.spec.secret_id,
            self.client.settings().describe(),
            self.spec.value.describe()
        )
    }

    fn previous_fields(&self, snapshot: &Snapshot) -> crate::targets::HeldFields {
        match Previous::from_bytes(&snapshot.previous) {
            Ok(Previous {
                current: Some(value),
                ..
            }) => self.spec.value.key_fields_in(&value).into_iter().collect(),
            _ => Default::default(),
        }
    }

    /// Reads only, except that with `--restore` a secret scheduled for
    /// deletion is restored first: its value cannot be read otherwise, and
    /// the operator asked for it.
    async fn preflight(&self, cx: &TargetCx) -> Result<Snapshot, TargetError> {
        let mut description = self
            .client
            .describe(&cx.retry)
            .await
            .map_err(|err| self.error("describing", err))?;
        let restored_from_deletion = description.deleted_date.is_some();
        if let Some(date) = &description.deleted_date {
            let arn = &description.arn;
            if !cx.overrides.restore_secret {
                return Err(TargetError::Misconfigured(format!(
                    "secret {arn} is scheduled for deletion on {date}; restore it with `aws secretsmanager restore-secret --secret-id {arn}`, or run again with --restore to let keywheel restore it"
                )));
            }
            self.client
                .restore_deleted(&cx.retry)
                .await
                .map_err(|err| self.error("restoring", err))?;
            description = self
                .client
                .describe(&cx.retry)
                .await
                .map_err(|err| self.error("describing", err))?;
        }
        let arn = description.arn.clone();
        let stages = &description.stages;
        let current_holders = stages.holders(CURRENT);
        if current_holders.len() > 1 {
            return Err(TargetError::InvalidResponse(format!(
                "secret {arn} has AWSCURRENT on several versions ({})",
                current_holders.join(", ")
            )));
        }
        let current = current_holders.first().copied();
        let pending = self.check_pending(&arn, stages, current, cx)?;

        let mut previous = Previous::default();
        if let Some(version) = current {
            previous.current = self.read_version(cx, &arn, version).await?;
        }
        if let Some(Pending {
            version_id,
            action: PendingAction::Adopt,
        }) = &pending
        {
            previous.adopted = self.read_version(cx, &arn, version_id).await?;
        }
        let missing = self.spec.value.missing_fields(previous.base())?;
        if !missing.is_empty() && !self.spec.create {
            return Err(TargetError::Misconfigured(format!(
                "secret {arn} has no JSON field {}; add it, or set `create: true` to let keywheel add it",
                missing.join(", ")
            )));
        }

        let mut summary = match current {
            Some(version) => format!("AWSCURRENT is version {version}"),
            None => "no version is AWSCURRENT".to_string(),
        };
        if let Some(pending) = &pending {
            let action = match pending.action {
                PendingAction::Finished => "left by a finished rotation",
                PendingAction::Discard => "to be discarded",
                PendingAction::Adopt => "adopted as the base of the new value",
            };
            summary.push_str(&format!(
                ", AWSPENDING on version {} ({action})",
                pending.version_id
            ));
        }
        if restored_from_deletion {
            summary.push_str(", restored from scheduled deletion");
        }
        if description.rotation_enabled {
            summary.push_str(
                ", note: rotation by AWS is enabled on this secret and will replace the value on its schedule",
            );
        }
        let state = SecretState {
            arn,
            current_version: current.map(str::to_string),
            token: request_token(&cx.run_id, &self.name),
            pending,
            restored_from_deletion,
        };
        Ok(Snapshot {
            state: serde_json::to_value(&state).unwrap_or_default(),
            previous: previous.to_bytes(),
            summary,
        })
    }

    async fn push(
        &self,
        cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let (state, previous) = parse_state(snapshot)?;
        let desired = self.spec.value.desired(previous.base(), key)?;

        let description = self
            .client
            .describe(&cx.retry)
            .await
            .map_err(|err| self.error("describing", err))?;
        if let Some(date) = &description.deleted_date {
            return Err(TargetError::ConcurrentModification(format!(
                "secret {} was scheduled for deletion on {date} after preflight; run `keywheel rollback`",
                state.arn
            )));
        }
        let stages = &description.stages;
        if stages.has(&state.token, CURRENT) {
            // A push that was interrupted after the promotion.
            return self.finish_push(cx, &state, &desired).await;
        }
        check_current_unmoved(&state, stages.holder(CURRENT))?;
        self.clear_pending(cx, &state, stages).await?;

        self.client
            .put_pending(&cx.retry, &state.token, &desired)
            .await
            .map_err(|err| self.error("putting the new version into", err))?;
        self.read_back(cx, Select::Version(&state.token), &desired)
            .await?;
        self.promote(cx, &state).await?;
        self.finish_push(cx, &state, &desired).await
    }

    async fn restore(
        &self,
        cx: &TargetCx,
        snapshot: &Snapshot,
        _key: &Key,
    ) -> Result<Receipt, TargetError> {
        let (state, previous) = parse_state(snapshot)?;
        let stages = self.describe_stages(cx).await?;
        let holder = stages.holder(CURRENT);
        let previous_version = state.current_version.as_deref();

        let summary = if holder == Some(state.token.as_str()) {
            if let Some(version) = previous_version
                && !stages.contains_version(version)
            {
                return Err(TargetError::ConcurrentModification(format!(
                    "version {version} of secret {}, which was AWSCURRENT before the run, no longer exists; put the value it should hold with `aws secretsmanager put-secret-value`",
                    state.arn
                )));
            }
            // NOTE: when no version carried AWSCURRENT before the run, this
            // removes the label altogether. moto 5.2 allows that. AWS may
            // reject it, and the rollback then reports the error.
            self.client
                .move_stage(&cx.retry, CURRENT, previous_version, Some(&state.token))
                .await
                .map_err(|err| self.error("moving AWSCURRENT back on", err))?;
            format!(
                "moved AWSCURRENT back to {}",
                describe_version(previous_version)
            )
        } else if holder == previous_version {
            format!(
                "AWSCURRENT is still on {}",
                describe_version(previous_version)
            )
        } else {
            tracing::warn!(target = %self.name, current = holder, "restore left a secret alone");
            self.restore_pending(cx, &state).await?;
            return Ok(receipt(
                holder.unwrap_or_default(),
                format!(
                    "left AWSCURRENT on {} alone: it is neither the new nor the previous version, so someone else moved it after preflight",
                    describe_version(holder)
                ),
            )
            .left_alone());
        };

        self.restore_pending(cx, &state).await?;
        if let Some(value) = &previous.current {
            self.read_back(cx, Select::Stage(CURRENT), value).await?;
        }
        Ok(receipt(previous_version.unwrap_or_default(), summary))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_token_is_stable_per_run_and_target() {
        let run: RunId = "20261204-120000-abcdef".parse().unwrap();
        let other: RunId = "20261204-120001-abcdef".parse().unwrap();
        let token = request_token(&run, "aws-app");
        assert_eq!(token, request_token(&run, "aws-app"));
        assert_ne!(token, request_token(&run, "aws-other"));
        assert_ne!(token, request_token(&other, "aws-app"));
        // AWS accepts tokens of 32 to 64 characters.
        assert!((32..=64).contains(&token.len()), "{token}");
    }

    #[test]
    fn moved_current_is_a_concurrent_modification() {
        let state = SecretState {
            arn: "arn:s".into(),
            current_version: Some("v1".into()),
            token: "t".into(),
            pending: None,
            restored_from_deletion: false,
        };
        assert!(check_current_unmoved(&state, Some("v1")).is_ok());
        let err = check_current_unmoved(&state, Some("v9")).unwrap_err();
        assert!(err.to_string().contains("from version v1 to version v9"));
    }
}
