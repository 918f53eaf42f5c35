//! The `aws_iam` issuer: access keys of an AWS IAM user.
//!
//! ```yaml
//! issuer:
//!   type: aws_iam
//!   user: app-deployer             # the IAM user whose key rotates
//!   propagation_timeout: 60s       # how long verify waits for a new key
//!   region: us-east-1              # optional, see `crate::aws`
//!   endpoint_url_env: AWS_ENDPOINT_URL
//! ```
//!
//! Keys have the fields `access_key_id` (also the key's id) and
//! `secret_access_key`. Preflight finds the key in use (the one the targets
//! hold, else the user's only active key) and a free key slot (see
//! [`slots`]). Verify calls `sts:GetCallerIdentity` with the new key. Revoke
//! sets the old key `Inactive`; retire deletes it; a rollback before retire
//! sets the old key `Active` again and deletes the new one.
//!
//! `CreateAccessKey` takes no idempotency token and access keys carry no
//! tags, so after a crash between the create and its journal record the
//! issuer recognises its key as one the user did not have at preflight.

mod client;
pub mod slots;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CurrentFields, Issuer, IssuerCx, IssuerError, IssuerSnapshot, Recovered, Revocation};
use crate::aws::error::ErrorClass;
use crate::aws::{AwsError, AwsSpec};
use crate::key::Key;
use crate::playbook::decode::{Cx, MapReader};
use client::IamClient;
use slots::{AccessKeyInfo, DeleteReason};

/// Key field holding the access key id.
pub const ACCESS_KEY_ID_FIELD: &str = "access_key_id";
/// Key field holding the secret access key.
pub const SECRET_FIELD: &str = "secret_access_key";

const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(60);
/// How far, in seconds, the IAM server's clock may run behind keywheel's
/// when keys created after preflight are picked out.
const CLOCK_SKEW: i64 = 300;

#[derive(Clone, Debug)]
pub struct AwsIamSpec {
    pub user: String,
    /// How long verify retries while a new key propagates.
    pub propagation_timeout: Duration,
    pub aws: AwsSpec,
}

impl AwsIamSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let user: String = reader.required("user", cx);
        if let Some(node) = reader.value("user")
            && !is_user_name(&user)
        {
            cx.error_hint(
                node,
                &reader.path_of("user"),
                format!("invalid IAM user name {user:?}"),
                "use 1 to 64 letters, digits and the characters + = , . @ _ -",
            );
        }
        Self {
            user,
            propagation_timeout: reader
                .optional("propagation_timeout", cx)
                .unwrap_or(DEFAULT_PROPAGATION_TIMEOUT),
            aws: AwsSpec::decode(reader, cx),
        }
    }

    /// Returns the schema of an `aws_iam` issuer.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{duration, kind_tag, object};
        let user = serde_json::json!({
            "description": "The IAM user whose access key rotates.",
            "type": "string",
            "pattern": "^[A-Za-z0-9+=,.@_-]{1,64}$",
        });
        let mut properties = vec![
            ("type", kind_tag("aws_iam")),
            ("user", user),
            (
                "propagation_timeout",
                duration(
                    "How long verify retries sts:GetCallerIdentity while the new key propagates.",
                    Some(DEFAULT_PROPAGATION_TIMEOUT),
                ),
            ),
        ];
        properties.extend(crate::aws::AwsSpec::schema_properties());
        object(
            "A new access key of an IAM user, with the fields access_key_id (also the \
             key's id) and secret_access_key.",
            properties,
            &["type", "user"],
        )
    }
}

fn is_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
}

/// Facts preflight found and what it decided, journaled in clear. Access
/// key ids are identifiers, not secrets.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct IamState {
    user: String,
    user_arn: String,
    keys: Vec<AccessKeyInfo>,
    delete_first: Option<String>,
    delete_reason: Option<DeleteReason>,
    /// keywheel's clock at preflight, in seconds since the Unix epoch.
    checked_at: i64,
}

pub struct AwsIamIssuer {
    spec: AwsIamSpec,
    client: IamClient,
}

