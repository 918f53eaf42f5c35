//! The key model shared by issuers, targets and the engine.
//!
//! A key has a public id and one or more named fields. An API key may have a
//! single field `secret`; an AWS IAM access key has `access_key_id` and
//! `secret_access_key`. Targets name the field they receive, so a new issuer
//! or target needs no change in the engine. The pseudo-field `id` always
//! resolves to the key's id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::SecretBytes;

/// The field name that every key provides: its public id.
pub const ID_FIELD: &str = "id";

/// A credential made by an issuer.
#[derive(Clone, Debug)]
pub struct Key {
    /// Public identifier, safe to log (an IAM access key id, a key service's
    /// `key_...` id, or an id keywheel derives for a random key).
    pub id: String,
    fields: BTreeMap<String, SecretBytes>,
    /// Public attributes the issuer reported (scopes, limits, expiry).
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Key {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            fields: BTreeMap::new(),
            attributes: serde_json::Map::new(),
        }
    }

    /// Adds a secret field, replacing one of the same name.
    pub fn with_field(mut self, name: impl Into<String>, value: SecretBytes) -> Self {
        self.fields.insert(name.into(), value);
        self
    }

    /// Returns the value of `name`, where `id` is the key's id.
    pub fn field(&self, name: &str) -> Option<SecretBytes> {
        if name == ID_FIELD {
            return Some(SecretBytes::from_text(&self.id));
        }
        self.fields.get(name).cloned()
    }

    /// Names of the secret fields, without `id`.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    /// Every secret field value, for redaction and leak checks.
    pub fn secret_values(&self) -> impl Iterator<Item = &SecretBytes> {
        self.fields.values()
    }

    /// Serialises the key for sealing. The returned buffer holds secrets.
    pub fn to_sealable(&self) -> SecretBytes {
        let form = SealedKeyForm {
            id: self.id.clone(),
            fields: self
                .fields
                .iter()
                .map(|(name, value)| (name.clone(), base64_encode(value.expose())))
                .collect(),
            attributes: self.attributes.clone(),
        };
        // Serialising a map of strings cannot fail.
        let json = serde_json::to_vec(&form).unwrap_or_default();
        SecretBytes::new(json)
    }

    /// Rebuilds a key from [`Key::to_sealable`] output.
    pub fn from_sealable(bytes: &SecretBytes) -> Result<Self, String> {
        let form: SealedKeyForm = serde_json::from_slice(bytes.expose())
            .map_err(|err| format!("invalid sealed key record: {err}"))?;
        let mut key = Key::new(form.id);
        key.attributes = form.attributes;
        for (name, encoded) in form.fields {
            let value = base64_decode(&encoded)
                .map_err(|_| format!("invalid base64 in sealed key field {name}"))?;
            key.fields.insert(name, SecretBytes::new(value));
        }
        Ok(key)
    }
}

#[derive(Serialize, Deserialize)]
struct SealedKeyForm {
    id: String,
    fields: BTreeMap<String, String>,
    #[serde(default)]
    attributes: serde_json::Map<String, serde_json::Value>,
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_field_resolves_to_id() {
        let key = Key::new("AKIA1").with_field("secret_access_key", SecretBytes::from_text("s"));
        assert_eq!(key.field("id").unwrap().expose(), b"AKIA1");
        assert_eq!(key.field("secret_access_key").unwrap().expose(), b"s");
        assert!(key.field("missing").is_none());
    }

    #[test]
    fn sealable_form_round_trips() {
        let mut key = Key::new("k1").with_field("secret", SecretBytes::new(vec![0, 255, 10]));
        key.attributes
            .insert("scopes".into(), serde_json::json!(["a"]));
        let back = Key::from_sealable(&key.to_sealable()).unwrap();
        assert_eq!(back.id, "k1");
        assert_eq!(back.field("secret").unwrap().expose(), &[0, 255, 10]);
        assert_eq!(back.attributes["scopes"], serde_json::json!(["a"]));
    }
}
