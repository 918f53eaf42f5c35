//! The `dotenv` target: variables in a `.env` file.
//!
//! ```yaml
//! - name: app-env
//!   type: dotenv
//!   path: deploy/app.env
//!   set:
//!     API_KEY: secret
//! ```
//!
//! Only the value of each managed variable changes; every other byte of the
//! file (comments, order, spacing, quoting of other lines, line endings) is
//! kept. A value keeps its quoting style where the new value allows it.
//! Otherwise it is written bare when it only has characters that every dotenv
//! dialect reads literally, and in single quotes when not, because single
//! quotes are literal in shells, Docker Compose, python-dotenv and the Rust
//! and Node.js dotenv libraries.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::local::{self, FileState};
use super::{Receipt, Snapshot, Target, TargetCx, TargetError, mapped_values};
use crate::fsutil::PRIVATE_FILE_MODE;
use crate::key::Key;
use crate::playbook::decode::{Cx, FileMode, MapReader};
use crate::playbook::decode_field_map;
use crate::secret::SecretBytes;

#[derive(Clone, Debug)]
pub struct DotenvSpec {
    pub path: PathBuf,
    /// Variable name to key field.
    pub set: BTreeMap<String, String>,
    /// Create the file, or append variables that are missing from it.
    pub create: bool,
    pub mode: u32,
}

impl DotenvSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let path: String = reader.required("path", cx);
        let set = match reader.value("set") {
            Some(node) => {
                let set_path = reader.path_of("set");
                let set = decode_field_map(node, &set_path, cx);
                for name in set.keys() {
                    if !is_variable_name(name) {
                        cx.error_hint(
                            node,
                            &set_path.key(name),
                            format!("invalid variable name {name:?}"),
                            "use letters, digits and '_', not starting with a digit",
                        );
                    }
                }
                set
            }
            None => {
                cx.error_hint(
                    reader.node(),
                    reader.path(),
                    "missing required field `set`",
                    "map variable names to key fields, for example `set: {API_KEY: secret}`",
                );
                BTreeMap::new()
            }
        };
        let create = reader.optional::<bool>("create", cx).unwrap_or(false);
        let mode = reader
            .optional::<FileMode>("mode", cx)
            .map_or(PRIVATE_FILE_MODE, |mode| mode.0);
        Self {
            path: cx.resolve_path(&path),
            set,
            create,
            mode,
        }
    }

    /// Returns the schema of a `dotenv` target.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{ENV_NAME_PATTERN, boolean, field_map, file_mode, text};
        let properties = vec![
            (
                "path",
                text("The .env file, relative to the playbook's directory."),
            ),
            (
                "set",
                field_map("Variable name to key field.", Some(ENV_NAME_PATTERN)),
            ),
            (
                "create",
                boolean(
                    "Create the file, or add missing variables, instead of failing at preflight.",
                    false,
                ),
            ),
            (
                "mode",
                file_mode("Mode of a file keywheel creates.", PRIVATE_FILE_MODE),
            ),
        ];
        super::kind_schema(
            "dotenv",
            "Variables in a .env file. Only their values change; every other byte of the \
             file is kept.",
            properties,
            &["path", "set"],
        )
    }
}

fn is_variable_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quoting {
    Bare,
    Single,
    Double,
}

/// One `NAME=value` line of a dotenv file.
#[derive(Clone, Debug)]
struct Assignment {
    name: String,
    /// 1-based line number.
    line: usize,
    /// Bytes of the whole line, including its line break.
    line_range: Range<usize>,
    /// Bytes of the value as written, quotes included.
    value_range: Range<usize>,
    quoting: Quoting,
    /// The value as a dotenv reader sees it.
    value: Zeroizing<String>,
}

/// Values of managed variables by name, `None` where a variable is absent.
type Values = BTreeMap<String, Option<Zeroizing<String>>>;

/// Finds the assignments in `text`. Lines that are not assignments are kept
/// as they are and ignored.
fn parse(text: &str) -> Vec<Assignment> {
    let bytes = text.as_bytes();
    let mut assignments = Vec::new();
    let mut pos = 0;
    let mut line = 1;
    while pos < bytes.len() {
        let line_end = find_line_end(bytes, pos);
        let (parsed, consumed_to) = parse_line(text, pos, line_end, line);
        let next = next_line_start(bytes, consumed_to.max(line_end));
        line += text[pos..next].matches('\n').count().max(1);
        if let Some(mut assignment) = parsed {
            assignment.line_range = pos..next;
            assignments.push(assignment);
        }
        pos = next;
    }
    assignments
}

