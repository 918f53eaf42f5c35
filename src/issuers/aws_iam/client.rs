//! The IAM and STS calls the `aws_iam` issuer makes, each retried and
//! classified through [`crate::aws::call`].

use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_iam::types::StatusType;
use aws_sdk_sts::config::Credentials;
use tokio::sync::OnceCell;

use super::slots::AccessKeyInfo;
use crate::aws::error::ErrorClass;
use crate::aws::{AwsError, AwsSettings, Idempotency, call};
use crate::retry::{self, Failure, RetryPolicy};
use crate::secret::SecretBytes;

pub struct IamClient {
    settings: AwsSettings,
    user: String,
    loaded: OnceCell<(SdkConfig, aws_sdk_iam::Client)>,
}

impl IamClient {
    pub fn new(settings: AwsSettings, user: String) -> Self {
        Self {
            settings,
            user,
            loaded: OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &AwsSettings {
        &self.settings
    }

    async fn loaded(&self) -> Result<&(SdkConfig, aws_sdk_iam::Client), AwsError> {
        self.loaded
            .get_or_try_init(|| async {
                let config = self.settings.load().await?;
                let client = aws_sdk_iam::Client::new(&config);
                Ok((config, client))
            })
            .await
    }

    async fn iam(&self) -> Result<&aws_sdk_iam::Client, AwsError> {
        Ok(&self.loaded().await?.1)
    }

    /// Returns the user's ARN.
    pub async fn user_arn(&self, policy: &RetryPolicy) -> Result<String, AwsError> {
        let iam = self.iam().await?;
        let output = call(policy, Idempotency::Safe, "GetUser", || {
            iam.get_user().user_name(&self.user).send()
        })
        .await?;
        Ok(output
            .user()
            .map(|u| u.arn().to_string())
            .unwrap_or_default())
    }

    /// Lists the user's access keys. Users have two at most, so one page
    /// of up to 100 contains them all.
    pub async fn list_keys(&self, policy: &RetryPolicy) -> Result<Vec<AccessKeyInfo>, AwsError> {
        let iam = self.iam().await?;
        let output = call(policy, Idempotency::Safe, "ListAccessKeys", || {
            iam.list_access_keys()
                .user_name(&self.user)
                .max_items(100)
                .send()
        })
        .await?;
        Ok(output
            .access_key_metadata()
            .iter()
            .filter_map(|key| {
                Some(AccessKeyInfo {
                    id: key.access_key_id()?.to_string(),
                    active: key.status() == Some(&StatusType::Active),
                    created: key.create_date().map(|date| date.secs()),
                })
            })
            .collect())
    }

    /// Creates an access key: its id and secret. IAM takes no idempotency
    /// token, so a call whose response was lost is not repeated. The
    /// issuer finds such a key by listing the user's keys.
    pub async fn create_key(
        &self,
        policy: &RetryPolicy,
    ) -> Result<(String, SecretBytes), AwsError> {
        let iam = self.iam().await?;
        tracing::info!(user = %self.user, "creating an access key");
        let output = call(policy, Idempotency::Unsafe, "CreateAccessKey", || {
            iam.create_access_key().user_name(&self.user).send()
        })
        .await?;
        let key = output.access_key().ok_or_else(|| AwsError {
            class: ErrorClass::Other,
            code: None,
            message: "CreateAccessKey returned no access key".into(),
            status: None,
            retry_after: None,
        })?;
        Ok((
            key.access_key_id().to_string(),
            SecretBytes::from_text(key.secret_access_key()),
        ))
    }

    pub async fn set_active(
        &self,
        policy: &RetryPolicy,
        key_id: &str,
        active: bool,
    ) -> Result<(), AwsError> {
        let iam = self.iam().await?;
        let status = if active {
            StatusType::Active
        } else {
            StatusType::Inactive
        };
        tracing::info!(user = %self.user, key = key_id, ?status, "setting the status of an access key");
        call(policy, Idempotency::Safe, "UpdateAccessKey", || {
            iam.update_access_key()
                .user_name(&self.user)
                .access_key_id(key_id)
                .status(status.clone())
                .send()
        })
        .await
        .map(drop)
    }

    /// Deletes an access key; a key that is already gone counts as deleted.
    pub async fn delete_key(&self, policy: &RetryPolicy, key_id: &str) -> Result<(), AwsError> {
        let iam = self.iam().await?;
        tracing::info!(user = %self.user, key = key_id, "deleting an access key");
        let deleted = call(policy, Idempotency::Safe, "DeleteAccessKey", || {
            iam.delete_access_key()
                .user_name(&self.user)
                .access_key_id(key_id)
                .send()
        })
        .await;
        match deleted {
            Err(err) if err.is(ErrorClass::NotFound) => Ok(()),
            other => other.map(drop),
        }
    }

    /// Calls `sts:GetCallerIdentity` signed with the given key and returns
    /// the ARN it authenticates as. A new key is rejected as invalid for a
    /// few seconds while it propagates, so authentication failures are
    /// repeated for up to `patience`.
    pub async fn identity_of(
        &self,
        key_id: &str,
        secret: &SecretBytes,
        patience: Duration,
    ) -> Result<String, AwsError> {
        let (config, _) = self.loaded().await?;
        let credentials = Credentials::new(
            key_id,
            secret.expose_str().unwrap_or_default(),
            None,
            None,
            "keywheel-new-key",
        );
        let sts_config = aws_sdk_sts::config::Builder::from(config)
            .credentials_provider(credentials)
            .build();
        let sts = aws_sdk_sts::Client::from_conf(sts_config);
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            max_elapsed: patience,
        };
        let output = retry::retry(&policy, "GetCallerIdentity", |_| {
            let sent = sts.get_caller_identity().send();
            async move {
                sent.await.map_err(|err| {
                    let err = AwsError::from_sdk(err);
                    match err.class {
                        ErrorClass::Denied | ErrorClass::Throttled | ErrorClass::Transient => {
                            let retry_after = err.retry_after;
                            Failure::Retryable {
                                error: err,
                                retry_after,
                            }
                        }
                        _ => Failure::Fatal(err),
                    }
                })
            }
        })
        .await?;
        Ok(output.arn().unwrap_or_default().to_string())
    }
}
