//! Typed decoding of a YAML tree that reports every error, not just the first.
//!
//! Each decoder records problems in a [`Cx`] and carries on with a default
//! value, so one pass over a playbook finds all of its errors, each with line,
//! column and field path. The result is only used when no error was recorded.
//!
//! Scalars are never guessed into another type: a boolean field takes only a
//! plain `true` or `false`, a number field only plain digits, and a string
//! field takes the text exactly as written, so `no` stays "no" and
//! `012345678901` keeps its leading zero.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::yaml::{Node, Scalar, Style, Value};

/// One problem found in a playbook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub line: usize,
    pub column: usize,
    /// Field path such as `targets[1].mode`; empty for the document root.
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
    pub severity: Severity,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Diagnostic {
    /// Formats the diagnostic without its `warning: ` label, for output
    /// that labels warnings itself.
    pub fn unlabeled(&self) -> String {
        let text = self.to_string();
        match text.strip_prefix("warning: ") {
            Some(rest) => rest.to_string(),
            None => text,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// A dotted field path, built while descending the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn root() -> Self {
        Self(String::new())
    }

    pub fn key(&self, key: &str) -> Self {
        if self.0.is_empty() {
            Self(key.to_string())
        } else {
            Self(format!("{}.{key}", self.0))
        }
    }

    pub fn index(&self, index: usize) -> Self {
        Self(format!("{}[{index}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Decoding context: collected diagnostics and facts that decoders share.
#[derive(Debug)]
pub struct Cx {
    pub diagnostics: Vec<Diagnostic>,
    /// Directory that relative paths in the playbook are resolved against.
    pub base_dir: PathBuf,
    /// Field names the issuer provides, for checking target mappings.
    pub key_fields: Vec<String>,
    /// When set, every [`MapReader`] adds the fields it was asked for here
    /// as it finishes. The schema tests compare them with the schema.
    pub reads: Option<Vec<FieldsRead>>,
}

/// The fields one [`MapReader`] was asked for, known or not present.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldsRead {
    /// Field path of the mapping, such as `targets[0]`.
    pub path: String,
    pub fields: Vec<&'static str>,
}

impl Cx {
    pub fn new(base_dir: PathBuf) -> Self {
        Self {
            diagnostics: Vec::new(),
            base_dir,
            key_fields: Vec::new(),
            reads: None,
        }
    }

    /// Records an error at `node`.
    pub fn error(&mut self, node: &Node, path: &FieldPath, message: impl Into<String>) {
        self.push(node, path, message.into(), None, Severity::Error);
    }

    /// Records an error at `node` with a hint on how to fix it.
    pub fn error_hint(
        &mut self,
        node: &Node,
        path: &FieldPath,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        self.push(
            node,
            path,
            message.into(),
            Some(hint.into()),
            Severity::Error,
        );
    }

    /// Records a warning: reported, but the playbook stays valid.
    pub fn warn(&mut self, node: &Node, path: &FieldPath, message: impl Into<String>) {
        self.push(node, path, message.into(), None, Severity::Warning);
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// Resolves a playbook path against the playbook's directory.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }

    fn push(
        &mut self,
        node: &Node,
        path: &FieldPath,
        message: String,
        hint: Option<String>,
        severity: Severity,
    ) {
        self.diagnostics.push(Diagnostic {
            line: node.line,
            column: node.column,
            path: path.0.clone(),
            message,
            hint,
            severity,
        });
    }
}

/// A type that can be read from a YAML node.
pub trait Decode: Sized {
    /// Decodes `node`, recording any problem in `cx`. Returns `None` after
    /// recording an error.
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self>;
}

/// Returns the scalar of `node`, or records an error naming `expected`.
pub fn expect_scalar<'n>(
    node: &'n Node,
    path: &FieldPath,
    cx: &mut Cx,
    expected: &str,
) -> Option<&'n Scalar> {
    match &node.value {
        Value::Scalar(scalar) if !node.is_null() || expected == "a string" => {
            if let Some(tag) = &scalar.tag {
                cx.error_hint(
                    node,
                    path,
                    format!("unsupported YAML tag {tag}"),
                    "remove the tag; playbooks use plain YAML values",
                );
                return None;
            }
            Some(scalar)
        }
        _ => {
            cx.error(
                node,
                path,
                format!("expected {expected}, found {}", node.kind_name()),
            );
            None
        }
    }
}

impl Decode for String {
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        if node.is_null() {
            cx.error_hint(
                node,
                path,
                "expected a string, found null",
                "give a value or remove the field",
            );
            return None;
        }
        expect_scalar(node, path, cx, "a string").map(|s| s.text.clone())
    }
}

impl Decode for bool {
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let scalar = expect_scalar(node, path, cx, "true or false")?;
        let lower = scalar.text.to_ascii_lowercase();
        if scalar.style == Style::Plain {
            match scalar.text.as_str() {
                "true" | "True" | "TRUE" => return Some(true),
                "false" | "False" | "FALSE" => return Some(false),
                _ => {}
            }
        }
        let hint = if scalar.style != Style::Plain && matches!(lower.as_str(), "true" | "false") {
            format!("write {lower} without quotes")
        } else {
            "write true or false".to_string()
        };
        cx.error_hint(
            node,
            path,
            format!("expected true or false, found {}", describe_scalar(scalar)),
            hint,
        );
        None
    }
}

macro_rules! decode_unsigned {
    ($ty:ty) => {
        impl Decode for $ty {
            fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
                let scalar = expect_scalar(node, path, cx, "a whole number")?;
                parse_unsigned(node, path, cx, scalar).and_then(|value| {
                    <$ty>::try_from(value).ok().or_else(|| {
                        cx.error(node, path, format!("{value} is too large"));
                        None
                    })
                })
            }
        }
    };
}