fn find_line_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| from + i)
}

fn next_line_start(bytes: &[u8], from: usize) -> usize {
    let end = find_line_end(bytes, from);
    (end + 1).min(bytes.len())
}

/// Parses one logical line starting at `start`. Returns the assignment, if
/// any, and the offset where its value ended (past `line_end` for a quoted
/// value that spans lines).
fn parse_line(
    text: &str,
    start: usize,
    line_end: usize,
    line: usize,
) -> (Option<Assignment>, usize) {
    let bytes = text.as_bytes();
    let skip_blanks = |mut i: usize| {
        while i < line_end && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let mut i = skip_blanks(start);
    if text[i..line_end].starts_with("export ") || text[i..line_end].starts_with("export\t") {
        i = skip_blanks(i + "export".len());
    }
    let name_start = i;
    while i < line_end && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.')) {
        i += 1;
    }
    let name = &text[name_start..i];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return (None, line_end);
    }
    i = skip_blanks(i);
    if i >= line_end || bytes[i] != b'=' {
        return (None, line_end);
    }
    let value_start = skip_blanks(i + 1);
    let (value_range, quoting, value) = match bytes.get(value_start) {
        Some(b'\'') if value_start < line_end => match text[value_start + 1..].find('\'') {
            Some(close) => {
                let end = value_start + 1 + close + 1;
                let inner = text[value_start + 1..end - 1].to_string();
                (value_start..end, Quoting::Single, inner)
            }
            None => bare_value(text, value_start, line_end),
        },
        Some(b'"') if value_start < line_end => match find_double_quote_end(bytes, value_start + 1)
        {
            Some(end) => {
                let inner = unescape_double(&text[value_start + 1..end - 1]);
                (value_start..end, Quoting::Double, inner)
            }
            None => bare_value(text, value_start, line_end),
        },
        _ => bare_value(text, value_start, line_end),
    };
    let consumed = value_range.end;
    let assignment = Assignment {
        name: name.to_string(),
        line,
        line_range: start..line_end,
        value_range,
        quoting,
        value: Zeroizing::new(value),
    };
    (Some(assignment), consumed)
}

fn bare_value(text: &str, start: usize, line_end: usize) -> (Range<usize>, Quoting, String) {
    let bytes = text.as_bytes();
    let mut end = line_end;
    // A comment starts at `#` preceded by a blank.
    for i in start..line_end {
        if bytes[i] == b'#' && i > start && matches!(bytes[i - 1], b' ' | b'\t') {
            end = i;
            break;
        }
    }
    while end > start && matches!(bytes[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    (start..end, Quoting::Bare, text[start..end].to_string())
}

fn find_double_quote_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn unescape_double(inner: &str) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other @ ('\\' | '"' | '$' | '\'' | '`')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Characters every dotenv dialect reads literally in an unquoted value.
fn is_bare_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c))
}

/// Writes `value` as a dotenv token, preferring `preferred` quoting.
fn encode(
    value: &str,
    preferred: Quoting,
    variable: &str,
) -> Result<Zeroizing<String>, TargetError> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(TargetError::Misconfigured(format!(
            "the value for {variable} contains a line break or NUL, which .env files cannot hold portably"
        )));
    }
    let double_safe = !value.contains(['$', '`', '\\', '"']);
    let single_safe = !value.contains('\'');
    let token = match preferred {
        Quoting::Bare if is_bare_safe(value) => value.to_string(),
        Quoting::Double if double_safe => format!("\"{value}\""),
        _ if single_safe => format!("'{value}'"),
        _ if !value.contains(['$', '`']) => {
            format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
        }
        _ => {
            return Err(TargetError::Misconfigured(format!(
                "the value for {variable} contains both ' and $ or `, which no .env quoting keeps literal in every dialect; exclude them from the generator's alphabet"
            )));
        }
    };
    Ok(Zeroizing::new(token))
}

pub struct DotenvTarget {
    name: String,
    spec: DotenvSpec,
}

impl DotenvTarget {
    pub fn new(name: &str, spec: DotenvSpec) -> Self {
        Self {
            name: name.to_string(),
            spec,
        }
    }

