//! The schema against the decoders: playbooks that `validate` accepts match
//! the schema, broken ones fail both, and the fields each decoder reads are
//! exactly the properties the schema gives the same mapping.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::playbook;
use crate::playbook::decode::{Cx, FieldPath, FieldsRead};
use crate::playbook::yaml;

fn validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&playbook()).unwrap()
}

fn schema_errors(validator: &jsonschema::Validator, text: &str) -> Vec<String> {
    let instance = yaml::to_json(&yaml::parse(text).unwrap());
    validator
        .iter_errors(&instance)
        .map(|err| format!("{}: {err}", err.instance_path()))
        .collect()
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no playbooks in {}", dir.display());
    paths
}

fn repository_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Playbooks that use every field, with the variants that exclude each other.
fn full_playbooks() -> Vec<PathBuf> {
    yaml_files(&repository_dir("tests/fixtures/full"))
}

#[test]
fn schema_is_valid_draft_2020_12() {
    let schema = playbook();
    assert_eq!(schema["$schema"], super::DIALECT);
    jsonschema::meta::validate(&schema).unwrap();
}

#[test]
fn kind_schemas_cover_every_kind() {
    let issuers: Vec<&str> = crate::issuers::kind_schemas()
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(issuers, crate::issuers::KINDS);
    let targets: Vec<&str> = crate::targets::kind_schemas()
        .into_iter()
        .map(|(kind, _)| kind)
        .collect();
    assert_eq!(targets, crate::targets::KINDS);
}

#[test]
fn repository_and_full_playbooks_match_schema() {
    let validator = validator();
    let mut paths = yaml_files(&repository_dir("playbooks"));
    paths.extend(full_playbooks());
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        crate::playbook::parse(&path, &text).unwrap_or_else(|errors| panic!("{errors}"));
        let errors = schema_errors(&validator, &text);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
    }
}

const MINIMAL: &str = "version: 1
name: broken
issuer:
  type: random
targets:
  - name: env
    type: dotenv
    path: app.env
    set:
      API_KEY: secret
";

/// Changes to [`MINIMAL`] that `validate` rejects, as (what, from, to).
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "unknown top-level field",
        "version: 1\n",
        "version: 1\ncolour: red\n",
    ),
    (
        "unknown issuer field",
        "type: random\n",
        "type: random\n  lenght: 20\n",
    ),
    (
        "unknown target field",
        "path: app.env\n",
        "path: app.env\n    colour: red\n",
    ),
    ("unknown issuer kind", "type: random\n", "type: vault\n"),
    (
        "length as a string",
        "type: random\n",
        "type: random\n  length: \"20\"\n",
    ),
    (
        "boolean as yes",
        "path: app.env\n",
        "path: app.env\n    create: yes\n",
    ),
    (
        "bare file mode",
        "path: app.env\n",
        "path: app.env\n    mode: 0600\n",
    ),
    (
        "duration without unit",
        "type: random\n",
        "type: random\n  timeout: 30\n",
    ),
    (
        "targets as a mapping",
        "targets:\n  - name",
        "targets:\n  x:\n    name",
    ),
    (
        "inline vault token",
        "type: dotenv\n    path: app.env\n",
        "type: vault\n    mount: secret\n    path: app\n    token: s.abc\n",
    ),
    ("missing version", "version: 1\n", ""),
    ("missing set", "    set:\n      API_KEY: secret\n", ""),
    (
        "invalid variable name",
        "API_KEY: secret",
        "API-KEY: secret",
    ),
    (
        "invalid choice",
        "version: 1\n",
        "version: 1\npolicy:\n  on_partial_failure: retry\n",
    ),
    (
        "two alphabets",
        "type: random\n",
        "type: random\n  alphabet: hex\n  characters: abc\n",
    ),
    ("version 2", "version: 1\n", "version: 2\n"),
];

#[test]
fn broken_playbooks_fail_schema_and_validate() {
    let validator = validator();
    assert!(schema_errors(&validator, MINIMAL).is_empty());
    crate::playbook::parse(Path::new("broken.yaml"), MINIMAL).unwrap();
    for (what, from, to) in BROKEN {
        assert!(
            MINIMAL.contains(from),
            "{what}: {from:?} not in the playbook"
        );
        let text = MINIMAL.replacen(from, to, 1);
        let errors = schema_errors(&validator, &text);
        assert!(!errors.is_empty(), "{what}: the schema accepts\n{text}");
        let decoded = crate::playbook::parse(Path::new("broken.yaml"), &text);
        assert!(decoded.is_err(), "{what}: validate accepts\n{text}");
    }
}