decode_unsigned!(u64);
decode_unsigned!(u32);
decode_unsigned!(u16);
decode_unsigned!(usize);

fn parse_unsigned(node: &Node, path: &FieldPath, cx: &mut Cx, scalar: &Scalar) -> Option<u64> {
    let text = scalar.text.as_str();
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if scalar.style != Style::Plain {
        let hint = if digits {
            format!("write {text} without quotes")
        } else {
            "write a whole number such as 32".to_string()
        };
        cx.error_hint(
            node,
            path,
            format!("expected a whole number, found {}", describe_scalar(scalar)),
            hint,
        );
        return None;
    }
    if !digits {
        cx.error(
            node,
            path,
            format!("expected a whole number, found {}", describe_scalar(scalar)),
        );
        return None;
    }
    if text.len() > 1 && text.starts_with('0') {
        cx.error_hint(
            node,
            path,
            format!("number {text} has a leading zero"),
            "write the number without leading zeros",
        );
        return None;
    }
    match text.parse::<u64>() {
        Ok(value) => Some(value),
        Err(_) => {
            cx.error(node, path, format!("{text} is too large"));
            None
        }
    }
}

impl Decode for f64 {
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let scalar = expect_scalar(node, path, cx, "a number")?;
        let text = scalar.text.as_str();
        let looks_numeric = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
        if scalar.style == Style::Plain
            && looks_numeric
            && let Ok(value) = text.parse::<f64>()
            && value.is_finite()
        {
            return Some(value);
        }
        let hint = if scalar.style != Style::Plain && looks_numeric {
            format!("write {text} without quotes")
        } else {
            "write a number such as 0.05".to_string()
        };
        cx.error_hint(
            node,
            path,
            format!("expected a number, found {}", describe_scalar(scalar)),
            hint,
        );
        None
    }
}

impl Decode for Duration {
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let scalar = expect_scalar(node, path, cx, "a duration such as 30s")?;
        match parse_duration(&scalar.text) {
            Ok(duration) => Some(duration),
            Err(message) => {
                cx.error_hint(
                    node,
                    path,
                    message,
                    "write a number with a unit: ms, s, m, h or d (for example 30s, 5m, 90d)",
                );
                None
            }
        }
    }
}