    fn text<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, TargetError> {
        std::str::from_utf8(bytes).map_err(|_| {
            TargetError::Misconfigured(format!("{} is not valid UTF-8", self.spec.path.display()))
        })
    }

    /// Finds the single assignment of each managed variable.
    fn locate<'a>(
        &self,
        assignments: &'a [Assignment],
    ) -> Result<BTreeMap<&str, Option<&'a Assignment>>, TargetError> {
        let mut found = BTreeMap::new();
        for variable in self.spec.set.keys() {
            let matches: Vec<&Assignment> =
                assignments.iter().filter(|a| &a.name == variable).collect();
            if matches.len() > 1 {
                let lines: Vec<String> = matches.iter().map(|a| a.line.to_string()).collect();
                return Err(TargetError::Misconfigured(format!(
                    "{variable} is set more than once in {} (lines {}); keep one",
                    self.spec.path.display(),
                    lines.join(", ")
                )));
            }
            found.insert(variable.as_str(), matches.first().copied());
        }
        Ok(found)
    }

    /// `text` with every managed variable set to the new key's values.
    fn render(&self, text: &str, key: &Key) -> Result<SecretBytes, TargetError> {
        let assignments = parse(text);
        let located = self.locate(&assignments)?;
        let values = mapped_values(key, &self.spec.set)?;
        let mut edits: Vec<(Range<usize>, Zeroizing<String>)> = Vec::new();
        let mut appended = Zeroizing::new(String::new());
        for (variable, value) in &values {
            let value = value.expose_str().ok_or_else(|| {
                TargetError::Misconfigured(format!("the value for {variable} is not UTF-8 text"))
            })?;
            match located.get(variable.as_str()).copied().flatten() {
                Some(assignment) => {
                    let token = encode(value, assignment.quoting, variable)?;
                    edits.push((assignment.value_range.clone(), token));
                }
                None => {
                    let token = encode(value, Quoting::Bare, variable)?;
                    appended.push_str(variable);
                    appended.push('=');
                    appended.push_str(&token);
                    appended.push('\n');
                }
            }
        }
        let mut out = apply_edits(text, edits);
        if !appended.is_empty() {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&appended);
        }
        Ok(SecretBytes::new(std::mem::take(&mut *out).into_bytes()))
    }

    /// Values of the managed variables in `text` (`None` where missing).
    fn current_values(&self, text: &str) -> Result<Values, TargetError> {
        let assignments = parse(text);
        let located = self.locate(&assignments)?;
        Ok(located
            .into_iter()
            .map(|(name, found)| (name.to_string(), found.map(|a| a.value.clone())))
            .collect())
    }

    fn new_values(&self, key: &Key) -> Result<Values, TargetError> {
        mapped_values(key, &self.spec.set)?
            .into_iter()
            .map(|(name, value)| {
                let text = value.expose_str().map(|t| Zeroizing::new(t.to_string()));
                Ok((name, text))
            })
            .collect()
    }

    /// `current` with the managed variables put back as `previous` wrote
    /// them: their original tokens, or no line where they were absent.
    fn restore_tokens(
        &self,
        current: &str,
        previous: &str,
    ) -> Result<Zeroizing<String>, TargetError> {
        let current_assignments = parse(current);
        let previous_assignments = parse(previous);
        let now = self.locate(&current_assignments)?;
        let before = self.locate(&previous_assignments)?;
        let mut edits = Vec::new();
        for (variable, assignment) in now {
            let Some(assignment) = assignment else {
                continue;
            };
            match before.get(variable).copied().flatten() {
                Some(old) => edits.push((
                    assignment.value_range.clone(),
                    Zeroizing::new(previous[old.value_range.clone()].to_string()),
                )),
                None => edits.push((assignment.line_range.clone(), Zeroizing::default())),
            }
        }
        Ok(apply_edits(current, edits))
    }
}

fn apply_edits(text: &str, mut edits: Vec<(Range<usize>, Zeroizing<String>)>) -> Zeroizing<String> {
    edits.sort_by_key(|(range, _)| std::cmp::Reverse(range.start));
    let mut out = Zeroizing::new(text.to_string());
    for (range, replacement) in edits {
        out.replace_range(range, &replacement);
    }
    out
}

fn done(summary: &str) -> Result<Receipt, TargetError> {
    Ok(Receipt {
        state: serde_json::json!({}),
        summary: summary.to_string(),
    })
}

