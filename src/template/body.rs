//! JSON bodies written as YAML in a playbook, with placeholders.
//!
//! A body is a YAML mapping or list that becomes JSON. Scalars follow the
//! JSON reading of YAML 1.2: a plain `true`, `false`, `null` (or `~`) and a
//! plain number keep that type, anything quoted is a string, so `"60"`
//! sends the string "60". A string that is exactly one placeholder,
//! `scopes: "{{ old.scopes }}"`, is replaced by the JSON value itself (a
//! list here). A string with placeholders among other text stays a string,
//! with the values written in as text. The quotes are needed: unquoted,
//! YAML reads `{{ ... }}` as a mapping.

use std::io::Write as _;

use serde_json::Value;
use zeroize::Zeroizing;

use super::{Placeholder, RenderError, Scope, Template, Vars};
use crate::playbook::decode::{Cx, FieldPath};
use crate::playbook::yaml::{Node, Scalar, Style, Value as YamlValue};

/// A JSON body template.
#[derive(Clone, Debug)]
pub enum BodyTemplate {
    /// A value without placeholders.
    Literal(Value),
    /// Exactly one placeholder: the value is inserted as JSON.
    Whole(Template),
    /// A string with placeholders among other text.
    Text(Template),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    /// Returns every placeholder in the body.
    pub fn placeholders(&self) -> Vec<&Placeholder> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Placeholder>) {
        match self {
            Self::Literal(_) => {}
            Self::Whole(template) | Self::Text(template) => out.extend(template.placeholders()),
            Self::Array(items) => items.iter().for_each(|item| item.collect(out)),
            Self::Object(members) => members.iter().for_each(|(_, item)| item.collect(out)),
        }
    }

    /// Renders the body as JSON bytes. The bytes may hold a secret, so they
    /// are zeroed on drop; secrets are written straight into them.
    pub fn render(&self, vars: &Vars) -> Result<Zeroizing<Vec<u8>>, RenderError> {
        let mut out = Zeroizing::new(Vec::new());
        self.write(vars, &mut out)?;
        Ok(out)
    }

    fn write(&self, vars: &Vars, out: &mut Vec<u8>) -> Result<(), RenderError> {
        match self {
            Self::Literal(value) => write_json(out, value),
            Self::Text(template) => {
                let text = template.render_text(vars)?;
                write_json(out, text.as_str());
            }
            Self::Whole(template) => {
                let Some(placeholder) = template.whole_value() else {
                    return Err(template.error("internal: not a whole-value placeholder"));
                };
                match vars.lookup_json(placeholder) {
                    Ok(Ok(value)) => write_json(out, value),
                    Ok(Err(secret)) => {
                        let text = secret.expose_str().ok_or_else(|| {
                            template.error(format!("{{{{ {placeholder} }}}} is not UTF-8 text"))
                        })?;
                        write_json(out, text);
                    }
                    Err(message) => return Err(template.error(message)),
                }
            }
            Self::Array(items) => {
                out.push(b'[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    item.write(vars, out)?;
                }
                out.push(b']');
            }
            Self::Object(members) => {
                out.push(b'{');
                for (index, (name, item)) in members.iter().enumerate() {
                    if index > 0 {
                        out.push(b',');
                    }
                    write_json(out, name.as_str());
                    out.push(b':');
                    item.write(vars, out)?;
                }
                out.push(b'}');
            }
        }
        Ok(())
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing JSON values and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
    let _ = out.flush();
}