/// Parses durations such as `500ms`, `30s`, `5m`, `1h30m` and `90d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("duration is empty".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("invalid duration {text:?}"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("duration {text:?} is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("duration {text:?} has no unit")),
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        let millis = value
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("duration {text:?} is too large"))?;
        total += Duration::from_millis(millis);
    }
    Ok(total)
}

/// Formats a duration with the largest exact units (`90d`, `1h30m`, `500ms`).
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if millis >= size {
            out.push_str(&format!("{}{unit}", millis / size));
            millis %= size;
        }
    }
    out
}

/// A Unix file mode written in octal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Decode for FileMode {
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let scalar = expect_scalar(node, path, cx, "a file mode such as 0o600")?;
        let text = scalar.text.as_str();
        let hint = "write the mode as 0o600 or as the quoted string \"0600\"";
        let octal_digits = |s: &str| {
            !s.is_empty() && s.len() <= 4 && s.bytes().all(|b| (b'0'..=b'7').contains(&b))
        };
        let parsed = match (scalar.style, text.strip_prefix("0o")) {
            (_, Some(digits)) if octal_digits(digits) => u32::from_str_radix(digits, 8).ok(),
            (Style::Quoted, None) if octal_digits(text) => u32::from_str_radix(text, 8).ok(),
            (Style::Plain, None) if text.bytes().all(|b| b.is_ascii_digit()) => {
                cx.error_hint(
                    node,
                    path,
                    format!(
                        "file mode {text} is ambiguous: YAML reads an unquoted {text} as the \
                         decimal number {}",
                        text.trim_start_matches('0')
                    ),
                    hint,
                );
                return None;
            }
            _ => None,
        };
        match parsed {
            Some(mode) => Some(FileMode(mode)),
            None => {
                cx.error_hint(node, path, format!("invalid file mode {text:?}"), hint);
                None
            }
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let Value::Sequence(items) = &node.value else {
            cx.error(
                node,
                path,
                format!("expected a list, found {}", node.kind_name()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            match T::decode(item, &path.index(index), cx) {
                Some(value) => out.push(value),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

impl<T: Decode> Decode for BTreeMap<String, T> {
    fn decode(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let Value::Mapping(entries) = &node.value else {
            cx.error(
                node,
                path,
                format!("expected a mapping, found {}", node.kind_name()),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (key_node, value_node) in entries {
            let Some(key) = scalar_key(key_node, path, cx) else {
                ok = false;
                continue;
            };
            if out.contains_key(&key) {
                cx.error(key_node, &path.key(&key), "duplicate key");
                ok = false;
                continue;
            }
            match T::decode(value_node, &path.key(&key), cx) {
                Some(value) => {
                    out.insert(key, value);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }
}

fn scalar_key(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<String> {
    match &node.value {
        Value::Scalar(scalar) => Some(scalar.text.clone()),
        _ => {
            cx.error(node, path, "mapping keys must be plain strings");
            None
        }
    }
}

/// Reads the fields of a mapping, then reports keys nobody asked for.
pub struct MapReader<'n> {
    node: &'n Node,
    path: FieldPath,
    entries: Vec<(String, &'n Node, &'n Node)>,
    used: Vec<bool>,
    known: Vec<&'static str>,
}

impl<'n> MapReader<'n> {
    /// Starts reading `node`, which must be a mapping without duplicate keys.
    pub fn new(node: &'n Node, path: &FieldPath, cx: &mut Cx) -> Option<Self> {
        let Value::Mapping(raw) = &node.value else {
            cx.error(
                node,
                path,
                format!("expected a mapping, found {}", node.kind_name()),
            );
            return None;
        };
        let mut entries: Vec<(String, &Node, &Node)> = Vec::with_capacity(raw.len());
        for (key_node, value_node) in raw {
            let Some(key) = scalar_key(key_node, path, cx) else {
                continue;
            };
            if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == key) {
                let first_line = first.line;
                cx.error_hint(
                    key_node,
                    &path.key(&key),
                    "duplicate key",
                    format!("the key is already set on line {first_line}; keep one of them"),
                );
                continue;
            }
            entries.push((key, key_node, value_node));
        }
        let used = vec![false; entries.len()];
        Some(Self {
            node,
            path: path.clone(),
            entries,
            used,
            known: Vec::new(),
        })
    }

    /// The mapping node itself, for errors about the whole mapping.
    pub fn node(&self) -> &'n Node {
        self.node
    }

    pub fn path(&self) -> &FieldPath {
        &self.path
    }

    /// Path of one field of this mapping.
    pub fn path_of(&self, key: &str) -> FieldPath {
        self.path.key(key)
    }

    /// Returns the value node of `key`, marking it as known.
    pub fn value(&mut self, key: &'static str) -> Option<&'n Node> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let index = self.entries.iter().position(|(k, _, _)| k == key)?;
        self.used[index] = true;
        Some(self.entries[index].2)
    }

    /// Decodes an optional field.
    pub fn optional<T: Decode>(&mut self, key: &'static str, cx: &mut Cx) -> Option<T> {
        let node = self.value(key)?;
        T::decode(node, &self.path.key(key), cx)
    }

    /// Decodes a required field; records an error and returns the default
    /// when it is missing or invalid.
    pub fn required<T: Decode + Default>(&mut self, key: &'static str, cx: &mut Cx) -> T {
        match self.value(key) {
            Some(node) => T::decode(node, &self.path.key(key), cx).unwrap_or_default(),
            None => {
                cx.error(
                    self.node,
                    &self.path,
                    format!("missing required field `{key}`"),
                );
                T::default()
            }
        }
    }

    /// Keys of this mapping that are not known yet, in document order.
    pub fn unread_keys(&self) -> Vec<String> {
        self.entries
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|((key, _, _), _)| key.clone())
            .collect()
    }

    /// Field names asked for so far.
    pub fn known_keys(&self) -> &[&'static str] {
        &self.known
    }

    /// Reports every key that no decoder asked for.
    pub fn finish(self, cx: &mut Cx) {
        if let Some(reads) = &mut cx.reads {
            reads.push(FieldsRead {
                path: self.path.0.clone(),
                fields: self.known.clone(),
            });
        }
        for ((key, key_node, _), used) in self.entries.iter().zip(&self.used) {
            if *used {
                continue;
            }
            let path = self.path.key(key);
            let message = format!("unknown field `{key}`");
            match closest(key, &self.known) {
                Some(suggestion) => cx.error_hint(
                    key_node,
                    &path,
                    message,
                    format!("did you mean `{suggestion}`?"),
                ),
                None if self.known.is_empty() => cx.error(key_node, &path, message),
                None => cx.error_hint(
                    key_node,
                    &path,
                    message,
                    format!("known fields here: {}", self.known.join(", ")),
                ),
            }
        }
    }
}

/// Reads a field that must be one of `choices`.
pub fn decode_choice(
    node: &Node,
    path: &FieldPath,
    cx: &mut Cx,
    choices: &[&'static str],
) -> Option<&'static str> {
    let text = String::decode(node, path, cx)?;
    if let Some(choice) = choices.iter().find(|c| **c == text) {
        return Some(choice);
    }
    let message = format!("invalid value {text:?}");
    match closest(&text, choices) {
        Some(suggestion) => {
            cx.error_hint(node, path, message, format!("did you mean `{suggestion}`?"))
        }
        None => cx.error_hint(
            node,
            path,
            message,
            format!("expected one of: {}", choices.join(", ")),
        ),
    }
    None
}

/// The candidate closest to `word` within a small edit distance.
pub fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(distance, c)| *distance <= 2.max(c.len() / 4))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current[j + 1] = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

fn describe_scalar(scalar: &Scalar) -> String {
    match scalar.style {
        Style::Plain => format!("`{}`", scalar.text),
        _ => format!("the string {:?}", scalar.text),
    }
}

#[cfg(test)]
mod tests {
    use super::super::yaml;
    use super::*;

    fn decode_one<T: Decode>(text: &str) -> (Option<T>, Vec<Diagnostic>) {
        let root = yaml::parse(&format!("v: {text}\n")).unwrap();
        let mut cx = Cx::new(PathBuf::from("."));
        let mut reader = MapReader::new(&root, &FieldPath::root(), &mut cx).unwrap();
        let value = reader.optional::<T>("v", &mut cx);
        reader.finish(&mut cx);
        (value, cx.diagnostics)
    }

    #[test]
    fn bool_takes_only_true_or_false() {
        assert_eq!(decode_one::<bool>("true").0, Some(true));
        let (value, diags) = decode_one::<bool>("yes");
        assert_eq!(value, None);
        assert_eq!(diags[0].path, "v");
        assert_eq!(diags[0].line, 1);
        assert!(diags[0].hint.as_deref().unwrap().contains("true or false"));
        assert_eq!(decode_one::<bool>("\"true\"").0, None);
    }

    #[test]
    fn string_keeps_text_as_written() {
        assert_eq!(decode_one::<String>("no").0.as_deref(), Some("no"));
        assert_eq!(
            decode_one::<String>("012345678901").0.as_deref(),
            Some("012345678901")
        );
    }

    #[test]
    fn numbers_reject_quotes_and_leading_zeros() {
        assert_eq!(decode_one::<u32>("32").0, Some(32));
        assert_eq!(decode_one::<u32>("\"32\"").0, None);
        assert_eq!(decode_one::<u32>("032").0, None);
        assert_eq!(decode_one::<u32>("-1").0, None);
        assert_eq!(decode_one::<f64>("0.05").0, Some(0.05));
        assert_eq!(decode_one::<f64>(".nan").0, None);
    }

    #[test]
    fn file_mode_rejects_bare_leading_zero() {
        assert_eq!(decode_one::<FileMode>("0o600").0, Some(FileMode(0o600)));
        assert_eq!(decode_one::<FileMode>("\"0600\"").0, Some(FileMode(0o600)));
        let (value, diags) = decode_one::<FileMode>("0600");
        assert_eq!(value, None);
        assert!(diags[0].message.contains("decimal number 600"));
        assert!(diags[0].hint.as_deref().unwrap().contains("0o600"));
        assert_eq!(decode_one::<FileMode>("600").0, None);
        assert_eq!(decode_one::<FileMode>("\"0800\"").0, None);
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(
            parse_duration("90d").unwrap(),
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
    }

    #[test]
    fn unknown_key_suggests_closest() {
        let root = yaml::parse("lenght: 3\n").unwrap();
        let mut cx = Cx::new(PathBuf::from("."));
        let mut reader = MapReader::new(&root, &FieldPath::root(), &mut cx).unwrap();
        let _ = reader.optional::<u32>("length", &mut cx);
        reader.finish(&mut cx);
        assert_eq!(cx.diagnostics.len(), 1);
        assert_eq!(
            cx.diagnostics[0].hint.as_deref(),
            Some("did you mean `length`?")
        );
    }

    #[test]
    fn duplicate_key_names_first_line() {
        let root = yaml::parse("a: 1\nb: 2\na: 3\n").unwrap();
        let mut cx = Cx::new(PathBuf::from("."));
        MapReader::new(&root, &FieldPath::root(), &mut cx).unwrap();
        assert_eq!(cx.diagnostics[0].line, 3);
        assert!(
            cx.diagnostics[0]
                .hint
                .as_deref()
                .unwrap()
                .contains("line 1")
        );
    }
}