impl AwsIamIssuer {
    /// Builds the issuer, reading the environment variable that
    /// `endpoint_url_env` names. Errors name the spec field concerned.
    pub fn new(spec: AwsIamSpec) -> Result<Self, (&'static str, String)> {
        let settings = spec.aws.resolve()?;
        Ok(Self {
            client: IamClient::new(settings, spec.user.clone()),
            spec,
        })
    }

    /// Maps an AWS error to an issuer error that names the user.
    fn error(&self, action: &str, err: AwsError) -> IssuerError {
        let user = &self.spec.user;
        match err.class {
            ErrorClass::Throttled | ErrorClass::Transient => IssuerError::Unavailable(format!(
                "{action} IAM user {user}: {err}; AWS kept failing after the retries"
            )),
            ErrorClass::Denied => IssuerError::Denied(format!(
                "{action} IAM user {user}: {err}; check the AWS credentials and that their policy allows this on the user"
            )),
            ErrorClass::NotFound => IssuerError::Misconfigured(format!(
                "{action} IAM user {user}: not found in {} ({err})",
                self.client.settings().describe()
            )),
            ErrorClass::LimitExceeded => IssuerError::LimitReached(format!(
                "{action} IAM user {user}: an AWS limit is reached ({err})"
            )),
            ErrorClass::Invalid | ErrorClass::Setup | ErrorClass::Conflict => {
                IssuerError::Misconfigured(format!("{action} IAM user {user}: {err}"))
            }
            ErrorClass::Other => {
                IssuerError::InvalidResponse(format!("{action} IAM user {user}: {err}"))
            }
        }
    }
}

fn parse_state(snapshot: &IssuerSnapshot) -> Result<IamState, IssuerError> {
    serde_json::from_value(snapshot.state.clone()).map_err(|err| {
        IssuerError::InvalidResponse(format!("journaled aws_iam state is invalid: {err}"))
    })
}

