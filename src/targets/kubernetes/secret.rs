//! Reading and writing the managed keys of one Secret.
//!
//! A write is conditional twice over. The managed keys must still hold what
//! preflight saw (or, for a restore, what the push wrote), otherwise someone
//! else wrote them and keywheel stops instead of overwriting. And the update
//! carries the resourceVersion the Secret was read at, so the API server
//! rejects it with 409 Conflict when another writer changed the Secret in
//! between.
//! keywheel then reads the Secret again, applies only the managed keys to
//! what it found, and tries again, at most [`MAX_WRITE_ATTEMPTS`] times. It
//! never drops the resourceVersion to force a write.
//!
//! Every write is followed by a fresh read that compares the stored bytes
//! of each managed key with the expected ones.
//!
//! NOTE: Secret objects read from the API server hold every key's bytes in
//! plain `Vec`s (`ByteString`), which are not zeroed when dropped, unlike
//! [`SecretBytes`].

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, PostParams, Preconditions};
use serde::{Deserialize, Serialize};

use super::KubernetesTarget;
use super::client::{self, Object};
use crate::secret::SecretBytes;
use crate::targets::{Receipt, TargetCx, TargetError};

/// Writes rejected with 409 Conflict before keywheel gives up on a Secret.
pub const MAX_WRITE_ATTEMPTS: u32 = 5;

/// Annotation on a Secret that keywheel created, holding the run id, so that
/// a rollback deletes only a Secret its own run created.
const CREATED_BY_ANNOTATION: &str = "keywheel.io/created-by-run";

/// The Secret as preflight saw it. Public: journaled in clear.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretState {
    pub existed: bool,
    /// resourceVersion at preflight; empty when the Secret did not exist.
    pub resource_version: String,
    /// Managed keys the Secret did not have.
    pub missing_keys: Vec<String>,
}

/// Values of managed keys by data key; a key the Secret lacks is absent.
pub type Values = BTreeMap<String, SecretBytes>;

/// Serialises values for sealing: a JSON map of base64 strings.
pub fn encode_values(values: &Values) -> SecretBytes {
    use base64::Engine as _;
    let encoded: BTreeMap<&str, String> = values
        .iter()
        .map(|(key, value)| {
            let text = base64::engine::general_purpose::STANDARD.encode(value.expose());
            (key.as_str(), text)
        })
        .collect();
    SecretBytes::new(serde_json::to_vec(&encoded).unwrap_or_default())
}

pub fn decode_values(bytes: &SecretBytes) -> Result<Values, TargetError> {
    use base64::Engine as _;
    let invalid = || TargetError::InvalidResponse("journaled kubernetes values are invalid".into());
    if bytes.is_empty() {
        return Ok(Values::new());
    }
    let encoded: BTreeMap<String, String> =
        serde_json::from_slice(bytes.expose()).map_err(|_| invalid())?;
    encoded
        .into_iter()
        .map(|(key, text)| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(|value| (key, SecretBytes::new(value)))
                .map_err(|_| invalid())
        })
        .collect()
}

/// Checks that two sets of values have the same keys and the same bytes.
fn same(a: &Values, b: &Values) -> bool {
    a.len() == b.len()
        && a.iter().all(|(key, value)| {
            b.get(key)
                .is_some_and(|other| value.constant_time_eq(other))
        })
}

/// Lists the keys whose values differ between `a` and `b`, for messages.
fn differing_keys(a: &Values, b: &Values) -> String {
    let mut keys: Vec<&str> = a
        .keys()
        .chain(b.keys())
        .filter(|key| match (a.get(*key), b.get(*key)) {
            (Some(x), Some(y)) => !x.constant_time_eq(y),
            _ => true,
        })
        .map(String::as_str)
        .collect();
    keys.dedup();
    keys.join(", ")
}

impl KubernetesTarget {
    fn secrets(&self) -> kube::Api<Secret> {
        kube::Api::namespaced(self.connection.client.clone(), &self.namespace)
    }

    /// Collects the values of the managed keys from `secret`.
    fn managed_values(&self, secret: &Secret) -> Values {
        let data = secret.data.as_ref();
        self.spec
            .set
            .keys()
            .filter_map(|key| {
                data.and_then(|d| d.get(key))
                    .map(|value| (key.clone(), SecretBytes::new(value.0.clone())))
            })
            .collect()
    }

