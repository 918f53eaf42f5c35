//! The JSON Schema (draft 2020-12) of the playbook format, for editors:
//! `keywheel schema` prints it, and a YAML language server uses it for
//! completion and checking.
//!
//! Each issuer kind, target kind and section describes its fields in a
//! `schema` function next to its decoder, with the helpers here. The tests
//! below decode playbooks that use every field and check that each field a
//! decoder reads is in the schema, and that a decoder reads every property
//! of the schema.
//!
//! The schema checks the shape of a playbook: field names, types, choices
//! and patterns. Some rules of `keywheel validate` are left out, such as
//! target mappings naming fields the issuer provides, placeholders in
//! templates, or thresholds compared with the window length.

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::decode::format_duration;

/// The JSON Schema dialect of [`playbook`].
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Durations as [`super::decode::parse_duration`] reads them: `30s`, `1h30m`.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// File modes as a string: `"0600"` or `"0o600"`. A bare number is never a
/// file mode, because YAML reads `0600` as 600 (1.2) or 384 (1.1).
pub const FILE_MODE_PATTERN: &str = "^(0o)?[0-7]{1,4}$";

/// Portable environment variable names (POSIX): letters, digits and `_`,
/// not starting with a digit. keywheel itself only rejects empty names and
/// names with `=`, so the schema is stricter than `validate` here.
pub const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// Playbook, target and check names, as [`super::check_name`] accepts them.
pub const NAME_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

/// A JSON pointer (RFC 6901): empty, or starting with `/`.
pub const POINTER_PATTERN: &str = "^(/.*)?$";

/// Returns the schema of a whole playbook.
pub fn playbook() -> Value {
    let mut defs = Map::new();
    for (kind, schema) in crate::issuers::kind_schemas() {
        defs.insert(def_name("issuer", kind), schema);
    }
    for (kind, schema) in crate::targets::kind_schemas() {
        defs.insert(def_name("target", kind), schema);
    }
    let issuer = by_type(
        "Where new keys come from, and how old keys are revoked.",
        "issuer",
        crate::issuers::KINDS,
    );
    let target = by_type(
        "A place the new key is written to.",
        "target",
        crate::targets::KINDS,
    );

    let properties = vec![
        (
            "version",
            json!({
                "description": "Playbook format version; this keywheel reads 1.",
                "const": super::FORMAT_VERSION,
            }),
        ),
        (
            "name",
            name("Name of the credential; it names the lock and the run history."),
        ),
        ("description", string("Free text.")),
        ("issuer", issuer),
        (
            "targets",
            json!({
                "description": "Every place the key is written to.",
                "type": "array",
                "minItems": 1,
                "items": target,
            }),
        ),
        ("verify", crate::verify::VerifySpec::schema()),
        ("policy", super::policy_schema()),
        ("watch", crate::watch::spec::schema()),
        (
            "max_age",
            duration(
                "How old the key may get: `run --if-due` and `keywheel due` compare \
                 the last completed rotation with it.",
                None,
            ),
        ),
        ("notify", crate::notify::NotifySpec::schema()),
        ("emergency", super::emergency_schema()),
    ];

    let body = object(
        "A keywheel playbook: how to rotate one credential.",
        properties,
        &["version", "name", "issuer", "targets"],
    );
    let mut document = Map::new();
    document.insert("$schema".into(), json!(DIALECT));
    document.insert("title".into(), json!("keywheel playbook"));
    if let Value::Object(body) = body {
        document.extend(body);
    }
    document.insert("$defs".into(), Value::Object(defs));
    Value::Object(document)
}

fn def_name(section: &str, kind: &str) -> String {
    format!("{section}.{kind}")
}

/// Returns a mapping whose `type` field picks one of `kinds`, each described
/// by the definition `SECTION.KIND`, which repeats `type` with its constant
/// value.
fn by_type(description: &str, section: &str, kinds: &[&str]) -> Value {
    let branches: Vec<Value> = kinds
        .iter()
        .map(|kind| {
            json!({
                "if": {"required": ["type"], "properties": {"type": {"const": kind}}},
                "then": {"$ref": format!("#/$defs/{}", def_name(section, kind))},
            })
        })
        .collect();
    json!({
        "description": description,
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"description": format!("The {section} kind."), "enum": kinds},
        },
        "allOf": branches,
    })
}

