//! A YAML document as a tree of nodes that keep their position and style.
//!
//! serde-based YAML crates stop at the first error and forget how a scalar
//! was written. Playbook validation needs both: every error at once, each
//! with its line, and the difference between `mode: 0600` (plain, rejected)
//! and `mode: "0600"` (quoted, accepted). The tree is built from the events of
//! `saphyr-parser`, a YAML 1.2 parser.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Upper bound on nodes materialised from one document, aliases included, so
/// that a "billion laughs" alias bomb fails fast instead of exhausting memory.
const MAX_NODES: usize = 100_000;

/// How a scalar was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// Unquoted: `yes`, `0600`, `30s`.
    Plain,
    /// Single- or double-quoted, or tagged `!!str`.
    Quoted,
    /// A literal (`|`) or folded (`>`) block.
    Block,
}

#[derive(Clone, Debug)]
pub struct Scalar {
    pub text: String,
    pub style: Style,
    /// A tag other than `!!str`, such as `!!int` or `!custom`.
    pub tag: Option<String>,
}

#[derive(Clone, Debug)]
pub enum Value {
    Scalar(Scalar),
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

/// A node with its 1-based line and column.
#[derive(Clone, Debug)]
pub struct Node {
    pub value: Value,
    pub line: usize,
    pub column: usize,
}

impl Node {
    /// Whether the node is the YAML null (`~`, `null`, or nothing).
    pub fn is_null(&self) -> bool {
        match &self.value {
            Value::Scalar(scalar) => {
                scalar.style == Style::Plain
                    && matches!(scalar.text.as_str(), "" | "~" | "null" | "Null" | "NULL")
            }
            _ => false,
        }
    }

    /// A short description of the node's kind for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar(_) if self.is_null() => "null",
            Value::Scalar(scalar) if scalar.style == Style::Plain => "a plain scalar",
            Value::Scalar(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
        }
    }
}

/// A syntax error with its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

enum Frame {
    Sequence {
        items: Vec<Node>,
        anchor: usize,
        line: usize,
        column: usize,
    },
    Mapping {
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
        anchor: usize,
        line: usize,
        column: usize,
    },
}

struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    documents: Vec<Node>,
    nodes: usize,
}

/// Parses `text` as exactly one YAML document.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder {
        stack: Vec::new(),
        anchors: HashMap::new(),
        documents: Vec::new(),
        nodes: 0,
    };
    let mut parser = Parser::new_from_str(text);
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|err| SyntaxError {
            line: err.marker().line(),
            column: err.marker().col() + 1,
            message: err.info().to_string(),
        })?;
        if matches!(event, Event::StreamEnd) {
            break;
        }
        builder.on_event(event, span)?;
    }
    let mut documents = builder.documents.into_iter();
    let first = documents.next().ok_or_else(|| SyntaxError {
        line: 1,
        column: 1,
        message: "the playbook is empty".into(),
    })?;
    if let Some(second) = documents.next() {
        return Err(SyntaxError {
            line: second.line,
            column: second.column,
            message: "expected one YAML document, found several; remove the extra `---`".into(),
        });
    }
    Ok(first)
}

impl Builder {
    fn on_event(&mut self, event: Event<'_>, span: Span) -> Result<(), SyntaxError> {
        let line = span.start.line();
        let column = span.start.col() + 1;
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let (style, tag) = classify(style, tag.as_deref());
                let node = Node {
                    value: Value::Scalar(Scalar {
                        text: text.into_owned(),
                        style,
                        tag,
                    }),
                    line,
                    column,
                };
                self.finish_node(node, anchor)
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Frame::Sequence {
                    items: Vec::new(),
                    anchor,
                    line,
                    column,
                });
                Ok(())
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Mapping {
                    entries: Vec::new(),
                    key: None,
                    anchor,
                    line,
                    column,
                });
                Ok(())
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Sequence {
                    items,
                    anchor,
                    line,
                    column,
                }) => self.finish_node(
                    Node {
                        value: Value::Sequence(items),
                        line,
                        column,
                    },
                    anchor,
                ),
                Some(Frame::Mapping {
                    entries,
                    anchor,
                    line,
                    column,
                    ..
                }) => self.finish_node(
                    Node {
                        value: Value::Mapping(entries),
                        line,
                        column,
                    },
                    anchor,
                ),
                None => Ok(()),
            },
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or(SyntaxError {
                    line,
                    column,
                    message: "alias refers to an unknown anchor".into(),
                })?;
                self.nodes += count_nodes(&node);
                self.finish_node(node, 0)
            }
            _ => Ok(()),
        }
    }

    fn finish_node(&mut self, node: Node, anchor: usize) -> Result<(), SyntaxError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                line: node.line,
                column: node.column,
                message: format!("document expands to more than {MAX_NODES} nodes"),
            });
        }
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(node),
            Some(Frame::Sequence { items, .. }) => items.push(node),
            Some(Frame::Mapping { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
        Ok(())
    }
}

