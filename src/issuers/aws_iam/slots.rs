//! Which access key is in use, and whether the user has a free key slot.
//!
//! IAM allows two access keys per user, a quota that cannot be raised
//! (<https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html>).
//! A rotation needs one free slot for the new key while the old key keeps
//! working. When both slots are taken, keywheel frees one only by deleting
//! an inactive key that one of its own runs disabled, or that the operator
//! names for deletion with a flag. Two active keys always stop the run:
//! either may be in use somewhere, and guessing would break a consumer.

use serde::{Deserialize, Serialize};

use crate::issuers::IssuerError;

/// Access keys per IAM user, a fixed AWS quota.
pub const KEYS_PER_USER: usize = 2;

/// One access key of the user, as `ListAccessKeys` returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyInfo {
    pub id: String,
    pub active: bool,
    /// Creation time in seconds since the Unix epoch, when AWS gave it.
    pub created: Option<i64>,
}

/// Why a key is deleted before the new one is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteReason {
    /// An earlier keywheel run of this playbook disabled it.
    DisabledByKeywheel,
    /// The operator passed `--delete-inactive-key`.
    OperatorFlag,
}

/// What preflight decided about the user's keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotDecision {
    /// The key in use now, which the rotation revokes.
    pub old_key: Option<String>,
    /// Whether the targets named the old key (else it is the user's only
    /// active key).
    pub old_key_from_targets: bool,
    /// An inactive key to delete before creating the new one.
    pub delete_first: Option<(String, DeleteReason)>,
}

/// Decides which key is old and how the new key gets a slot.
/// `held_by_targets` is the access key id the targets hold, if they hold
/// one; `disabled_by_keywheel` lists keys earlier runs disabled.
pub fn decide(
    user: &str,
    keys: &[AccessKeyInfo],
    held_by_targets: Option<&str>,
    disabled_by_keywheel: &[String],
    delete_inactive_flag: bool,
) -> Result<SlotDecision, IssuerError> {
    let active: Vec<&str> = keys
        .iter()
        .filter(|k| k.active)
        .map(|k| k.id.as_str())
        .collect();
    if active.len() >= KEYS_PER_USER {
        return Err(IssuerError::LimitReached(format!(
            "IAM user {user} has {} active access keys ({}), so no slot is free for a new key; keywheel will not guess which one is unused: deactivate and delete the key that is no longer in use, then run again",
            active.len(),
            active.join(", ")
        )));
    }

    let old_key = match held_by_targets {
        Some(id) => {
            let Some(key) = keys.iter().find(|k| k.id == id) else {
                return Err(IssuerError::Misconfigured(format!(
                    "the targets hold access key {id}, but IAM user {user} has no such key (it has: {}); check `user` and the targets",
                    list_keys(keys)
                )));
            };
            if !key.active {
                return Err(IssuerError::Misconfigured(format!(
                    "the targets hold access key {id} of IAM user {user}, which is inactive; activate it or fix the targets, then run again"
                )));
            }
            Some(id.to_string())
        }
        None => active.first().map(|id| id.to_string()),
    };

    let delete_first = if keys.len() < KEYS_PER_USER {
        None
    } else {
        let mut inactive: Vec<&AccessKeyInfo> = keys.iter().filter(|k| !k.active).collect();
        inactive.sort_by_key(|k| k.created);
        let ours = inactive
            .iter()
            .find(|k| disabled_by_keywheel.contains(&k.id));
        match (ours, inactive.first()) {
            (Some(key), _) => Some((key.id.clone(), DeleteReason::DisabledByKeywheel)),
            (None, Some(key)) if delete_inactive_flag => {
                Some((key.id.clone(), DeleteReason::OperatorFlag))
            }
            (None, Some(_)) => {
                let ids: Vec<&str> = inactive.iter().map(|k| k.id.as_str()).collect();
                return Err(IssuerError::LimitReached(format!(
                    "no access key slot is free for IAM user {user}: it has {}; keywheel deletes an inactive key only when one of its own runs disabled it, so delete {} yourself, or run again with --delete-inactive-key",
                    list_keys(keys),
                    ids.join(" and ")
                )));
            }
            // Every key is active: ruled out above.
            (None, None) => None,
        }
    };

    Ok(SlotDecision {
        old_key,
        old_key_from_targets: held_by_targets.is_some(),
        delete_first,
    })
}

fn list_keys(keys: &[AccessKeyInfo]) -> String {
    if keys.is_empty() {
        return "no access keys".into();
    }
    keys.iter()
        .map(|k| {
            let status = if k.active { "active" } else { "inactive" };
            format!("{} ({status})", k.id)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, active: bool, created: i64) -> AccessKeyInfo {
        AccessKeyInfo {
            id: id.into(),
            active,
            created: Some(created),
        }
    }

    #[test]
    fn single_active_key_is_old_key() {
        let decision = decide("u", &[key("A", true, 1)], None, &[], false).unwrap();
        assert_eq!(decision.old_key.as_deref(), Some("A"));
        assert!(!decision.old_key_from_targets);
        assert_eq!(decision.delete_first, None);
    }

    #[test]
    fn targets_name_the_old_key() {
        let decision = decide("u", &[key("A", true, 1)], Some("A"), &[], false).unwrap();
        assert!(decision.old_key_from_targets);
    }

    #[test]
    fn two_active_keys_stop_the_run() {
        let keys = [key("A", true, 1), key("B", true, 2)];
        let err = decide("u", &keys, Some("A"), &["B".into()], true).unwrap_err();
        assert!(matches!(err, IssuerError::LimitReached(_)));
        assert!(err.to_string().contains("2 active access keys (A, B)"));
    }

    #[test]
    fn foreign_inactive_key_leaves_no_free_slot() {
        let keys = [key("A", true, 1), key("X", false, 2)];
        let err = decide("u", &keys, None, &[], false).unwrap_err();
        assert!(matches!(err, IssuerError::LimitReached(_)));
        let message = err.to_string();
        assert!(message.contains("no access key slot is free"), "{message}");
        assert!(message.contains("X (inactive)"), "{message}");
        assert!(message.contains("--delete-inactive-key"), "{message}");
    }

    #[test]
    fn keywheel_disabled_key_is_deleted_first() {
        let keys = [key("A", true, 1), key("X", false, 2)];
        let decision = decide("u", &keys, None, &["X".into()], false).unwrap();
        assert_eq!(
            decision.delete_first,
            Some(("X".into(), DeleteReason::DisabledByKeywheel))
        );
        assert_eq!(decision.old_key.as_deref(), Some("A"));
    }

    #[test]
    fn flag_deletes_oldest_inactive_key() {
        let keys = [key("Y", false, 5), key("X", false, 2)];
        let decision = decide("u", &keys, None, &[], true).unwrap();
        assert_eq!(
            decision.delete_first,
            Some(("X".into(), DeleteReason::OperatorFlag))
        );
        assert_eq!(decision.old_key, None);
    }

    #[test]
    fn targets_key_must_exist_and_be_active() {
        let keys = [key("A", true, 1), key("X", false, 2)];
        let missing = decide("u", &keys, Some("Z"), &[], true).unwrap_err();
        assert!(missing.to_string().contains("has no such key"));
        let inactive = decide("u", &keys, Some("X"), &[], true).unwrap_err();
        assert!(inactive.to_string().contains("which is inactive"));
    }

    #[test]
    fn user_without_keys_gets_a_first_key() {
        let decision = decide("u", &[], None, &[], false).unwrap();
        assert_eq!(decision.old_key, None);
        assert_eq!(decision.delete_first, None);
    }
}
