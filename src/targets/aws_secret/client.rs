//! The Secrets Manager calls the `aws_secret` target makes, each retried and
//! classified through [`crate::aws::call`].
//!
//! API reference:
//! <https://docs.aws.amazon.com/secretsmanager/latest/apireference/>.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::primitives::{Blob, DateTimeFormat};
use tokio::sync::OnceCell;

use super::value::SecretValue;
use crate::aws::{AwsError, AwsSettings, Idempotency, call};
use crate::retry::RetryPolicy;
use crate::secret::SecretBytes;

pub const CURRENT: &str = "AWSCURRENT";
pub const PENDING: &str = "AWSPENDING";

/// Staging labels by version id. AWS returns the lists in no fixed order,
/// so they are kept as sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stages(BTreeMap<String, BTreeSet<String>>);

impl Stages {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(version, stages)| (version.to_string(), stages.iter().cloned().collect()))
                .collect(),
        )
    }

    /// Versions that carry `stage`. AWS keeps a label on one version at
    /// most; moto may put `AWSPENDING` on several.
    pub fn holders(&self, stage: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(_, stages)| stages.contains(stage))
            .map(|(version, _)| version.as_str())
            .collect()
    }

    /// The version that carries `stage`, when exactly one does.
    pub fn holder(&self, stage: &str) -> Option<&str> {
        match self.holders(stage).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    pub fn has(&self, version: &str, stage: &str) -> bool {
        self.0.get(version).is_some_and(|s| s.contains(stage))
    }

    pub fn contains_version(&self, version: &str) -> bool {
        self.0.contains_key(version)
    }
}

/// The parts of a `DescribeSecret` response that the target uses.
#[derive(Clone, Debug)]
pub struct Description {
    pub arn: String,
    /// When the secret was scheduled for deletion, if it is.
    pub deleted_date: Option<String>,
    pub rotation_enabled: bool,
    pub stages: Stages,
}