#[async_trait]
impl Target for DotenvTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn location(&self) -> String {
        format!(
            "dotenv {} ({})",
            self.spec.path.display(),
            self.spec.set.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }

    fn previous_fields(&self, snapshot: &Snapshot) -> crate::targets::HeldFields {
        let Ok(text) = std::str::from_utf8(snapshot.previous.expose()) else {
            return Default::default();
        };
        let Ok(values) = self.current_values(text) else {
            return Default::default();
        };
        self.spec
            .set
            .iter()
            .filter_map(|(variable, field)| {
                let value = values.get(variable)?.as_deref()?;
                Some((field.clone(), SecretBytes::from_text(value)))
            })
            .collect()
    }

    async fn preflight(&self, _cx: &TargetCx) -> Result<Snapshot, TargetError> {
        let (state, content) = local::inspect(&self.spec.path, self.spec.create, self.spec.mode)?;
        let text = self.text(content.expose())?;
        let assignments = parse(text);
        let located = self.locate(&assignments)?;
        let missing: Vec<&str> = located
            .iter()
            .filter(|(_, a)| a.is_none())
            .map(|(n, _)| *n)
            .collect();
        if state.exists && !missing.is_empty() && !self.spec.create {
            return Err(TargetError::Misconfigured(format!(
                "{} has no variable {}; add it, or set `create: true` to let keywheel append it{}",
                self.spec.path.display(),
                missing.join(", "),
                local::bom_hint(content.expose())
            )));
        }
        let mut summary = state.summary();
        if state.exists && !missing.is_empty() {
            summary.push_str(&format!(", will append {}", missing.join(", ")));
        }
        Ok(Snapshot {
            summary,
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
        let previous = self.text(snapshot.previous.expose())?;
        let desired = self.render(previous, key)?;
        let current = local::read_current(&state)?;
        let Some(current) = current else {
            if state.exists {
                return Err(TargetError::ConcurrentModification(format!(
                    "{} was removed since preflight",
                    state.real_path.display()
                )));
            }
            local::replace(&state, desired.expose())?;
            return done("created the file");
        };
        let current = current.expose();
        if current == desired.expose() {
            return done("already up to date");
        }
        if state.exists && current == previous.as_bytes() {
            local::replace(&state, desired.expose())?;
            return done("updated");
        }
        // Someone edited the file since preflight. When the managed variables
        // still hold their previous values, apply the change on top.
        let current_text = self.text(current)?;
        let now = self.current_values(current_text)?;
        if now == self.current_values(previous)? {
            let desired = self.render(current_text, key)?;
            local::replace(&state, desired.expose())?;
            return done("updated (other lines changed since preflight were kept)");
        }
        if now == self.new_values(key)? {
            return done("already up to date");
        }
        Err(TargetError::ConcurrentModification(format!(
            "a managed variable in {} changed since preflight; run `keywheel rollback` and start again",
            state.real_path.display()
        )))
    }

    async fn restore(
        &self,
        _cx: &TargetCx,
        snapshot: &Snapshot,
        key: &Key,
    ) -> Result<Receipt, TargetError> {
        let state = file_state(snapshot)?;
        let previous = self.text(snapshot.previous.expose())?;
        let current = local::read_current(&state)?;
        let Some(current) = current else {
            return if state.exists {
                done(&super::local::deleted_after_push(&state.real_path)).map(Receipt::left_alone)
            } else {
                done("file was absent and is absent")
            };
        };
        let current = current.expose();
        if state.exists && current == previous.as_bytes() {
            return done("already holds the previous content");
        }
        let desired = self.render(previous, key)?;
        if current == desired.expose() {
            if state.exists {
                local::replace(&state, previous.as_bytes())?;
                return done("restored the previous content");
            }
            local::remove(&state)?;
            return done("removed the file keywheel created");
        }
        let current_text = self.text(current)?;
        let now = self.current_values(current_text)?;
        if now == self.current_values(previous)? {
            return done("managed variables already hold their previous values");
        }
        if now == self.new_values(key)? {
            let restored = self.restore_tokens(current_text, previous)?;
            local::replace(&state, restored.as_bytes())?;
            return done("restored the managed variables (other lines changed since were kept)");
        }
        // Someone else set the variables after preflight: the new key is not
        // in the file, and overwriting would lose their change.
        done(
            "left alone: the managed variables hold neither the new nor the previous values, so someone else wrote them after preflight",
        )
        .map(Receipt::left_alone)
    }
}

fn file_state(snapshot: &Snapshot) -> Result<FileState, TargetError> {
    serde_json::from_value(snapshot.state.clone()).map_err(|err| {
        TargetError::InvalidResponse(format!("journaled file state is invalid: {err}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(vars: &[(&str, &str)]) -> DotenvTarget {
        DotenvTarget::new(
            "t",
            DotenvSpec {
                path: PathBuf::from("app.env"),
                set: vars
                    .iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
                create: true,
                mode: 0o600,
            },
        )
    }

    fn key(secret: &str) -> Key {
        Key::new("k").with_field("secret", SecretBytes::from_text(secret))
    }

    fn render(text: &str, secret: &str) -> String {
        let bytes = target(&[("API_KEY", "secret")])
            .render(text, &key(secret))
            .unwrap();
        String::from_utf8(bytes.expose().to_vec()).unwrap()
    }

    #[test]
    fn parse_reads_common_forms() {
        let text = "# c\nA=1\nexport B = 'two words' # note\nC=\"x\\\"y\"\nD=plain # c\nE=\n";
        let found = parse(text);
        let values: Vec<(&str, &str)> = found
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "x\"y"),
                ("D", "plain"),
                ("E", "")
            ]
        );
        assert_eq!(found[1].line, 3);
    }

    #[test]
    fn render_changes_only_the_value() {
        let text = "# header\nOTHER=keep # c\nAPI_KEY=old   # trailing comment\r\nLAST='x'\n";
        assert_eq!(
            render(text, "sk_new"),
            "# header\nOTHER=keep # c\nAPI_KEY=sk_new   # trailing comment\r\nLAST='x'\n"
        );
    }

    #[test]
    fn render_keeps_quote_style() {
        assert_eq!(render("API_KEY=\"old\"\n", "new"), "API_KEY=\"new\"\n");
        assert_eq!(render("API_KEY='old'\n", "new"), "API_KEY='new'\n");
        assert_eq!(
            render("export API_KEY=old\n", "new"),
            "export API_KEY=new\n"
        );
    }

    #[test]
    fn render_quotes_special_values() {
        assert_eq!(render("API_KEY=old\n", "a#b c"), "API_KEY='a#b c'\n");
        assert_eq!(render("API_KEY=\"old\"\n", "a$b"), "API_KEY='a$b'\n");
        assert_eq!(render("API_KEY=old\n", "it's"), "API_KEY=\"it's\"\n");
        let both = target(&[("API_KEY", "secret")]).render("API_KEY=x\n", &key("'$"));
        assert!(both.is_err());
    }

    #[test]
    fn render_appends_missing_variable() {
        assert_eq!(render("A=1", "new"), "A=1\nAPI_KEY=new\n");
        assert_eq!(render("", "new"), "API_KEY=new\n");
    }

    #[test]
    fn duplicate_variable_is_an_error() {
        let result = target(&[("API_KEY", "secret")]).render("API_KEY=a\nAPI_KEY=b\n", &key("n"));
        let message = result.unwrap_err().to_string();
        assert!(message.contains("lines 1, 2"), "{message}");
    }

    #[test]
    fn encoded_values_parse_back() {
        for value in [
            "plain",
            "a b",
            "a#b",
            "q\"uote",
            "it's",
            "$HOME",
            "back\\slash",
            "tab\tx",
        ] {
            let text = render("API_KEY=old\n", value);
            let parsed = parse(&text);
            assert_eq!(parsed[0].value.as_str(), value, "{text}");
        }
    }

    #[test]
    fn restore_tokens_puts_back_original_text() {
        let t = target(&[("API_KEY", "secret")]);
        let previous = "A=1\nAPI_KEY=\"old\" # c\n";
        let current = "A=2\nAPI_KEY=\"new\" # c\n";
        assert_eq!(
            t.restore_tokens(current, previous).unwrap().as_str(),
            "A=2\nAPI_KEY=\"old\" # c\n"
        );
        let appended = "A=1\nAPI_KEY=new\n";
        assert_eq!(
            t.restore_tokens(appended, "A=1\n").unwrap().as_str(),
            "A=1\n"
        );
    }
}
