//! Placeholders in playbook strings: `{{ old.scopes }}`, `{{ new.secret }}`.
//!
//! A template is text with placeholders. A placeholder is `{{ PATH }}`, with
//! optional blanks inside the braces, where PATH is a root and one or more
//! members separated by dots: `old.scopes`, `old.metadata.team`,
//! `old.ip_allowlist.0` (a list index), `run.id`. Member names use letters,
//! digits, `_` and `-`. There is no escape: `{{` always opens a
//! placeholder.
//!
//! The roots ([`Root`]):
//! - `old`: the key in use before the run. In issuer operations its
//!   members are the attributes the issuer returned for it (`old.id`,
//!   `old.scopes`). In verification probes they are the key fields the
//!   targets held (`old.secret`).
//! - `new`: the key this run made: `new.id` and its fields (`new.secret`).
//! - `run`: `run.id` and `run.idempotency_key`, which is derived from the
//!   run id and so the same for every attempt of one run.
//! - `key`: `key.id`, the key an operation acts on.
//!
//! Where a template sits decides which roots it may use; [`Scope`] states
//! that, and [`decode`] checks it when the playbook is validated, with the
//! line of the template.
//!
//! Rendering puts values in as text ([`Template::render_text`]): strings as
//! they are, numbers and booleans as their JSON text, while null, lists and
//! objects are errors. In a URL ([`Template::render_url`]) each value is
//! also percent-encoded, so it stays one path segment or query value. JSON
//! bodies ([`body`]) insert whole JSON values.

pub mod body;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::playbook::decode::{Cx, Decode, FieldPath};
use crate::playbook::yaml::Node;
use crate::secret::SecretBytes;

/// The first word of a placeholder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Root {
    Old,
    New,
    Run,
    Key,
}

impl Root {
    pub fn name(self) -> &'static str {
        match self {
            Self::Old => "old",
            Self::New => "new",
            Self::Run => "run",
            Self::Key => "key",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "old" => Self::Old,
            "new" => Self::New,
            "run" => Self::Run,
            "key" => Self::Key,
            _ => return None,
        })
    }
}

/// Members of `run`.
pub const RUN_MEMBERS: &[&str] = &["id", "idempotency_key"];

