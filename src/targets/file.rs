//! The `file` target: a file whose whole content is one key field, or a JSON
//! document with some members set to key fields.
//!
//! ```yaml
//! - name: api-key-file
//!   type: file
//!   path: secrets/api.key      # relative to the playbook's directory
//!   field: secret              # default: secret
//!   trailing_newline: false    # default: false
//! - name: app-config
//!   type: file
//!   path: config/app.json
//!   format: json
//!   set:
//!     api_key: secret          # top-level member
//!     /upstream/token: secret  # JSON pointer
//! ```
//!
//! Writes are atomic replaces that keep the file's mode and owner; a file
//! that keywheel creates (`create: true`) gets `mode`, 0600 by default.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::json_span;
use super::local::{self, FileState};
use super::{HeldFields, Receipt, Snapshot, Target, TargetCx, TargetError, mapped_values};
use crate::fsutil::PRIVATE_FILE_MODE;
use crate::key::Key;
use crate::playbook::decode::{Cx, FileMode, MapReader, decode_choice};
use crate::playbook::{check_key_field, decode_field_map};
use crate::secret::SecretBytes;

const FORMATS: &[&str] = &["raw", "json"];

#[derive(Clone, Debug)]
pub struct FileSpec {
    pub path: PathBuf,
    pub format: FileFormat,
    pub create: bool,
    /// Mode of a file that keywheel creates.
    pub mode: u32,
}

#[derive(Clone, Debug)]
pub enum FileFormat {
    /// The file holds exactly one field's bytes.
    Raw {
        field: String,
        trailing_newline: bool,
    },
    /// A JSON document; each entry maps a member name or JSON pointer to a
    /// key field.
    Json { set: BTreeMap<String, String> },
}

impl FileSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let path: String = reader.required("path", cx);
        let create = reader.optional::<bool>("create", cx).unwrap_or(false);
        let mode = reader
            .optional::<FileMode>("mode", cx)
            .map_or(PRIVATE_FILE_MODE, |mode| mode.0);
        let format = match reader.value("format") {
            Some(node) => decode_choice(node, &reader.path_of("format"), cx, FORMATS),
            None => Some("raw"),
        };
        let format = if format == Some("json") {
            let set = match reader.value("set") {
                Some(node) => decode_field_map(node, &reader.path_of("set"), cx),
                None => {
                    cx.error_hint(
                        reader.node(),
                        reader.path(),
                        "missing required field `set` for format json",
                        "map JSON members to key fields, for example `set: {api_key: secret}`",
                    );
                    BTreeMap::new()
                }
            };
            if let Some(node) = reader.value("field") {
                cx.error_hint(
                    node,
                    &reader.path_of("field"),
                    "`field` applies to format raw",
                    "use `set` with format json",
                );
            }
            FileFormat::Json { set }
        } else {
            let field = reader
                .optional::<String>("field", cx)
                .unwrap_or_else(|| "secret".into());
            let field_node = reader.value("field").unwrap_or(reader.node());
            check_key_field(field_node, &reader.path_of("field"), &field, cx);
            let trailing_newline = reader
                .optional::<bool>("trailing_newline", cx)
                .unwrap_or(false);
            if let Some(node) = reader.value("set") {
                cx.error_hint(
                    node,
                    &reader.path_of("set"),
                    "`set` applies to format json",
                    "use `field` for a raw file, or add `format: json`",
                );
            }
            FileFormat::Raw {
                field,
                trailing_newline,
            }
        };
        Self {
            path: cx.resolve_path(&path),
            format,
            create,
            mode,
        }
    }

    /// Returns the schema of a `file` target.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{boolean, choice, field_map, file_mode, text, with_rules};
        let mut field = text("With format raw: the key field that is the whole file.");
        field["default"] = "secret".into();
        let properties = vec![
            (
                "path",
                text("The file, relative to the playbook's directory."),
            ),
            (
                "format",
                choice(
                    "The whole file is one key field (raw), or members of a JSON document are (json).",
                    FORMATS,
                    Some("raw"),
                ),
            ),
            ("field", field),
            (
                "trailing_newline",
                boolean("With format raw: end the file with a newline.", false),
            ),
            (
                "set",
                field_map(
                    "With format json: member name or JSON pointer (/a/b) to key field; \
                     other members are kept.",
                    None,
                ),
            ),
            (
                "create",
                boolean(
                    "Create the file, or JSON members, when missing instead of failing at preflight.",
                    false,
                ),
            ),
            (
                "mode",
                file_mode(
                    "Mode of a file keywheel creates; an existing file keeps its mode and owner.",
                    PRIVATE_FILE_MODE,
                ),
            ),
        ];
        let schema = super::kind_schema(
            "file",
            "A file whose whole content is one key field, or a JSON document with some \
             members set to key fields.",
            properties,
            &["path"],
        );
        let json_only = serde_json::json!({
            "if": {"required": ["format"], "properties": {"format": {"const": "json"}}},
            "then": {
                "required": ["set"],
                "not": {"anyOf": [{"required": ["field"]}, {"required": ["trailing_newline"]}]},
            },
            "else": {"not": {"required": ["set"]}},
        });
        with_rules(schema, vec![json_only])
    }
}

