//! Credentials an issuer presents (an admin token): the playbook names an
//! environment variable or a file that holds one, never the value itself.

use std::path::PathBuf;

use crate::playbook::decode::{Cx, MapReader};
use crate::secret::SecretBytes;

/// Where a credential is read from when a run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Env(String),
    File(PathBuf),
}

/// Field names of one credential in a playbook mapping.
pub struct CredentialFields {
    /// The field that would hold the value inline, which is rejected.
    pub inline: &'static str,
    pub env: &'static str,
    pub file: &'static str,
}

/// Reads the credential fields of `reader`: exactly one of the variable or
/// the file when `required`, at most one otherwise.
pub fn decode(
    reader: &mut MapReader<'_>,
    cx: &mut Cx,
    fields: &CredentialFields,
    required: bool,
) -> Option<CredentialSource> {
    if let Some(node) = reader.value(fields.inline) {
        cx.error_hint(
            node,
            &reader.path_of(fields.inline),
            format!("`{}` cannot be written in a playbook", fields.inline),
            format!(
                "put it in an environment variable named in `{}`, or in a file named in `{}`",
                fields.env, fields.file
            ),
        );
    }
    let env = reader.optional::<String>(fields.env, cx);
    let file = reader.optional::<String>(fields.file, cx);
    match (env, file) {
        (Some(_), Some(_)) => {
            let node = reader.value(fields.file).unwrap_or(reader.node());
            cx.error_hint(
                node,
                &reader.path_of(fields.file),
                format!("`{}` and `{}` cannot both be set", fields.env, fields.file),
                "keep one of them",
            );
            None
        }
        (Some(name), None) => {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                let node = reader.value(fields.env).unwrap_or(reader.node());
                cx.error(
                    node,
                    &reader.path_of(fields.env),
                    format!("invalid environment variable name {name:?}"),
                );
                return None;
            }
            Some(CredentialSource::Env(name))
        }
        (None, Some(path)) => Some(CredentialSource::File(cx.resolve_path(&path))),
        (None, None) => {
            if required {
                cx.error_hint(
                    reader.node(),
                    reader.path(),
                    format!("missing `{}` or `{}`", fields.env, fields.file),
                    "name the environment variable or the file that holds the credential",
                );
            }
            None
        }
    }
}

/// Returns the schema of the fields [`decode`] reads, and the rule that at most
/// one of the variable and the file is set.
pub fn schema_properties(
    fields: &CredentialFields,
    what: &str,
) -> (Vec<(&'static str, serde_json::Value)>, serde_json::Value) {
    use crate::playbook::schema::{at_most_one, env_name, rejected, text};
    let properties = vec![
        (
            fields.inline,
            rejected(&format!(
                "Never written in a playbook: name the variable in `{}` or the file in `{}`.",
                fields.env, fields.file
            )),
        ),
        (
            fields.env,
            env_name(&format!("Environment variable holding {what}."), None),
        ),
        (
            fields.file,
            text(&format!(
                "File holding {what}, relative to the playbook; surrounding blanks are removed."
            )),
        ),
    ];
    (properties, at_most_one(&[fields.env, fields.file]))
}

impl CredentialSource {
    /// Reads the credential; leading and trailing blanks (a file's final
    /// newline) are removed. Errors say which variable or file to fix.
    pub fn read(&self) -> Result<SecretBytes, String> {
        let raw = match self {
            Self::Env(name) => std::env::var(name).map_err(|_| {
                format!("environment variable {name} is not set; export the credential in it")
            })?,
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|err| format!("cannot read credential file {}: {err}", path.display()))?,
        };
        let value = SecretBytes::from_text(raw.trim());
        if value.is_empty() {
            return Err(format!("{} is empty", self.describe()));
        }
        Ok(value)
    }

    /// Names the source in messages: `$NAME` or the file path.
    pub fn describe(&self) -> String {
        match self {
            Self::Env(name) => format!("environment variable {name}"),
            Self::File(path) => format!("file {}", path.display()),
        }
    }
}