fn now_epoch() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[async_trait]
impl Issuer for AwsIamIssuer {
    fn kind(&self) -> &'static str {
        "aws_iam"
    }

    fn revocation(&self) -> Revocation {
        Revocation::DisableThenDelete
    }

    async fn preflight(
        &self,
        cx: &IssuerCx,
        current: &CurrentFields,
    ) -> Result<IssuerSnapshot, IssuerError> {
        let user_arn = self
            .client
            .user_arn(&cx.retry)
            .await
            .map_err(|err| self.error("reading", err))?;
        let keys = self
            .client
            .list_keys(&cx.retry)
            .await
            .map_err(|err| self.error("listing the access keys of", err))?;
        let held = match current.get(ACCESS_KEY_ID_FIELD) {
            Some(value) => Some(value.expose_str().ok_or_else(|| {
                IssuerError::Misconfigured(
                    "the access key id the targets hold is not UTF-8 text".into(),
                )
            })?),
            None => None,
        };
        let decision = slots::decide(
            &self.spec.user,
            &keys,
            held.map(str::trim),
            &cx.disabled_by_earlier_runs,
            cx.overrides.delete_inactive_key,
        )?;

        let mut summary = format!(
            "IAM user {}: {} of {} key slots used",
            self.spec.user,
            keys.len(),
            slots::KEYS_PER_USER
        );
        match (&decision.old_key, decision.old_key_from_targets) {
            (Some(id), true) => summary.push_str(&format!(", old key {id} (held by the targets)")),
            (Some(id), false) => {
                summary.push_str(&format!(", old key {id} (the user's only active key)"))
            }
            (None, _) => summary.push_str(", no active key to replace"),
        }
        if let Some((id, reason)) = &decision.delete_first {
            let why = match reason {
                DeleteReason::DisabledByKeywheel => "an earlier keywheel run disabled it",
                DeleteReason::OperatorFlag => "--delete-inactive-key",
            };
            summary.push_str(&format!(
                "; inactive key {id} is deleted before the new key is created ({why})"
            ));
        }
        let (delete_first, delete_reason) = match decision.delete_first {
            Some((id, reason)) => (Some(id), Some(reason)),
            None => (None, None),
        };
        let state = IamState {
            user: self.spec.user.clone(),
            user_arn,
            keys,
            delete_first,
            delete_reason,
            checked_at: now_epoch(),
        };
        Ok(IssuerSnapshot {
            state: serde_json::to_value(&state).unwrap_or_default(),
            old_key_id: decision.old_key,
            summary,
        })
    }

    async fn create(&self, cx: &IssuerCx, snapshot: &IssuerSnapshot) -> Result<Key, IssuerError> {
        let state = parse_state(snapshot)?;
        if let Some(id) = &state.delete_first {
            self.client
                .delete_key(&cx.retry, id)
                .await
                .map_err(|err| self.error(&format!("deleting inactive key {id} of"), err))?;
        }
        let (id, secret) = self
            .client
            .create_key(&cx.retry)
            .await
            .map_err(|err| self.error("creating an access key for", err))?;
        let mut key = Key::new(&id)
            .with_field(
                ACCESS_KEY_ID_FIELD,
                crate::secret::SecretBytes::from_text(&id),
            )
            .with_field(SECRET_FIELD, secret);
        key.attributes
            .insert("user".into(), serde_json::json!(state.user));
        key.attributes
            .insert("user_arn".into(), serde_json::json!(state.user_arn));
        Ok(key)
    }

    /// Lists keys the user did not have at preflight: IAM cannot return a
    /// key's secret again, so each one is an orphan to delete.
    async fn find_created(
        &self,
        cx: &IssuerCx,
        snapshot: &IssuerSnapshot,
    ) -> Result<Recovered, IssuerError> {
        let state = parse_state(snapshot)?;
        let keys = self
            .client
            .list_keys(&cx.retry)
            .await
            .map_err(|err| self.error("listing the access keys of", err))?;
        let orphan_ids = keys
            .into_iter()
            .filter(|key| !state.keys.iter().any(|known| known.id == key.id))
            .filter(|key| Some(key.id.as_str()) != snapshot.old_key_id.as_deref())
            // NOTE: a key another actor created for the same user while
            // this run was interrupted would also match. The playbook lock
            // keeps other keywheel runs out, not other tools.
            .filter(|key| {
                key.created
                    .is_none_or(|t| t >= state.checked_at - CLOCK_SKEW)
            })
            .map(|key| key.id)
            .collect();
        Ok(Recovered {
            key: None,
            orphan_ids,
        })
    }

    async fn verify(&self, _cx: &IssuerCx, key: &Key) -> Result<Option<String>, IssuerError> {
        let secret = key.field(SECRET_FIELD).ok_or_else(|| {
            IssuerError::InvalidResponse(format!("key {} has no secret access key", key.id))
        })?;
        let patience = self.spec.propagation_timeout;
        let arn = self
            .client
            .identity_of(&key.id, &secret, patience)
            .await
            .map_err(|err| {
                IssuerError::VerificationFailed(format!(
                    "sts:GetCallerIdentity with new key {} did not succeed within {}: {err}",
                    key.id,
                    crate::playbook::decode::format_duration(patience)
                ))
            })?;
        let expected = key.attributes.get("user_arn").and_then(|v| v.as_str());
        if let Some(expected) = expected.filter(|e| !e.is_empty())
            && arn != expected
        {
            return Err(IssuerError::VerificationFailed(format!(
                "new key {} authenticates as {arn}, not as IAM user {} ({expected})",
                key.id, self.spec.user
            )));
        }
        Ok(Some(format!("sts:GetCallerIdentity answered as {arn}")))
    }

    async fn disable(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.client
            .set_active(&cx.retry, key_id, false)
            .await
            .map_err(|err| self.error(&format!("disabling access key {key_id} of"), err))
    }

    async fn enable(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.client
            .set_active(&cx.retry, key_id, true)
            .await
            .map_err(|err| self.error(&format!("enabling access key {key_id} of"), err))
    }

    async fn delete(&self, cx: &IssuerCx, key_id: &str) -> Result<(), IssuerError> {
        self.client
            .delete_key(&cx.retry, key_id)
            .await
            .map_err(|err| self.error(&format!("deleting access key {key_id} of"), err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_checked() {
        assert!(is_user_name("app-deployer"));
        assert!(is_user_name("ci+bot@example.com"));
        assert!(!is_user_name(""));
        assert!(!is_user_name("has space"));
        assert!(!is_user_name(&"a".repeat(65)));
    }
}