pub struct FileTarget {
    name: String,
    spec: FileSpec,
}

impl FileTarget {
    pub fn new(name: &str, spec: FileSpec) -> Self {
        Self {
            name: name.to_string(),
            spec,
        }
    }

    /// The file content with the new key: a pure function of the previous
    /// content and the key, so push and restore compute the same bytes.
    fn render(
        &self,
        previous: &[u8],
        existed: bool,
        key: &Key,
    ) -> Result<SecretBytes, TargetError> {
        match &self.spec.format {
            FileFormat::Raw {
                field,
                trailing_newline,
            } => {
                let value = key.field(field).ok_or_else(|| {
                    TargetError::Misconfigured(format!("the new key has no field {field:?}"))
                })?;
                let mut bytes = value.expose().to_vec();
                if *trailing_newline {
                    bytes.push(b'\n');
                }
                Ok(SecretBytes::new(bytes))
            }
            FileFormat::Json { set } => {
                let mut document = if existed {
                    parse_json(previous, &self.spec.path)?
                } else {
                    serde_json::Value::Object(serde_json::Map::new())
                };
                // The file edited in place, while every member exists.
                let mut edited = existed
                    .then(|| std::str::from_utf8(previous).ok())
                    .flatten()
                    .map(|text| Zeroizing::new(text.to_string()));
                for (member, value) in mapped_values(key, set)? {
                    let text = value.expose_str().ok_or_else(|| {
                        TargetError::Misconfigured(format!(
                            "key field for {member:?} is not UTF-8 text and cannot go into JSON"
                        ))
                    })?;
                    set_member(&mut document, member.as_str(), text, &self.spec.path)?;
                    edited = edited.and_then(|current| {
                        replace_value(&current, &member_segments(member.as_str()), text)
                    });
                }
                // Kept only when it reads back as the same document, which
                // also covers a member name given twice in the file.
                if let Some(edited) = edited
                    && serde_json::from_str::<serde_json::Value>(&edited).ok()
                        == Some(document.clone())
                {
                    return Ok(SecretBytes::new(edited.as_bytes().to_vec()));
                }
                let mut bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
                if !existed || previous.ends_with(b"\n") {
                    bytes.push(b'\n');
                }
                Ok(SecretBytes::new(bytes))
            }
        }
    }
}