/// Decodes a body template, recording every problem.
pub fn decode(node: &Node, path: &FieldPath, cx: &mut Cx, scope: &Scope) -> Option<BodyTemplate> {
    match &node.value {
        YamlValue::Scalar(scalar) if scalar.style != Style::Plain => {
            if !scalar.text.contains("{{") {
                return Some(BodyTemplate::Literal(Value::String(scalar.text.clone())));
            }
            let template = super::decode(node, path, cx, scope)?;
            if template.whole_value().is_some() {
                Some(BodyTemplate::Whole(template))
            } else {
                Some(BodyTemplate::Text(template))
            }
        }
        YamlValue::Scalar(scalar) => {
            plain_scalar(node, path, cx, scalar).map(BodyTemplate::Literal)
        }
        YamlValue::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut valid = true;
            for (index, item) in items.iter().enumerate() {
                match decode(item, &path.index(index), cx, scope) {
                    Some(item) => out.push(item),
                    None => valid = false,
                }
            }
            valid.then_some(BodyTemplate::Array(out))
        }
        YamlValue::Mapping(entries) => {
            let mut out: Vec<(String, BodyTemplate)> = Vec::with_capacity(entries.len());
            let mut valid = true;
            for (key_node, value_node) in entries {
                let Some(name) = member_name(key_node, path, cx) else {
                    valid = false;
                    continue;
                };
                if out.iter().any(|(existing, _)| *existing == name) {
                    cx.error(key_node, &path.key(&name), "duplicate key");
                    valid = false;
                    continue;
                }
                match decode(value_node, &path.key(&name), cx, scope) {
                    Some(item) => out.push((name, item)),
                    None => valid = false,
                }
            }
            valid.then_some(BodyTemplate::Object(out))
        }
    }
}

/// Decodes a YAML value as plain JSON, without placeholders, for the
/// values a probe compares a response with.
pub fn decode_json(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Value> {
    match &node.value {
        YamlValue::Scalar(scalar) if scalar.style != Style::Plain => {
            Some(Value::String(scalar.text.clone()))
        }
        YamlValue::Scalar(scalar) => plain_scalar(node, path, cx, scalar),
        YamlValue::Sequence(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                out.push(decode_json(item, &path.index(index), cx)?);
            }
            Some(Value::Array(out))
        }
        YamlValue::Mapping(entries) => {
            let mut out = serde_json::Map::new();
            for (key_node, value_node) in entries {
                let name = member_name(key_node, path, cx)?;
                let value = decode_json(value_node, &path.key(&name), cx)?;
                out.insert(name, value);
            }
            Some(Value::Object(out))
        }
    }
}

fn member_name(key_node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<String> {
    match &key_node.value {
        YamlValue::Scalar(scalar) => Some(scalar.text.clone()),
        _ => {
            cx.error_hint(
                key_node,
                path,
                "JSON member names must be strings",
                "a placeholder must be quoted: write \"{{ old.scopes }}\", because YAML reads an unquoted {{ ... }} as a mapping",
            );
            None
        }
    }
}

/// Reads a plain scalar as JSON: null, a boolean, a number, or a string.
fn plain_scalar(node: &Node, path: &FieldPath, cx: &mut Cx, scalar: &Scalar) -> Option<Value> {
    if let Some(tag) = &scalar.tag {
        cx.error_hint(
            node,
            path,
            format!("unsupported YAML tag {tag}"),
            "remove the tag; quote the value to send a string",
        );
        return None;
    }
    let text = scalar.text.as_str();
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some(Value::Null),
        "true" | "True" | "TRUE" => return Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Value::Bool(false)),
        ".inf" | "-.inf" | "+.inf" | ".nan" | ".NaN" | ".NAN" => {
            cx.error_hint(
                node,
                path,
                format!("{text} has no JSON form"),
                "quote it to send a string",
            );
            return None;
        }
        _ => {}
    }
    if looks_like_number(text) {
        if let Ok(integer) = text.parse::<i64>() {
            return Some(Value::from(integer));
        }
        if let Ok(number) = text.parse::<f64>()
            && let Some(number) = serde_json::Number::from_f64(number)
        {
            return Some(Value::Number(number));
        }
        cx.error_hint(
            node,
            path,
            format!("number {text} is out of range"),
            "quote it to send a string",
        );
        return None;
    }
    Some(Value::String(text.to_string()))
}