/// One `{{ ... }}` of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placeholder {
    pub root: Root,
    pub members: Vec<String>,
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.root.name())?;
        for member in &self.members {
            write!(f, ".{member}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A parsed template, with where it came from for messages.
#[derive(Clone, Debug)]
pub struct Template {
    parts: Vec<Part>,
    /// The text as written in the playbook.
    pub source: String,
    /// Field path of the template, such as `issuer.operations.create.url`.
    pub field: String,
    pub line: usize,
}

/// A placeholder that could not be filled. The message names the template
/// and the placeholder, never a value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field} (line {line}): {message}")]
pub struct RenderError {
    pub field: String,
    pub line: usize,
    pub message: String,
}

/// The roots a template may use, and the members of `old` and `new`.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub roots: &'a [Root],
    /// When set, `old` and `new` take exactly one member, one of these key
    /// field names (`id` included); otherwise `old` takes any member path.
    pub key_fields: Option<&'a [String]>,
    /// The template's place, for messages: "operations.create".
    pub place: &'a str,
}

impl Template {
    /// Parses `source`. Errors describe the first syntax problem.
    pub fn parse(source: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err(format!(
                    "`{{{{` at character {} has no closing `}}}}`",
                    source.len() - rest.len() + start + 1
                ));
            };
            parts.push(Part::Value(parse_placeholder(&after[..end])?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Self {
            parts,
            source: source.to_string(),
            field: String::new(),
            line: 0,
        })
    }

    /// Makes a template without placeholders.
    pub fn literal(text: &str) -> Self {
        Self {
            parts: vec![Part::Text(text.to_string())],
            source: text.to_string(),
            field: String::new(),
            line: 0,
        }
    }

    /// Returns every placeholder, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.parts.iter().filter_map(|part| match part {
            Part::Value(placeholder) => Some(placeholder),
            Part::Text(_) => None,
        })
    }

    /// Returns the placeholder when the template is exactly one placeholder.
    pub fn whole_value(&self) -> Option<&Placeholder> {
        match self.parts.as_slice() {
            [Part::Value(placeholder)] => Some(placeholder),
            _ => None,
        }
    }

    /// Returns whether the template has any placeholder.
    pub fn has_placeholders(&self) -> bool {
        self.placeholders().next().is_some()
    }

    /// Renders with values as text. The result may hold a secret.
    pub fn render_text(&self, vars: &Vars) -> Result<Zeroizing<String>, RenderError> {
        self.render(vars, |text, out| out.push_str(text))
    }

    /// Renders a URL: inserted values are percent-encoded, the template's
    /// own text is kept as written.
    pub fn render_url(&self, vars: &Vars) -> Result<Zeroizing<String>, RenderError> {
        self.render(vars, percent_encode_into)
    }

    fn render(
        &self,
        vars: &Vars,
        insert: impl Fn(&str, &mut String),
    ) -> Result<Zeroizing<String>, RenderError> {
        let mut out = Zeroizing::new(String::new());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value(placeholder) => {
                    let value = vars
                        .lookup(placeholder)
                        .map_err(|message| self.error(message))?;
                    let text = value.as_text().map_err(|message| {
                        self.error(format!("{{{{ {placeholder} }}}} {message}"))
                    })?;
                    insert(&text, &mut out);
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> RenderError {
        RenderError {
            field: self.field.clone(),
            line: self.line,
            message: message.into(),
        }
    }
}

fn parse_placeholder(inner: &str) -> Result<Placeholder, String> {
    let path = inner.trim();
    if path.is_empty() {
        return Err("empty placeholder `{{ }}`".into());
    }
    let mut words = path.split('.');
    let first = words.next().unwrap_or_default();
    let root = Root::parse(first).ok_or_else(|| {
        format!("unknown placeholder root `{first}` in `{{{{ {path} }}}}`; roots are old, new, run and key")
    })?;
    let members: Vec<String> = words.map(str::to_string).collect();
    if members.is_empty() {
        return Err(format!(
            "`{{{{ {path} }}}}` names no member; write for example `{{{{ {path}.id }}}}`"
        ));
    }
    if let Some(bad) = members.iter().find(|m| !is_member_name(m)) {
        return Err(format!(
            "invalid member {bad:?} in `{{{{ {path} }}}}`; use letters, digits, `_` and `-`"
        ));
    }
    Ok(Placeholder { root, members })
}

fn is_member_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Appends `text` percent-encoded: everything but the unreserved characters
/// of RFC 3986 (letters, digits, `-`, `.`, `_`, `~`) becomes `%XX`, which is
/// safe in a path segment and in a query value alike.
fn percent_encode_into(text: &str, out: &mut String) {
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
}

/// Decodes a string field as a template and checks its placeholders
/// against `scope`, recording every problem with the field's line.
pub fn decode(node: &Node, path: &FieldPath, cx: &mut Cx, scope: &Scope) -> Option<Template> {
    let text = String::decode(node, path, cx)?;
    let mut template = match Template::parse(&text) {
        Ok(template) => template,
        Err(message) => {
            cx.error(node, path, message);
            return None;
        }
    };
    template.field = path.to_string();
    template.line = node.line;
    let mut valid = true;
    for placeholder in template.placeholders() {
        if let Err((message, hint)) = check_scope(placeholder, scope) {
            cx.error_hint(node, path, message, hint);
            valid = false;
        }
    }
    valid.then_some(template)
}

/// Checks one placeholder against `scope`; returns a message and a hint.
pub fn check_scope(placeholder: &Placeholder, scope: &Scope) -> Result<(), (String, String)> {
    let shown = format!("{{{{ {placeholder} }}}}");
    if !scope.roots.contains(&placeholder.root) {
        let available: Vec<&str> = scope.roots.iter().map(|r| r.name()).collect();
        return Err((
            format!("{shown} is not available in {}", scope.place),
            format!("placeholders here may start with: {}", available.join(", ")),
        ));
    }
    let single = |names: &[&str]| -> Result<(), (String, String)> {
        match placeholder.members.as_slice() {
            [member] if names.contains(&member.as_str()) => Ok(()),
            _ => Err((
                format!("unknown placeholder {shown}"),
                format!(
                    "`{}` has the members: {}",
                    placeholder.root.name(),
                    names.join(", ")
                ),
            )),
        }
    };
    match placeholder.root {
        Root::Run => single(RUN_MEMBERS),
        Root::Key => single(&["id"]),
        Root::Old | Root::New => match scope.key_fields {
            Some(fields) => {
                let names: Vec<&str> = fields.iter().map(String::as_str).collect();
                single(&names)
            }
            None => Ok(()),
        },
    }
}

/// The values placeholders are filled from: public values as JSON by root,
/// and secret values by their placeholder text (`new.secret`).
#[derive(Clone, Debug, Default)]
pub struct Vars {
    values: BTreeMap<Root, Value>,
    secrets: BTreeMap<String, SecretBytes>,
}

/// A value found for a placeholder.
enum Found<'a> {
    Json(&'a Value),
    Secret(&'a SecretBytes),
}

impl Found<'_> {
    /// Returns the value as text, in memory that is zeroed on drop.
    fn as_text(&self) -> Result<Zeroizing<String>, String> {
        match self {
            Found::Json(Value::String(text)) => Ok(Zeroizing::new(text.clone())),
            Found::Json(value @ (Value::Number(_) | Value::Bool(_))) => {
                Ok(Zeroizing::new(value.to_string()))
            }
            Found::Json(Value::Null) => Err("is null, which cannot be written as text".into()),
            Found::Json(Value::Array(_)) => {
                Err("is a list; only a whole JSON body value can take a list".into())
            }
            Found::Json(Value::Object(_)) => {
                Err("is an object; only a whole JSON body value can take an object".into())
            }
            Found::Secret(secret) => secret
                .expose_str()
                .map(|text| Zeroizing::new(text.to_string()))
                .ok_or_else(|| "is not UTF-8 text".to_string()),
        }
    }
}

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the public value of a root, such as `{"id": "..."}` for `run`.
    pub fn set(&mut self, root: Root, value: Value) -> &mut Self {
        self.values.insert(root, value);
        self
    }

    /// Sets a secret member, such as `new.secret`.
    pub fn set_secret(&mut self, root: Root, member: &str, value: SecretBytes) -> &mut Self {
        self.secrets
            .insert(format!("{}.{member}", root.name()), value);
        self
    }

    /// Sets the values of `run`: its id and the idempotency key derived
    /// from it.
    pub fn set_run(&mut self, run_id: &crate::run_id::RunId) -> &mut Self {
        self.set(
            Root::Run,
            serde_json::json!({"id": run_id.as_str(), "idempotency_key": idempotency_key(run_id)}),
        )
    }

    fn lookup(&self, placeholder: &Placeholder) -> Result<Found<'_>, String> {
        if let Some(secret) = self.secrets.get(&placeholder.to_string()) {
            return Ok(Found::Secret(secret));
        }
        let shown = format!("{{{{ {placeholder} }}}}");
        let mut value = self
            .values
            .get(&placeholder.root)
            .ok_or_else(|| format!("{shown}: `{}` has no value here", placeholder.root.name()))?;
        let mut walked = placeholder.root.name().to_string();
        for member in &placeholder.members {
            let next = match value {
                Value::Object(map) => map.get(member),
                Value::Array(items) => member.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            value = next.ok_or_else(|| format!("{shown}: {walked} has no member `{member}`"))?;
            walked.push('.');
            walked.push_str(member);
        }
        Ok(Found::Json(value))
    }

    /// Looks up a whole JSON value; a secret becomes a JSON string.
    pub(crate) fn lookup_json(
        &self,
        placeholder: &Placeholder,
    ) -> Result<Result<&Value, &SecretBytes>, String> {
        match self.lookup(placeholder)? {
            Found::Json(value) => Ok(Ok(value)),
            Found::Secret(secret) => Ok(Err(secret)),
        }
    }
}