fn classify(style: ScalarStyle, tag: Option<&saphyr_parser::Tag>) -> (Style, Option<String>) {
    let style = match style {
        ScalarStyle::Plain => Style::Plain,
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => Style::Quoted,
        ScalarStyle::Literal | ScalarStyle::Folded => Style::Block,
    };
    match tag {
        None => (style, None),
        Some(tag) if tag.handle == "tag:yaml.org,2002:" && tag.suffix == "str" => {
            (Style::Quoted, None)
        }
        Some(tag) if tag.handle == "!!" && tag.suffix == "str" => (Style::Quoted, None),
        Some(tag) => (style, Some(format!("{}{}", tag.handle, tag.suffix))),
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(_) => 1,
        Value::Sequence(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Value::Mapping(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

/// Writes `text` as a YAML scalar, quoted whenever a reader could take it for
/// anything but a string (`no`, `0600`, `1e3`, `null`, or text with special
/// characters).
pub fn quote_scalar(text: &str) -> String {
    let plain_safe = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !text.starts_with(['-', '.'])
        && !looks_typed(text);
    if plain_safe {
        text.to_string()
    } else {
        serde_json::to_string(text).unwrap_or_else(|_| format!("{text:?}"))
    }
}

/// Whether a plain scalar would be read by some YAML version as something
/// other than a string.
fn looks_typed(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    let lower = text.to_ascii_lowercase();
    WORDS.contains(&lower.as_str())
        || text.starts_with(|c: char| c.is_ascii_digit() || c == '+')
        || lower.starts_with(".inf")
        || lower == ".nan"
}

/// Converts a YAML tree to the JSON value a JSON Schema validator checks.
///
/// Quoted and block scalars are strings. A plain scalar is `null`, a
/// boolean or a number where YAML 1.2's core schema reads it so (`0600` is
/// the number 600), with two exceptions that follow how keywheel reads
/// values: `0o600` and `0x1f` stay strings, since keywheel reads only
/// decimal digits as numbers and `0o600` as a file mode, and `.inf` and
/// `.nan`, which JSON cannot hold, stay strings too. Everything else is a
/// string, `yes` and `no` included. Keys are their text.
pub fn to_json(node: &Node) -> serde_json::Value {
    use serde_json::Value as Json;
    match &node.value {
        Value::Scalar(scalar) if scalar.style == Style::Plain => plain_to_json(&scalar.text),
        Value::Scalar(scalar) => Json::String(scalar.text.clone()),
        Value::Sequence(items) => Json::Array(items.iter().map(to_json).collect()),
        Value::Mapping(entries) => {
            let mut map = serde_json::Map::new();
            for (key, value) in entries {
                let key = match &key.value {
                    Value::Scalar(scalar) => scalar.text.clone(),
                    _ => continue,
                };
                map.insert(key, to_json(value));
            }
            Json::Object(map)
        }
    }
}

fn plain_to_json(text: &str) -> serde_json::Value {
    use serde_json::Value as Json;
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Json::Null,
        "true" | "True" | "TRUE" => return Json::Bool(true),
        "false" | "False" | "FALSE" => return Json::Bool(false),
        _ => {}
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let digits = !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit());
    if digits {
        if let Ok(value) = text.parse::<i64>() {
            return Json::from(value);
        }
        if let Ok(value) = unsigned.parse::<u64>() {
            return Json::from(value);
        }
    }
    let float_chars = unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    let starts_numeric = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if float_chars
        && starts_numeric
        && unsigned.bytes().any(|b| b.is_ascii_digit())
        && let Ok(value) = text.parse::<f64>()
        && let Some(number) = serde_json::Number::from_f64(value)
    {
        return Json::Number(number);
    }
    Json::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(node: &Node) -> &Scalar {
        match &node.value {
            Value::Scalar(s) => s,
            other => panic!("not a scalar: {other:?}"),
        }
    }

    fn mapping(node: &Node) -> &Vec<(Node, Node)> {
        match &node.value {
            Value::Mapping(entries) => entries,
            other => panic!("not a mapping: {other:?}"),
        }
    }

    #[test]
    fn scalars_keep_style_and_text() {
        let root = parse("a: 0600\nb: \"0600\"\nc: no\nd: !!str 12\n").unwrap();
        let entries = mapping(&root);
        assert_eq!(scalar(&entries[0].1).text, "0600");
        assert_eq!(scalar(&entries[0].1).style, Style::Plain);
        assert_eq!(scalar(&entries[1].1).style, Style::Quoted);
        assert_eq!(scalar(&entries[2].1).text, "no");
        assert_eq!(scalar(&entries[3].1).style, Style::Quoted);
    }

    #[test]
    fn nodes_carry_lines() {
        let root = parse("a: 1\nlist:\n  - x\n  - y\n").unwrap();
        let entries = mapping(&root);
        assert_eq!(entries[1].0.line, 2);
        match &entries[1].1.value {
            Value::Sequence(items) => assert_eq!(items[1].line, 4),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.line >= 1);
        assert!(!err.message.is_empty());
    }

    #[test]
    fn alias_bomb_is_rejected() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("more than"));
    }

    #[test]
    fn empty_and_multi_document_are_errors() {
        assert!(parse("").is_err());
        assert!(parse("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn quote_scalar_quotes_ambiguous_text() {
        assert_eq!(quote_scalar("no"), "\"no\"");
        assert_eq!(quote_scalar("0600"), "\"0600\"");
        assert_eq!(quote_scalar("On"), "\"On\"");
        assert_eq!(quote_scalar("demo/app"), "demo/app");
        assert_eq!(quote_scalar("a b"), "\"a b\"");
    }

    #[test]
    fn to_json_types_scalars_like_an_editor() {
        let root = parse(
            "a: 0600\nb: \"0600\"\nc: no\nd: 0o600\ne: 1.5\nf: true\ng: ~\nh: [1, x]\ni: -3\nj: .inf\n",
        )
        .unwrap();
        let json = to_json(&root);
        assert_eq!(json["a"], serde_json::json!(600));
        assert_eq!(json["b"], "0600");
        assert_eq!(json["c"], "no");
        assert_eq!(json["d"], "0o600");
        assert_eq!(json["e"], 1.5);
        assert_eq!(json["f"], true);
        assert_eq!(json["g"], serde_json::Value::Null);
        assert_eq!(json["h"], serde_json::json!([1, "x"]));
        assert_eq!(json["i"], -3);
        assert_eq!(json["j"], ".inf");
    }
}