/// The schema objects with `properties` that apply to one mapping of a
/// playbook, found by walking the playbook and the schema together.
#[derive(Debug, Default)]
struct Applied {
    /// JSON pointers of the schema objects, such as `#/$defs/target.file`.
    nodes: Vec<String>,
    properties: BTreeSet<String>,
    /// Whether one of them has `additionalProperties: false`.
    closed: bool,
}

/// Walks a playbook and the schema together. It handles the keywords the
/// playbook schema uses: `$ref` to `#/$defs/...`, `type`, `properties`,
/// `additionalProperties`, `items`, `allOf`, `anyOf`, `oneOf` (a branch
/// applies when its `type` matches) and `if`/`then`/`else` (the condition
/// is checked with a validator). Other keywords only constrain values.
struct Walker<'s> {
    root: &'s Value,
    applied: BTreeMap<String, Applied>,
}

impl Walker<'_> {
    fn walk(&mut self, pointer: &str, schema: &Value, instance: &Value, path: &FieldPath) {
        let Value::Object(keywords) = schema else {
            return;
        };
        if let Some(Value::String(target)) = keywords.get("$ref") {
            let name = target.strip_prefix("#/$defs/").unwrap_or_else(|| {
                panic!("{pointer}: the walker follows only #/$defs/ references")
            });
            let resolved = &self.root["$defs"][name];
            assert!(resolved.is_object(), "{pointer}: {target} not found");
            self.walk(&format!("#/$defs/{name}"), resolved, instance, path);
        }
        if let Some(kind) = keywords.get("type")
            && !type_matches(kind, instance)
        {
            return;
        }
        for keyword in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = keywords.get(keyword) {
                for (index, branch) in branches.iter().enumerate() {
                    self.walk(
                        &format!("{pointer}/{keyword}/{index}"),
                        branch,
                        instance,
                        path,
                    );
                }
            }
        }
        if let Some(condition) = keywords.get("if") {
            let holds = jsonschema::draft202012::new(condition)
                .unwrap()
                .is_valid(instance);
            let branch = if holds { "then" } else { "else" };
            if let Some(schema) = keywords.get(branch) {
                self.walk(&format!("{pointer}/{branch}"), schema, instance, path);
            }
        }
        match instance {
            Value::Object(members) => self.walk_members(pointer, keywords, members, path),
            Value::Array(items) => {
                if let Some(item_schema) = keywords.get("items") {
                    for (index, item) in items.iter().enumerate() {
                        let item_pointer = format!("{pointer}/items");
                        self.walk(&item_pointer, item_schema, item, &path.index(index));
                    }
                }
            }
            _ => {}
        }
    }

    fn walk_members(
        &mut self,
        pointer: &str,
        keywords: &serde_json::Map<String, Value>,
        members: &serde_json::Map<String, Value>,
        path: &FieldPath,
    ) {
        let properties = keywords.get("properties").and_then(Value::as_object);
        let additional = keywords.get("additionalProperties");
        if let Some(properties) = properties {
            let applied = self.applied.entry(path.to_string()).or_default();
            applied.nodes.push(pointer.to_string());
            applied.properties.extend(properties.keys().cloned());
            applied.closed |= additional == Some(&Value::Bool(false));
        }
        for (key, value) in members {
            let declared = properties.and_then(|p| p.get(key));
            match (declared, additional) {
                (Some(schema), _) => {
                    let member_pointer = format!("{pointer}/properties/{key}");
                    self.walk(&member_pointer, schema, value, &path.key(key));
                }
                (None, Some(schema @ Value::Object(_))) => {
                    let member_pointer = format!("{pointer}/additionalProperties");
                    self.walk(&member_pointer, schema, value, &path.key(key));
                }
                _ => {}
            }
        }
    }
}