    /// Reads the Secret; `None` when it does not exist.
    pub(super) async fn read_secret(&self, cx: &TargetCx) -> Result<Option<Secret>, TargetError> {
        let api = self.secrets();
        let name = &self.spec.secret_name;
        match client::call(
            &cx.retry,
            self.connection.timeout,
            "kubernetes secret read",
            || api.get(name),
        )
        .await
        {
            Ok(secret) => Ok(Some(secret)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(client::target_error(err, "get", &self.secret_object())),
        }
    }

    /// Checks what preflight found and returns the journaled state, the
    /// previous values, and a summary.
    pub(super) fn inspect(
        &self,
        found: Option<&Secret>,
    ) -> Result<(SecretState, Values, String), TargetError> {
        let Some(secret) = found else {
            if !self.spec.create {
                return Err(TargetError::Misconfigured(format!(
                    "Secret {} not found; create it, or set `create: true` to let keywheel create it",
                    self.secret_display()
                )));
            }
            let state = SecretState {
                existed: false,
                resource_version: String::new(),
                missing_keys: self.spec.set.keys().cloned().collect(),
            };
            return Ok((state, Values::new(), "Secret will be created".into()));
        };
        if secret.immutable == Some(true) {
            return Err(TargetError::Misconfigured(format!(
                "Secret {} is immutable, so its data cannot change; delete and recreate it without `immutable: true`",
                self.secret_display()
            )));
        }
        let previous = self.managed_values(secret);
        let missing: Vec<String> = self
            .spec
            .set
            .keys()
            .filter(|key| !previous.contains_key(*key))
            .cloned()
            .collect();
        if !missing.is_empty() && !self.spec.create {
            return Err(TargetError::Misconfigured(format!(
                "Secret {} has no key {}; add it, or set `create: true` to let keywheel add it",
                self.secret_display(),
                missing.join(", ")
            )));
        }
        let resource_version = secret.metadata.resource_version.clone().unwrap_or_default();
        let summary = format!("resourceVersion {resource_version}");
        let state = SecretState {
            existed: true,
            resource_version,
            missing_keys: missing,
        };
        Ok((state, previous, summary))
    }

    /// Writes `desired` into the managed keys; see the module documentation.
    pub(super) async fn push_values(
        &self,
        cx: &TargetCx,
        state: &SecretState,
        previous: &Values,
        desired: &Values,
    ) -> Result<Receipt, TargetError> {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let Some(current) = self.read_secret(cx).await? else {
                if state.existed {
                    return Err(TargetError::ConcurrentModification(format!(
                        "Secret {} was deleted after preflight; run `keywheel rollback` and start again",
                        self.secret_display()
                    )));
                }
                match self.create(cx, desired).await {
                    Ok(()) => return self.confirm(cx, desired, "created the Secret").await,
                    Err(err) if err.is_already_exists() => {
                        tracing::warn!(
                            target = %self.name,
                            attempt,
                            "create rejected with 409 AlreadyExists: another writer created the Secret; reading it to update it"
                        );
                        continue;
                    }
                    Err(err) => {
                        return Err(client::target_error(err, "create", &self.collection()));
                    }
                }
            };
            let managed = self.managed_values(&current);
            if same(&managed, desired) {
                return self
                    .confirm(cx, desired, "already held the new values")
                    .await;
            }
            if !same(&managed, previous) {
                return Err(TargetError::ConcurrentModification(format!(
                    "Secret {}: key {} changed after preflight, so someone else wrote it; run `keywheel rollback` and start again",
                    self.secret_display(),
                    differing_keys(&managed, previous)
                )));
            }
            self.require_version(&current)?;
            match self.update(cx, current, desired).await {
                Ok(()) => {
                    let done = after_conflicts("wrote the new values", attempt);
                    return self.confirm(cx, desired, &done).await;
                }
                Err(err) if err.is_conflict() => self.note_conflict(attempt),
                Err(err) => return Err(client::target_error(err, "update", &self.secret_object())),
            }
        }
        Err(self.kept_changing())
    }