/// Returns a mapping that takes only `properties`, in the order given.
pub fn object(description: &str, properties: Vec<(&str, Value)>, required: &[&str]) -> Value {
    let properties: Map<String, Value> = properties
        .into_iter()
        .map(|(key, value)| (key.to_string(), value))
        .collect();
    let mut schema = json!({
        "description": description,
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    schema
}

/// The `type` field of a kind's definition.
pub fn kind_tag(kind: &str) -> Value {
    json!({"const": kind})
}

pub fn string(description: &str) -> Value {
    json!({"description": description, "type": "string"})
}

/// A string with at least one character.
pub fn text(description: &str) -> Value {
    json!({"description": description, "type": "string", "minLength": 1})
}

pub fn name(description: &str) -> Value {
    json!({"description": description, "type": "string", "pattern": NAME_PATTERN})
}

pub fn pointer(description: &str) -> Value {
    json!({"description": description, "type": "string", "pattern": POINTER_PATTERN})
}

pub fn boolean(description: &str, default: bool) -> Value {
    json!({"description": description, "type": "boolean", "default": default})
}

/// A whole number from `minimum` to `maximum`.
pub fn integer(description: &str, minimum: u64, maximum: Option<u64>) -> Value {
    let mut schema = json!({"description": description, "type": "integer", "minimum": minimum});
    if let Some(maximum) = maximum {
        schema["maximum"] = json!(maximum);
    }
    schema
}

pub fn number(description: &str) -> Value {
    json!({"description": description, "type": "number"})
}

/// A duration such as `30s`, with its default when it has one.
pub fn duration(description: &str, default: Option<Duration>) -> Value {
    let mut schema = json!({
        "description": description,
        "type": "string",
        "pattern": DURATION_PATTERN,
    });
    if let Some(default) = default {
        schema["default"] = json!(format_duration(default));
    }
    schema
}

/// A file mode written as a string, `"0600"` or `"0o600"`.
pub fn file_mode(description: &str, default: u32) -> Value {
    json!({
        "description": format!(
            "{description} Write it as a quoted string such as \"0600\"; keywheel also \
             reads an unquoted 0o600, but never a bare 0600."
        ),
        "type": "string",
        "pattern": FILE_MODE_PATTERN,
        "default": format!("{default:04o}"),
    })
}

/// The name of an environment variable, with the default variable if any.
pub fn env_name(description: &str, default: Option<&str>) -> Value {
    let mut schema = json!({
        "description": description,
        "type": "string",
        "pattern": ENV_NAME_PATTERN,
    });
    if let Some(default) = default {
        schema["default"] = json!(default);
    }
    schema
}

/// One of `choices`, with the default if any.
pub fn choice(description: &str, choices: &[&str], default: Option<&str>) -> Value {
    let mut schema = json!({"description": description, "enum": choices});
    if let Some(default) = default {
        schema["default"] = json!(default);
    }
    schema
}

pub fn string_list(description: &str) -> Value {
    json!({"description": description, "type": "array", "items": {"type": "string"}})
}

/// A list of environment variable names.
pub fn env_name_list(description: &str) -> Value {
    json!({
        "description": description,
        "type": "array",
        "items": {"type": "string", "pattern": ENV_NAME_PATTERN},
    })
}

/// A target's `set`: names it writes, each mapped to a key field.
pub fn field_map(description: &str, name_pattern: Option<&str>) -> Value {
    let mut schema = json!({
        "description": description,
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {
            "description": "A field of the issuer's keys, such as secret or id.",
            "type": "string",
        },
    });
    if let Some(pattern) = name_pattern {
        schema["propertyNames"] = json!({"pattern": pattern});
    }
    schema
}

/// A mapping of header names to values that may contain placeholders.
pub fn headers(description: &str) -> Value {
    json!({
        "description": description,
        "type": "object",
        "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
        "additionalProperties": {"type": "string"},
    })
}

/// One HTTP status, or a list of them.
pub fn statuses(description: &str, default: &[u16]) -> Value {
    let status = json!({"type": "integer", "minimum": 100, "maximum": 599});
    json!({
        "description": description,
        "anyOf": [
            status,
            {"type": "array", "minItems": 1, "items": status},
        ],
        "default": default,
    })
}

/// A field that a decoder knows only to reject it, such as an inline
/// token: the schema names it so that editors explain why.
pub fn rejected(description: &str) -> Value {
    json!({"description": description, "not": {}})
}

/// Requires at most one of `fields`.
pub fn at_most_one(fields: &[&str]) -> Value {
    let pairs: Vec<Value> = fields
        .iter()
        .enumerate()
        .flat_map(|(i, a)| fields[i + 1..].iter().map(move |b| json!([a, b])))
        .map(|pair| json!({"required": pair}))
        .collect();
    json!({"not": {"anyOf": pairs}})
}

/// Requires exactly one of `fields`.
pub fn exactly_one(fields: &[&str]) -> Value {
    let branches: Vec<Value> = fields.iter().map(|f| json!({"required": [f]})).collect();
    json!({"oneOf": branches})
}

/// Adds `rules` (such as [`at_most_one`]) to an object schema.
pub fn with_rules(mut schema: Value, rules: Vec<Value>) -> Value {
    if !rules.is_empty() {
        schema["allOf"] = Value::Array(rules);
    }
    schema
}
