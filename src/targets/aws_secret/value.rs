//! Secret values of the `aws_secret` target: what a version holds, what the
//! target writes, and the sealed form of what it saw at preflight.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::key::Key;
use crate::secret::SecretBytes;
use crate::targets::{TargetError, mapped_values};

/// The value of one secret version: `SecretString` or `SecretBinary`.
#[derive(Clone, Debug)]
pub enum SecretValue {
    Text(SecretBytes),
    Binary(SecretBytes),
}

impl SecretValue {
    /// Returns whether both are the same kind with the same bytes,
    /// compared in constant time.
    pub fn same_as(&self, other: &SecretValue) -> bool {
        match (self, other) {
            (Self::Text(a), Self::Text(b)) | (Self::Binary(a), Self::Binary(b)) => {
                a.constant_time_eq(b)
            }
            _ => false,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Text(_) => "SecretString",
            Self::Binary(_) => "SecretBinary",
        }
    }
}

/// The part of the secret that the target manages.
#[derive(Clone, Debug)]
pub enum ValueSpec {
    /// The whole `SecretString` is this key field.
    Text(String),
    /// Fields of a JSON object in `SecretString`, by JSON field name, each
    /// set to a key field. Other fields are kept.
    Json(BTreeMap<String, String>),
    /// The whole `SecretBinary` is this key field.
    Binary(String),
}

impl ValueSpec {
    /// Names of what the target writes, for locations.
    pub fn describe(&self) -> String {
        match self {
            Self::Text(_) => "SecretString".into(),
            Self::Binary(_) => "SecretBinary".into(),
            Self::Json(set) => set.keys().cloned().collect::<Vec<_>>().join(", "),
        }
    }

    /// Builds the value to write from the key and the value it replaces.
    /// The result depends only on its inputs, so a resumed run sends the
    /// same bytes as the interrupted one.
    pub fn desired(
        &self,
        base: Option<&SecretValue>,
        key: &Key,
    ) -> Result<SecretValue, TargetError> {
        match self {
            Self::Text(field) => Ok(SecretValue::Text(key_field(key, field)?)),
            Self::Binary(field) => Ok(SecretValue::Binary(key_field(key, field)?)),
            Self::Json(set) => {
                let mut object = match base {
                    Some(value) => json_object(value)?,
                    None => serde_json::Map::new(),
                };
                for (name, value) in mapped_values(key, set)? {
                    let text = value.expose_str().ok_or_else(|| {
                        TargetError::Misconfigured(format!(
                            "the value for JSON field {name:?} is not UTF-8 text"
                        ))
                    })?;
                    object.insert(name, serde_json::Value::String(text.to_string()));
                }
                let text = serde_json::to_vec(&object).map_err(|err| {
                    TargetError::InvalidResponse(format!("cannot encode the secret as JSON: {err}"))
                })?;
                Ok(SecretValue::Text(SecretBytes::new(text)))
            }
        }
    }

    /// Managed JSON fields that `value` lacks; empty for whole values.
    pub fn missing_fields(&self, value: Option<&SecretValue>) -> Result<Vec<String>, TargetError> {
        let Self::Json(set) = self else {
            return Ok(Vec::new());
        };
        let object = match value {
            Some(value) => json_object(value)?,
            None => serde_json::Map::new(),
        };
        Ok(set
            .keys()
            .filter(|name| !object.contains_key(*name))
            .cloned()
            .collect())
    }

    /// Returns the key fields in `value`, by key field name.
    pub fn key_fields_in(&self, value: &SecretValue) -> crate::issuers::CurrentFields {
        let mut fields = crate::issuers::CurrentFields::new();
        match (self, value) {
            (Self::Text(field), SecretValue::Text(bytes))
            | (Self::Binary(field), SecretValue::Binary(bytes)) => {
                fields.insert(field.clone(), bytes.clone());
            }
            (Self::Json(set), SecretValue::Text(_)) => {
                let Ok(object) = json_object(value) else {
                    return fields;
                };
                for (name, field) in set {
                    if let Some(serde_json::Value::String(text)) = object.get(name) {
                        fields.insert(field.clone(), SecretBytes::from_text(text));
                    }
                }
            }
            _ => {}
        }
        fields
    }