    /// Puts `previous` back into the managed keys when they hold `pushed`;
    /// see the module documentation.
    pub(super) async fn restore_values(
        &self,
        cx: &TargetCx,
        state: &SecretState,
        previous: &Values,
        pushed: &Values,
    ) -> Result<Receipt, TargetError> {
        for attempt in 1..=MAX_WRITE_ATTEMPTS {
            let Some(current) = self.read_secret(cx).await? else {
                if state.existed {
                    return Ok(self.left_alone("the Secret no longer exists"));
                }
                return Ok(receipt(
                    "",
                    "the Secret does not exist, as before the run".into(),
                ));
            };
            let managed = self.managed_values(&current);
            if same(&managed, previous) {
                let version = current.metadata.resource_version.unwrap_or_default();
                return Ok(receipt(
                    &version,
                    "managed keys already hold their previous values".into(),
                ));
            }
            if !same(&managed, pushed) {
                return Ok(self.left_alone("it holds neither the new nor the previous values"));
            }

            // Deleted only while it holds nothing but the managed keys: a key
            // another writer added since must survive the rollback.
            let only_managed_keys = current
                .data
                .as_ref()
                .is_none_or(|data| data.keys().all(|k| self.spec.set.contains_key(k)));
            let created_by_run = only_managed_keys
                && current
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CREATED_BY_ANNOTATION))
                    .is_some_and(|run| *run == cx.run_id.to_string());
            self.require_version(&current)?;
            let result = if !state.existed && created_by_run {
                self.delete(cx, &current).await
            } else {
                self.update(cx, current, previous).await
            };
            match result {
                Ok(()) if !state.existed && created_by_run => {
                    return self.confirm_deleted(cx).await;
                }
                Ok(()) => {
                    let done = after_conflicts("wrote the previous values back", attempt);
                    return self.confirm(cx, previous, &done).await;
                }
                Err(err) if err.is_conflict() => self.note_conflict(attempt),
                Err(err) => {
                    let verb = if !state.existed && created_by_run {
                        "delete"
                    } else {
                        "update"
                    };
                    return Err(client::target_error(err, verb, &self.secret_object()));
                }
            }
        }
        Err(self.kept_changing())
    }

    fn collection(&self) -> Object<'_> {
        Object {
            name: "",
            ..self.secret_object()
        }
    }

    /// Rejects a Secret read without a resourceVersion: writing it would be
    /// an unconditional update.
    fn require_version(&self, secret: &Secret) -> Result<(), TargetError> {
        match &secret.metadata.resource_version {
            Some(version) if !version.is_empty() => Ok(()),
            _ => Err(TargetError::InvalidResponse(format!(
                "Secret {} was read without a resourceVersion, so it cannot be updated safely",
                self.secret_display()
            ))),
        }
    }

    fn note_conflict(&self, attempt: u32) {
        tracing::warn!(
            target = %self.name,
            attempt,
            max_attempts = MAX_WRITE_ATTEMPTS,
            "update rejected with 409 Conflict: the Secret changed after it was read; reading it again"
        );
    }

    fn kept_changing(&self) -> TargetError {
        TargetError::ConcurrentModification(format!(
            "Secret {} kept changing: {MAX_WRITE_ATTEMPTS} writes in a row were rejected with 409 Conflict; find the other writer, then run `keywheel resume` or `keywheel rollback`",
            self.secret_display()
        ))
    }

    fn left_alone(&self, why: &str) -> Receipt {
        receipt(
            "",
            format!("left the Secret alone: {why}, so someone else changed it after preflight"),
        )
        .left_alone()
    }

    /// Creates the Secret with only the managed keys, in `data`.
    async fn create(&self, cx: &TargetCx, values: &Values) -> Result<(), client::CallError> {
        let mut secret = Secret {
            type_: Some("Opaque".into()),
            ..Secret::default()
        };
        secret.metadata.name = Some(self.spec.secret_name.clone());
        secret.metadata.namespace = Some(self.namespace.clone());
        secret.metadata.annotations = Some(BTreeMap::from([(
            CREATED_BY_ANNOTATION.to_string(),
            cx.run_id.to_string(),
        )]));
        set_values(&mut secret, &self.spec.set, values);
        let api = self.secrets();
        let params = PostParams::default();
        client::call(
            &cx.retry,
            self.connection.timeout,
            "kubernetes secret create",
            || api.create(&params, &secret),
        )
        .await
        .map(drop)
    }

    /// Replaces `current` with its managed keys set to `values`, carrying
    /// the resourceVersion `current` was read at.
    async fn update(
        &self,
        cx: &TargetCx,
        mut current: Secret,
        values: &Values,
    ) -> Result<(), client::CallError> {
        set_values(&mut current, &self.spec.set, values);
        let api = self.secrets();
        let params = PostParams::default();
        let name = &self.spec.secret_name;
        client::call(
            &cx.retry,
            self.connection.timeout,
            "kubernetes secret update",
            || api.replace(name, &params, &current),
        )
        .await
        .map(drop)
    }

    /// Deletes `current` on condition that it is still at the version read.
    async fn delete(&self, cx: &TargetCx, current: &Secret) -> Result<(), client::CallError> {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: current.metadata.resource_version.clone(),
                uid: current.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        let api = self.secrets();
        let name = &self.spec.secret_name;
        match client::call(
            &cx.retry,
            self.connection.timeout,
            "kubernetes secret delete",
            || api.delete(name, &params),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Reads the Secret again and checks the managed keys hold exactly
    /// `expected`.
    async fn confirm(
        &self,
        cx: &TargetCx,
        expected: &Values,
        done: &str,
    ) -> Result<Receipt, TargetError> {
        let Some(secret) = self.read_secret(cx).await? else {
            return Err(TargetError::ReadBackMismatch(format!(
                "Secret {} is gone right after it was written",
                self.secret_display()
            )));
        };
        let stored = self.managed_values(&secret);
        if !same(&stored, expected) {
            return Err(TargetError::ReadBackMismatch(format!(
                "Secret {} does not hold the values just written (key {})",
                self.secret_display(),
                differing_keys(&stored, expected)
            )));
        }
        let version = secret.metadata.resource_version.unwrap_or_default();
        Ok(receipt(
            &version,
            format!("{done}; read back at resourceVersion {version}"),
        ))
    }

    async fn confirm_deleted(&self, cx: &TargetCx) -> Result<Receipt, TargetError> {
        match self.read_secret(cx).await? {
            None => Ok(receipt("", "deleted the Secret this run created".into())),
            Some(_) => Err(TargetError::ReadBackMismatch(format!(
                "Secret {} still exists after it was deleted",
                self.secret_display()
            ))),
        }
    }
}

/// Sets every key of `set` to its value in `values`, in `data`, and removes
/// the keys `values` lacks. Other keys are kept.
fn set_values(secret: &mut Secret, set: &BTreeMap<String, String>, values: &Values) {
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    for key in set.keys() {
        match values.get(key) {
            Some(value) => data.insert(key.clone(), ByteString(value.expose().to_vec())),
            None => data.remove(key),
        };
    }
}

/// Adds to `done` how many writes were rejected with 409 Conflict before
/// the one that succeeded on `attempt`.
fn after_conflicts(done: &str, attempt: u32) -> String {
    match attempt - 1 {
        0 => done.to_string(),
        conflicts => format!("{done} after {conflicts} write(s) rejected with 409 Conflict"),
    }
}

fn receipt(resource_version: &str, summary: String) -> Receipt {
    Receipt {
        state: serde_json::json!({"resource_version": resource_version}),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_holds_exact_bytes_in_base64() {
        let mut secret = Secret::default();
        let set = BTreeMap::from([("API_KEY".to_string(), "secret".to_string())]);
        let values = Values::from([("API_KEY".to_string(), SecretBytes::from_text("s3cr3t"))]);
        set_values(&mut secret, &set, &values);
        let json = serde_json::to_value(&secret).unwrap();
        assert_eq!(json["data"]["API_KEY"], "czNjcjN0");
        assert!(json.get("stringData").is_none());
    }

    #[test]
    fn set_values_keeps_unmanaged_keys() {
        let mut secret = Secret {
            data: Some(BTreeMap::from([
                ("OTHER".to_string(), ByteString(b"x".to_vec())),
                ("API_KEY".to_string(), ByteString(b"old".to_vec())),
            ])),
            ..Secret::default()
        };
        let set = BTreeMap::from([("API_KEY".to_string(), "secret".to_string())]);
        set_values(&mut secret, &set, &Values::new());
        let data = secret.data.unwrap();
        assert_eq!(data.len(), 1);
        assert_eq!(data["OTHER"].0, b"x");
    }

    #[test]
    fn values_round_trip_through_sealable_form() {
        let values = Values::from([("K".to_string(), SecretBytes::new(vec![0, 255, b'\n']))]);
        let back = decode_values(&encode_values(&values)).unwrap();
        assert!(same(&values, &back));
        assert!(decode_values(&SecretBytes::default()).unwrap().is_empty());
    }

    #[test]
    fn same_compares_keys_and_bytes() {
        let a = Values::from([("K".to_string(), SecretBytes::from_text("s3cr3t"))]);
        let b = Values::from([("K".to_string(), SecretBytes::from_text("s3cr3t\n"))]);
        assert!(!same(&a, &b));
        assert!(!same(&a, &Values::new()));
        assert_eq!(differing_keys(&a, &b), "K");
    }
}