fn type_matches(kind: &Value, instance: &Value) -> bool {
    let matches = |name: &str| match name {
        "object" => instance.is_object(),
        "array" => instance.is_array(),
        "string" => instance.is_string(),
        "boolean" => instance.is_boolean(),
        "null" => instance.is_null(),
        "integer" => instance.is_i64() || instance.is_u64(),
        "number" => instance.is_number(),
        other => panic!("unknown JSON Schema type {other}"),
    };
    match kind {
        Value::String(name) => matches(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(matches),
        _ => true,
    }
}

/// Decodes `text` and returns the fields each mapping reader asked for.
fn decoder_reads(path: &Path, text: &str) -> Vec<FieldsRead> {
    let root = yaml::parse(text).unwrap();
    let mut cx = Cx::new(PathBuf::from("/tmp"));
    cx.reads = Some(Vec::new());
    let decoded = crate::playbook::decode_playbook(&root, &mut cx);
    assert!(
        decoded.is_some() && !cx.has_errors(),
        "{}: {:#?}",
        path.display(),
        cx.diagnostics
    );
    cx.reads.unwrap()
}

/// Collects every schema object that has `properties`, by JSON pointer,
/// except in the conditions of `if` and the values of `not`, `const`,
/// `enum` and `default`, which describe no mapping of their own.
fn property_nodes(pointer: &str, schema: &Value, out: &mut BTreeMap<String, Vec<String>>) {
    match schema {
        Value::Object(keywords) => {
            if let Some(Value::Object(properties)) = keywords.get("properties") {
                out.insert(pointer.to_string(), properties.keys().cloned().collect());
            }
            for (keyword, value) in keywords {
                if ["if", "not", "const", "enum", "default"].contains(&keyword.as_str()) {
                    continue;
                }
                property_nodes(&format!("{pointer}/{keyword}"), value, out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                property_nodes(&format!("{pointer}/{index}"), item, out);
            }
        }
        _ => {}
    }
}

#[test]
fn decoders_and_schema_accept_the_same_fields() {
    let schema = playbook();
    // Fields the decoders asked for, by the schema object that describes
    // the mapping they were asked of.
    let mut asked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();

    for path in full_playbooks() {
        let text = std::fs::read_to_string(&path).unwrap();
        let reads = decoder_reads(&path, &text);
        let instance = yaml::to_json(&yaml::parse(&text).unwrap());
        let mut walker = Walker {
            root: &schema,
            applied: BTreeMap::new(),
        };
        walker.walk("#", &schema, &instance, &FieldPath::root());

        for read in &reads {
            let applied = walker.applied.get(&read.path).unwrap_or_else(|| {
                panic!(
                    "{}: a decoder reads the mapping `{}`, which the schema does not describe",
                    path.display(),
                    read.path
                )
            });
            for field in &read.fields {
                assert!(
                    applied.properties.contains(*field),
                    "{}: `{}.{field}` is accepted by a decoder but missing from the schema at {:?}",
                    path.display(),
                    read.path,
                    applied.nodes
                );
            }
            for node in &applied.nodes {
                let fields = read.fields.iter().map(|f| f.to_string());
                asked.entry(node.clone()).or_default().extend(fields);
            }
        }
        for (mapping, applied) in &walker.applied {
            assert!(
                !applied.closed || reads.iter().any(|read| read.path == *mapping),
                "{}: the schema closes the mapping `{mapping}`, but no decoder reads it",
                path.display()
            );
        }
    }

    let mut nodes = BTreeMap::new();
    property_nodes("#", &schema, &mut nodes);
    for (node, properties) in nodes {
        let Some(fields) = asked.get(&node) else {
            panic!("no playbook in tests/fixtures/full reaches the schema object {node}");
        };
        for property in properties {
            assert!(
                fields.contains(&property),
                "the schema object {node} has `{property}`, which no decoder asks for \
                 (or no playbook in tests/fixtures/full reaches it)"
            );
        }
    }
}

#[test]
fn walker_reports_a_field_missing_from_the_schema() {
    // The consistency test is only as good as the walker: a schema without
    // `length` must show the decoder's `length` as missing.
    let mut schema = playbook();
    let random = &mut schema["$defs"]["issuer.random"]["properties"];
    random.as_object_mut().unwrap().remove("length");
    let text = "version: 1\nname: t\nissuer:\n  type: random\ntargets:\n  - name: f\n    type: file\n    path: k\n";
    let reads = decoder_reads(Path::new("t.yaml"), text);
    let mut walker = Walker {
        root: &schema,
        applied: BTreeMap::new(),
    };
    let instance = yaml::to_json(&yaml::parse(text).unwrap());
    walker.walk("#", &schema, &instance, &FieldPath::root());
    let issuer = reads.iter().find(|read| read.path == "issuer").unwrap();
    assert!(issuer.fields.contains(&"length"));
    assert!(!walker.applied["issuer"].properties.contains("length"));
    let nodes: BTreeSet<&str> = walker.applied["issuer"]
        .nodes
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        nodes,
        BTreeSet::from(["#/properties/issuer", "#/$defs/issuer.random"])
    );
}