    /// Checks that a value of the secret has the shape this spec writes.
    pub fn check_shape(&self, value: &SecretValue, what: &str) -> Result<(), TargetError> {
        match (self, value) {
            (Self::Json(_), SecretValue::Text(_)) => json_object(value).map(drop).map_err(|_| {
                TargetError::Misconfigured(format!(
                    "{what} is not a JSON object, so `set` cannot write fields into it; use `field` to replace the whole SecretString"
                ))
            }),
            (Self::Text(_) | Self::Json(_), SecretValue::Binary(_)) => {
                Err(TargetError::Misconfigured(format!(
                    "{what} contains SecretBinary; use `binary` to replace it"
                )))
            }
            (Self::Binary(_), SecretValue::Text(_)) => Err(TargetError::Misconfigured(format!(
                "{what} contains SecretString; use `field` or `set` to write it"
            ))),
            _ => Ok(()),
        }
    }
}

fn key_field(key: &Key, field: &str) -> Result<SecretBytes, TargetError> {
    key.field(field)
        .ok_or_else(|| TargetError::Misconfigured(format!("the new key has no field {field:?}")))
}

fn json_object(
    value: &SecretValue,
) -> Result<serde_json::Map<String, serde_json::Value>, TargetError> {
    let SecretValue::Text(bytes) = value else {
        return Err(TargetError::Misconfigured(
            "the secret contains SecretBinary, not a JSON SecretString".into(),
        ));
    };
    match serde_json::from_slice(bytes.expose()) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        // The parse error may quote the secret, so it is not passed on.
        _ => Err(TargetError::Misconfigured(
            "the SecretString is not a JSON object".into(),
        )),
    }
}

/// The values preflight read, sealed into the journal.
#[derive(Clone, Debug, Default)]
pub struct Previous {
    /// The value of the version labelled `AWSCURRENT`, if any.
    pub current: Option<SecretValue>,
    /// The value of a pending version the operator adopted: the base that
    /// the new JSON fields are written into.
    pub adopted: Option<SecretValue>,
}

#[derive(Serialize, Deserialize)]
struct PreviousForm {
    current: Option<ValueForm>,
    adopted: Option<ValueForm>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ValueForm {
    /// Base64 of the SecretString's UTF-8 bytes.
    Text(String),
    /// Base64 of the SecretBinary bytes.
    Binary(String),
}

impl ValueForm {
    fn from_value(value: &SecretValue) -> Self {
        let engine = base64::engine::general_purpose::STANDARD;
        match value {
            SecretValue::Text(bytes) => Self::Text(engine.encode(bytes.expose())),
            SecretValue::Binary(bytes) => Self::Binary(engine.encode(bytes.expose())),
        }
    }

    fn into_value(self) -> Option<SecretValue> {
        let engine = base64::engine::general_purpose::STANDARD;
        Some(match self {
            Self::Text(text) => SecretValue::Text(SecretBytes::new(engine.decode(text).ok()?)),
            Self::Binary(text) => SecretValue::Binary(SecretBytes::new(engine.decode(text).ok()?)),
        })
    }
}

impl Previous {
    /// Returns the value that the new JSON fields are written into.
    pub fn base(&self) -> Option<&SecretValue> {
        self.adopted.as_ref().or(self.current.as_ref())
    }

    /// Encodes for sealing. The returned buffer contains secrets.
    pub fn to_bytes(&self) -> SecretBytes {
        let form = PreviousForm {
            current: self.current.as_ref().map(ValueForm::from_value),
            adopted: self.adopted.as_ref().map(ValueForm::from_value),
        };
        // A struct of strings always serialises.
        SecretBytes::new(serde_json::to_vec(&form).unwrap_or_default())
    }