/// The version a `GetSecretValue` call reads. There is no default: moto
/// 5.2 returns, for a call without one, the value that was current before
/// the last `UpdateSecretVersionStage`, so every read names its version.
#[derive(Clone, Copy, Debug)]
pub enum Select<'a> {
    Version(&'a str),
    Stage(&'a str),
}

pub struct SecretsClient {
    settings: AwsSettings,
    /// The SDK configuration, shared with the other targets of the run
    /// that have the same settings.
    config: Arc<OnceCell<SdkConfig>>,
    secret_id: String,
    client: OnceCell<Client>,
}

impl SecretsClient {
    pub fn new(settings: AwsSettings, config: Arc<OnceCell<SdkConfig>>, secret_id: String) -> Self {
        Self {
            settings,
            config,
            secret_id,
            client: OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    /// Returns the SDK client, loading it on first use: loading reads
    /// profiles and may take a moment, and nothing needs it before preflight.
    async fn client(&self) -> Result<&Client, AwsError> {
        self.client
            .get_or_try_init(|| async {
                let config = self.config.get_or_try_init(|| self.settings.load()).await?;
                Ok(Client::new(config))
            })
            .await
    }

    pub async fn describe(&self, policy: &RetryPolicy) -> Result<Description, AwsError> {
        let client = self.client().await?;
        let output = call(policy, Idempotency::Safe, "DescribeSecret", || {
            client.describe_secret().secret_id(&self.secret_id).send()
        })
        .await?;
        let stages = output
            .version_ids_to_stages()
            .map(|map| Stages::from_pairs(map.iter().map(|(v, s)| (v.as_str(), s.as_slice()))))
            .unwrap_or_default();
        Ok(Description {
            arn: output.arn().unwrap_or(&self.secret_id).to_string(),
            deleted_date: output
                .deleted_date()
                .map(|date| date.fmt(DateTimeFormat::DateTime).unwrap_or_default()),
            rotation_enabled: output.rotation_enabled().unwrap_or(false),
            stages,
        })
    }

    /// Reads one version's value. `None` when the version contains neither
    /// a string nor a binary value.
    pub async fn value(
        &self,
        policy: &RetryPolicy,
        select: Select<'_>,
    ) -> Result<Option<SecretValue>, AwsError> {
        let client = self.client().await?;
        let output = call(policy, Idempotency::Safe, "GetSecretValue", || {
            let request = client.get_secret_value().secret_id(&self.secret_id);
            match select {
                Select::Version(id) => request.version_id(id),
                Select::Stage(stage) => request.version_stage(stage),
            }
            .send()
        })
        .await?;
        // NOTE: the SDK returns and takes secret values as plain `String`
        // and `Vec<u8>` (here and in `put_pending`), so its copies are not
        // zeroed when dropped; keywheel's own copies are.
        if let Some(text) = output.secret_string() {
            return Ok(Some(SecretValue::Text(SecretBytes::from_text(text))));
        }
        Ok(output
            .secret_binary()
            .map(|blob| SecretValue::Binary(SecretBytes::new(blob.as_ref().to_vec()))))
    }

    /// Writes `value` as a new version labelled `AWSPENDING`, whose id is
    /// `token`. AWS treats a repeat with the same token and value as the
    /// same request, so this is safe to send again after a crash.
    pub async fn put_pending(
        &self,
        policy: &RetryPolicy,
        token: &str,
        value: &SecretValue,
    ) -> Result<(), AwsError> {
        let client = self.client().await?;
        tracing::info!(secret = %self.secret_id, version = token, "putting a pending version");
        call(policy, Idempotency::Safe, "PutSecretValue", || {
            let request = client
                .put_secret_value()
                .secret_id(&self.secret_id)
                .client_request_token(token)
                .version_stages(PENDING);
            match value {
                SecretValue::Text(text) => {
                    request.secret_string(text.expose_str().unwrap_or_default())
                }
                SecretValue::Binary(bytes) => {
                    request.secret_binary(Blob::new(bytes.expose().to_vec()))
                }
            }
            .send()
        })
        .await
        .map(drop)
    }

    /// Moves `stage` to version `to` (or only removes it, when `to` is
    /// `None`) from version `from`. AWS requires `from` whenever another
    /// version carries the label, and rejects it when none does.
    pub async fn move_stage(
        &self,
        policy: &RetryPolicy,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        let client = self.client().await?;
        tracing::info!(secret = %self.secret_id, stage, to, from, "moving a staging label");
        call(
            policy,
            Idempotency::Safe,
            "UpdateSecretVersionStage",
            || {
                client
                    .update_secret_version_stage()
                    .secret_id(&self.secret_id)
                    .version_stage(stage)
                    .set_move_to_version_id(to.map(str::to_string))
                    .set_remove_from_version_id(from.map(str::to_string))
                    .send()
            },
        )
        .await
        .map(drop)
    }

    /// Cancels the scheduled deletion of the secret.
    pub async fn restore_deleted(&self, policy: &RetryPolicy) -> Result<(), AwsError> {
        let client = self.client().await?;
        tracing::info!(secret = %self.secret_id, "restoring a secret scheduled for deletion");
        call(policy, Idempotency::Safe, "RestoreSecret", || {
            client.restore_secret().secret_id(&self.secret_id).send()
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(pairs: &[(&str, &[&str])]) -> Stages {
        let owned: Vec<(String, Vec<String>)> = pairs
            .iter()
            .map(|(v, s)| (v.to_string(), s.iter().map(|x| x.to_string()).collect()))
            .collect();
        Stages::from_pairs(owned.iter().map(|(v, s)| (v.as_str(), s.as_slice())))
    }

    #[test]
    fn holders_ignore_label_order() {
        let stages = stages(&[
            ("v1", &["AWSPREVIOUS"]),
            ("v2", &["AWSPENDING", "AWSCURRENT"]),
        ]);
        assert_eq!(stages.holder(CURRENT), Some("v2"));
        assert_eq!(stages.holder(PENDING), Some("v2"));
        assert!(stages.has("v1", "AWSPREVIOUS"));
    }

    #[test]
    fn label_on_two_versions_has_no_holder() {
        let stages = stages(&[("v1", &["AWSPENDING"]), ("v2", &["AWSPENDING"])]);
        assert_eq!(stages.holders(PENDING), ["v1", "v2"]);
        assert_eq!(stages.holder(PENDING), None);
    }
}