/// Returns whether `text` is a number in YAML 1.2's JSON schema:
/// `-?(0|[1-9][0-9]*)(\.[0-9]*)?([eE][-+]?[0-9]+)?`.
fn looks_like_number(text: &str) -> bool {
    let bytes = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let digits = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && bytes[0] == b'0') {
        return false;
    }
    let mut rest = &bytes[digits..];
    if let Some(after) = rest.strip_prefix(b".") {
        let fraction = after.iter().take_while(|b| b.is_ascii_digit()).count();
        rest = &after[fraction..];
    }
    if let Some(after) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let after = after
            .strip_prefix(b"+")
            .or_else(|| after.strip_prefix(b"-"))
            .unwrap_or(after);
        let exponent = after.iter().take_while(|b| b.is_ascii_digit()).count();
        return exponent > 0 && exponent == after.len();
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::Root;
    use super::*;
    use crate::playbook::yaml;
    use crate::secret::SecretBytes;

    const ROOTS: &[Root] = &[Root::Old, Root::Run, Root::New];

    fn decode_text(text: &str) -> (Option<BodyTemplate>, Cx) {
        let root = yaml::parse(text).unwrap();
        let mut cx = Cx::new(PathBuf::from("."));
        let scope = Scope {
            roots: ROOTS,
            key_fields: None,
            place: "operations.create",
        };
        let body = decode(&root, &FieldPath::root().key("body"), &mut cx, &scope);
        (body, cx)
    }

    fn render(text: &str) -> Value {
        let (body, cx) = decode_text(text);
        assert!(cx.diagnostics.is_empty(), "{:?}", cx.diagnostics);
        let mut vars = Vars::new();
        vars.set(
            Root::Old,
            serde_json::json!({"scopes": ["a", "b"], "limit": null, "name": "app"}),
        )
        .set_secret(Root::New, "secret", SecretBytes::from_text("s\"1"));
        vars.set_run(&"20261204-120000-abcdef".parse().unwrap());
        let bytes = body.unwrap().render(&vars).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn whole_placeholder_inserts_json() {
        let value = render(
            "name: \"{{ old.name }}-next\"\nscopes: \"{{ old.scopes }}\"\nlimit: '{{ old.limit }}'\nkey: \"{{ new.secret }}\"\n",
        );
        assert_eq!(
            value,
            serde_json::json!({"name": "app-next", "scopes": ["a", "b"], "limit": null, "key": "s\"1"})
        );
    }

    #[test]
    fn plain_scalars_keep_json_types() {
        let value = render("a: 60\nb: \"60\"\nc: true\nd: ~\ne: no\nf: 1.5\ng: 012\nh: [1, x]\n");
        assert_eq!(
            value,
            serde_json::json!({"a": 60, "b": "60", "c": true, "d": null, "e": "no", "f": 1.5, "g": "012", "h": [1, "x"]})
        );
    }

    #[test]
    fn run_id_renders_in_nested_members() {
        let value = render("metadata:\n  keywheel_run: \"{{ run.id }}\"\n");
        assert_eq!(value["metadata"]["keywheel_run"], "20261204-120000-abcdef");
    }

    #[test]
    fn unquoted_placeholder_gets_a_hint() {
        let (body, cx) = decode_text("scopes: {{ old.scopes }}\n");
        assert!(body.is_none());
        let hint = cx.diagnostics[0].hint.as_deref().unwrap();
        assert!(hint.contains("must be quoted"), "{hint}");
        assert_eq!(cx.diagnostics[0].line, 1);
    }

    #[test]
    fn bad_placeholder_reports_its_line() {
        let (body, cx) = decode_text("a: 1\nb: \"{{ old.x\"\n");
        assert!(body.is_none());
        assert_eq!(cx.diagnostics[0].line, 2);
        assert_eq!(cx.diagnostics[0].path, "body.b");
    }

    #[test]
    fn numbers_follow_the_json_schema() {
        for yes in ["0", "-1", "10", "1.5", "1e3", "-2.5E-2", "3."] {
            assert!(looks_like_number(yes), "{yes}");
        }
        for no in ["", "-", "01", "1e", ".5", "0x1f", "1_000", "+1", "1.5.2"] {
            assert!(!looks_like_number(no), "{no}");
        }
    }
}