    pub fn from_bytes(bytes: &SecretBytes) -> Result<Self, TargetError> {
        let invalid = || TargetError::InvalidResponse("journaled secret value is invalid".into());
        let form: PreviousForm = serde_json::from_slice(bytes.expose()).map_err(|_| invalid())?;
        let decode = |value: Option<ValueForm>| match value {
            None => Ok(None),
            Some(form) => form.into_value().map(Some).ok_or_else(invalid),
        };
        Ok(Self {
            current: decode(form.current)?,
            adopted: decode(form.adopted)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> SecretValue {
        SecretValue::Text(SecretBytes::from_text(value))
    }

    fn key() -> Key {
        Key::new("AKIANEW")
            .with_field("access_key_id", SecretBytes::from_text("AKIANEW"))
            .with_field("secret_access_key", SecretBytes::from_text("new-secret"))
    }

    fn json_spec() -> ValueSpec {
        ValueSpec::Json(BTreeMap::from([
            ("AWS_ACCESS_KEY_ID".to_string(), "access_key_id".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                "secret_access_key".to_string(),
            ),
        ]))
    }

    fn expose(value: &SecretValue) -> String {
        match value {
            SecretValue::Text(bytes) | SecretValue::Binary(bytes) => {
                String::from_utf8(bytes.expose().to_vec()).unwrap()
            }
        }
    }

    #[test]
    fn json_fields_set_others_kept() {
        let base = text(r#"{"host":"db","AWS_ACCESS_KEY_ID":"AKIAOLD","port":5432}"#);
        let desired = json_spec().desired(Some(&base), &key()).unwrap();
        assert_eq!(
            expose(&desired),
            r#"{"host":"db","AWS_ACCESS_KEY_ID":"AKIANEW","port":5432,"AWS_SECRET_ACCESS_KEY":"new-secret"}"#
        );
    }

    #[test]
    fn desired_value_is_the_same_on_every_call() {
        let base = text(r#"{"b":"1","a":"2","AWS_ACCESS_KEY_ID":"x","AWS_SECRET_ACCESS_KEY":"y"}"#);
        let first = json_spec().desired(Some(&base), &key()).unwrap();
        let second = json_spec().desired(Some(&base), &key()).unwrap();
        assert!(first.same_as(&second));
    }

    #[test]
    fn whole_string_is_the_key_field() {
        let spec = ValueSpec::Text("secret_access_key".into());
        let desired = spec.desired(Some(&text("old")), &key()).unwrap();
        assert_eq!(expose(&desired), "new-secret");
    }

    #[test]
    fn missing_json_fields_are_listed() {
        let missing = json_spec()
            .missing_fields(Some(&text(r#"{"AWS_ACCESS_KEY_ID":"AKIAOLD"}"#)))
            .unwrap();
        assert_eq!(missing, ["AWS_SECRET_ACCESS_KEY"]);
    }

    #[test]
    fn non_json_string_rejected_unquoted() {
        let err = json_spec()
            .check_shape(&text("plain-secret-value"), "version v1")
            .unwrap_err();
        assert!(err.to_string().contains("not a JSON object"));
        assert!(!err.to_string().contains("plain-secret-value"));
    }

    #[test]
    fn key_fields_are_read_from_json() {
        let fields = json_spec().key_fields_in(&text(
            r#"{"AWS_ACCESS_KEY_ID":"AKIAOLD","AWS_SECRET_ACCESS_KEY":"old"}"#,
        ));
        assert_eq!(fields["access_key_id"].expose(), b"AKIAOLD");
        assert_eq!(fields["secret_access_key"].expose(), b"old");
    }

    #[test]
    fn previous_round_trips_through_bytes() {
        let previous = Previous {
            current: Some(SecretValue::Binary(SecretBytes::new(vec![0, 255]))),
            adopted: Some(text("{}")),
        };
        let back = Previous::from_bytes(&previous.to_bytes()).unwrap();
        assert!(back.current.unwrap().same_as(&previous.current.unwrap()));
        assert!(back.adopted.unwrap().same_as(&text("{}")));
    }
}