#[async_trait]
impl Target for FileTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        match &self.spec.format {
            FileFormat::Raw { field, .. } => format!("file {} ({field})", self.spec.path.display()),
            FileFormat::Json { set } => format!(
                "file {} (json: {})",
                self.spec.path.display(),
                set.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn previous_fields(&self, snapshot: &Snapshot) -> HeldFields {
        let mut fields = HeldFields::new();
        match &self.spec.format {
            FileFormat::Raw {
                field,
                trailing_newline,
            } => {
                let mut bytes = snapshot.previous.expose();
                if *trailing_newline {
                    bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                }
                if !bytes.is_empty() {
                    fields.push((field.clone(), SecretBytes::new(bytes.to_vec())));
                }
            }
            FileFormat::Json { set } => {
                let Ok(document) =
                    serde_json::from_slice::<serde_json::Value>(snapshot.previous.expose())
                else {
                    return fields;
                };
                for (member, field) in set {
                    let pointer = if member.starts_with('/') {
                        member.clone()
                    } else {
                        format!("/{}", member.replace('~', "~0").replace('/', "~1"))
                    };
                    if let Some(text) = document.pointer(&pointer).and_then(|v| v.as_str()) {
                        fields.push((field.clone(), SecretBytes::from_text(text)));
                    }
                }
            }
        }
        fields
    }

    async fn preflight(&self, _cx: &TargetCx) -> Result<Snapshot, TargetError> {
        let (state, content) = local::inspect(&self.spec.path, self.spec.create, self.spec.mode)?;
        if let FileFormat::Json { set } = &self.spec.format
            && state.exists
        {
            let document = parse_json(content.expose(), &self.spec.path)?;
            // A parent that is not an object (an array, a string) is an
            // error of its own, named before any missing member.
            let mut scratch = document.clone();
            for member in set.keys() {
                set_member(&mut scratch, member, "", &self.spec.path)?;
            }
            // A member the file lacks is most often a typo in `set`: adding
            // it would leave the application reading the old key.
            let missing: Vec<&str> = set
                .keys()
                .filter(|member| !has_member(&document, member))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() && !self.spec.create {
                return Err(TargetError::Misconfigured(format!(
                    "{} has no member {}; add it, or set `create: true` to let keywheel add it",
                    self.spec.path.display(),
                    missing.join(", ")
                )));
            }
        }
        Ok(Snapshot {
            summary: state.summary(),
            state: serde_json::to_value(&state).unwrap_or_default(),
            previous: content,
        })
    }

    async fn push(
        &self,
        _cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let state = file_state(snapshot)?;
        let desired = self.render(snapshot.previous.expose(), state.exists, key)?;
        let current = local::read_current(&state)?;
        match current {
            Some(bytes) if bytes.expose() == desired.expose() => {
                return Ok(Receipt {
                    state: serde_json::json!({"written": false}),
                    summary: "already up to date".into(),
                });
            }
            Some(bytes) if state.exists && bytes.expose() == snapshot.previous.expose() => {}
            None if !state.exists => {}
            _ => {
                return Err(TargetError::ConcurrentModification(format!(
                    "{} changed since preflight; run `keywheel rollback` and start again",
                    state.real_path.display()
                )));
            }
        }
        local::replace(&state, desired.expose())?;
        Ok(Receipt {
            state: serde_json::json!({"written": true}),
            summary: format!("wrote {}", state.real_path.display()),
        })
    }

    async fn restore(
        &self,
        _cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let state = file_state(snapshot)?;
        let current = local::read_current(&state)?;
        let done = |summary: &str| {
            Ok(Receipt {
                state: serde_json::json!({}),
                summary: summary.to_string(),
            })
        };
        match (&current, state.exists) {
            (None, false) => return done("file was absent and is absent"),
            (Some(bytes), true) if bytes.expose() == snapshot.previous.expose() => {
                return done("already holds the previous content");
            }
            _ => {}
        }
        if current.is_none() {
            // Deleted after the push: recreating it would undo a change
            // keywheel did not make, so the operator decides.
            return done(&local::deleted_after_push(&state.real_path)).map(Receipt::left_alone);
        }
        let desired = self.render(snapshot.previous.expose(), state.exists, key)?;
        let current_bytes = current
            .as_ref()
            .map(SecretBytes::expose)
            .unwrap_or_default();
        if current_bytes != desired.expose()
            && let FileFormat::Json { set } = &self.spec.format
            && state.exists
        {
            // Other members changed since the push: only the managed
            // members decide, as for the variables of a .env file.
            match restore_members(current_bytes, snapshot.previous.expose(), key, set)? {
                Members::Previous => {
                    return done("managed members already hold their previous values");
                }
                Members::Restored(text) => {
                    local::replace(&state, text.as_bytes())?;
                    return done("restored the managed members (other changes since were kept)");
                }
                Members::Other => {}
            }
        }
        if current_bytes != desired.expose() {
            // Someone else wrote the file after preflight: the new key is
            // not in it, and overwriting would lose their change.
            return done(
                "left alone: it holds neither the new nor the previous content, so someone else wrote it after preflight",
            )
            .map(Receipt::left_alone);
        }
        if state.exists {
            local::replace(&state, snapshot.previous.expose())?;
            done("restored the previous content")
        } else {
            local::remove(&state)?;
            done("removed the file keywheel created")
        }
    }
}

fn file_state(snapshot: &Snapshot) -> Result<FileState, TargetError> {
    serde_json::from_value(snapshot.state.clone()).map_err(|err| {
        TargetError::InvalidResponse(format!("journaled file state is invalid: {err}"))
    })
}

fn parse_json(bytes: &[u8], path: &std::path::Path) -> Result<serde_json::Value, TargetError> {
    // serde_json's error gives line and column only, never the content.
    serde_json::from_slice(bytes).map_err(|err| {
        TargetError::Misconfigured(format!(
            "{} is not valid JSON (line {}, column {}); fix it or use format raw{}",
            path.display(),
            err.line(),
            err.column(),
            local::bom_hint(bytes)
        ))
    })
}

/// The state of a JSON file's managed members at restore time.
enum Members {
    /// Every member contains its previous value.
    Previous,
    /// Every member held the new key; this text has the previous values
    /// back in their places and every other byte as it is now.
    Restored(Zeroizing<String>),
    /// Anything else: a member missing, or holding a third value.
    Other,
}

/// Compares the managed members of `current` with the new key and with
/// `previous`, and builds the restored text when all hold the new key.
fn restore_members(
    current: &[u8],
    previous: &[u8],
    key: &Key,
    set: &BTreeMap<String, String>,
) -> Result<Members, TargetError> {
    let (Ok(current), Ok(previous)) = (std::str::from_utf8(current), std::str::from_utf8(previous))
    else {
        return Ok(Members::Other);
    };
    let mut all_previous = true;
    let mut restored = Zeroizing::new(current.to_string());
    for (member, value) in mapped_values(key, set)? {
        let segments = member_segments(member.as_str());
        let (Some(now), Some(before)) = (
            json_span::value_span(current, &segments),
            json_span::value_span(previous, &segments),
        ) else {
            return Ok(Members::Other);
        };
        let now_value: Option<serde_json::Value> =
            serde_json::from_str(&current[now.0..now.1]).ok();
        let before_text = &previous[before.0..before.1];
        let before_value: Option<serde_json::Value> = serde_json::from_str(before_text).ok();
        let new_value = value
            .expose_str()
            .map(|text| serde_json::Value::String(text.to_string()));
        if now_value.is_some() && now_value == before_value {
            continue;
        }
        all_previous = false;
        if now_value.is_none() || now_value != new_value {
            return Ok(Members::Other);
        }
        let Some(next) = replace_raw(&restored, &segments, before_text) else {
            return Ok(Members::Other);
        };
        restored = next;
    }
    Ok(match all_previous {
        true => Members::Previous,
        false => Members::Restored(restored),
    })
}

/// Returns whether `document` has `member` (a name or a JSON pointer).
fn has_member(document: &serde_json::Value, member: &str) -> bool {
    let mut node = document;
    for segment in member_segments(member) {
        match node.get(segment.as_str()) {
            Some(child) => node = child,
            None => return false,
        }
    }
    true
}

/// Splits a member name or a JSON pointer (`/a/b`) into member names.
fn member_segments(member: &str) -> Vec<String> {
    match member.strip_prefix('/') {
        Some(pointer) => pointer
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
        None => vec![member.to_string()],
    }
}

/// Returns `text` with the value at `segments` replaced by the string
/// `value`, every other byte kept; `None` when the member is missing.
fn replace_value(text: &str, segments: &[String], value: &str) -> Option<Zeroizing<String>> {
    let encoded = Zeroizing::new(serde_json::to_string(value).ok()?);
    replace_raw(text, segments, &encoded)
}

/// Returns `text` with the value at `segments` replaced by the JSON text
/// `raw`, every other byte kept; `None` when the member is missing.
fn replace_raw(text: &str, segments: &[String], raw: &str) -> Option<Zeroizing<String>> {
    let (start, end) = json_span::value_span(text, segments)?;
    let mut edited = Zeroizing::new(String::with_capacity(text.len() + raw.len()));
    edited.push_str(&text[..start]);
    edited.push_str(raw);
    edited.push_str(&text[end..]);
    Some(edited)
}

/// Sets a string member, by name or by JSON pointer, creating missing
/// objects on the way. An existing non-object parent is an error.
fn set_member(
    document: &mut serde_json::Value,
    member: &str,
    text: &str,
    path: &std::path::Path,
) -> Result<(), TargetError> {
    let segments = member_segments(member);
    let mut node = document;
    for (index, segment) in segments.iter().enumerate() {
        let serde_json::Value::Object(object) = node else {
            return Err(TargetError::Misconfigured(format!(
                "{}: cannot set {member:?} because its parent is not a JSON object; members inside arrays are not supported",
                path.display()
            )));
        };
        if index + 1 == segments.len() {
            object.insert(segment.clone(), serde_json::Value::String(text.to_string()));
            return Ok(());
        }
        node = object
            .entry(segment.clone())
            .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_member_follows_pointers() {
        let mut doc = serde_json::json!({"a": {"b": "old"}, "keep": 1});
        set_member(&mut doc, "/a/b", "new", std::path::Path::new("x")).unwrap();
        set_member(&mut doc, "top", "v", std::path::Path::new("x")).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({"a": {"b": "new"}, "keep": 1, "top": "v"})
        );
    }

    #[test]
    fn set_member_rejects_scalar_parent() {
        let mut doc = serde_json::json!({"a": 1});
        assert!(set_member(&mut doc, "/a/b", "v", std::path::Path::new("x")).is_err());
    }
}