/// The idempotency key of a run's create calls: the same for every attempt
/// of the run, so a repeated create after a crash returns the key the first
/// one made.
pub fn idempotency_key(run_id: &crate::run_id::RunId) -> String {
    format!("keywheel-{run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        let mut vars = Vars::new();
        vars.set(
            Root::Old,
            serde_json::json!({"id": "key_1", "scopes": ["a"], "limit": 60, "name": "a b/c"}),
        )
        .set_secret(Root::New, "secret", SecretBytes::from_text("sk_new"));
        vars
    }

    #[test]
    fn text_inserts_strings_and_numbers() {
        let template =
            Template::parse("k={{old.id}} n={{ old.limit }} s={{ new.secret }}").unwrap();
        assert_eq!(
            template.render_text(&vars()).unwrap().as_str(),
            "k=key_1 n=60 s=sk_new"
        );
    }

    #[test]
    fn url_values_are_percent_encoded() {
        let template = Template::parse("/v1/keys/{{ old.name }}?x=1").unwrap();
        assert_eq!(
            template.render_url(&vars()).unwrap().as_str(),
            "/v1/keys/a%20b%2Fc?x=1"
        );
    }

    #[test]
    fn lists_cannot_be_text() {
        let mut template = Template::parse("{{ old.scopes }}!").unwrap();
        template.field = "f".into();
        template.line = 7;
        let err = template.render_text(&vars()).unwrap_err();
        assert_eq!(err.line, 7);
        assert!(err.message.contains("is a list"), "{err}");
    }

    #[test]
    fn missing_member_names_the_path() {
        let template = Template::parse("{{ old.quota }}").unwrap();
        let err = template.render_text(&vars()).unwrap_err();
        assert!(err.message.contains("old has no member `quota`"), "{err}");
    }

    #[test]
    fn list_index_is_a_member() {
        let template = Template::parse("{{ old.scopes.0 }}").unwrap();
        assert_eq!(template.render_text(&vars()).unwrap().as_str(), "a");
    }

    #[test]
    fn syntax_errors_are_described() {
        assert!(
            Template::parse("{{ old.id")
                .unwrap_err()
                .contains("no closing")
        );
        assert!(Template::parse("{{ }}").unwrap_err().contains("empty"));
        assert!(
            Template::parse("{{ env.X }}")
                .unwrap_err()
                .contains("unknown placeholder root")
        );
        assert!(
            Template::parse("{{ old }}")
                .unwrap_err()
                .contains("names no member")
        );
        assert!(
            Template::parse("{{ old.a b }}")
                .unwrap_err()
                .contains("invalid member")
        );
    }

    #[test]
    fn scope_limits_roots_and_members() {
        let fields = vec!["id".to_string(), "secret".to_string()];
        let scope = Scope {
            roots: &[Root::New, Root::Run],
            key_fields: Some(&fields),
            place: "verify",
        };
        let check = |text: &str| {
            let template = Template::parse(text).unwrap();
            let placeholder = template.placeholders().next().unwrap().clone();
            check_scope(&placeholder, &scope)
        };
        assert!(check("{{ new.secret }}").is_ok());
        assert!(check("{{ run.idempotency_key }}").is_ok());
        assert!(
            check("{{ old.secret }}")
                .unwrap_err()
                .0
                .contains("not available")
        );
        assert!(
            check("{{ new.token }}")
                .unwrap_err()
                .1
                .contains("id, secret")
        );
        assert!(check("{{ run.name }}").is_err());
    }
}
