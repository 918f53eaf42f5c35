//! The playbook form of the `http` issuer, checked when it is decoded.

use std::time::Duration;

use reqwest::Method;

use crate::http_client::BaseUrl;
use crate::issuers::Revocation;
use crate::issuers::credential::{self, CredentialFields, CredentialSource};
use crate::playbook::decode::{Cx, Decode, FieldPath, MapReader, decode_choice};
use crate::playbook::yaml::{Node, Value};
use crate::template::body::{self, BodyTemplate};
use crate::template::{self, Root, Scope, Template};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];
const DEFAULT_AUTH_HEADER: &str = "Authorization";
const DEFAULT_AUTH_SCHEME: &str = "Bearer";
const DEFAULT_ITEM_ID: &str = "/id";
const DEFAULT_ABSENT_STATUS: &[u16] = &[404];
const AUTH_TOKEN: CredentialFields = CredentialFields {
    inline: "token",
    env: "token_env",
    file: "token_file",
};

#[derive(Clone, Debug)]
pub struct HttpSpec {
    pub base_url: Option<BaseUrl>,
    pub auth: Option<AuthSpec>,
    pub timeout: Duration,
    pub revocation: Revocation,
    /// Header that carries the run's idempotency key on every create.
    pub idempotency_header: Option<String>,
    /// JSON pointer, in a listed key object, of the member that holds the
    /// id of the run that created the key.
    pub run_tag: Option<String>,
    pub old_key: OldKeySpec,
    pub operations: Operations,
}

#[derive(Clone, Debug)]
pub struct AuthSpec {
    pub header: String,
    /// Written before the token with one blank, such as `Bearer`; empty
    /// sends the token alone.
    pub scheme: String,
    pub token: CredentialSource,
}

/// How the key in use is found at preflight.
#[derive(Clone, Debug, Default)]
pub struct OldKeySpec {
    /// Environment variable that holds the old key's id.
    pub id_env: Option<String>,
    pub matcher: Option<Matcher>,
}

/// Finds the old key among the listed keys by the value the targets hold.
#[derive(Clone, Debug)]
pub struct Matcher {
    /// Key field whose current value (from the targets) is compared.
    pub field: String,
    /// JSON pointer, in a listed key object, of the member compared.
    pub pointer: String,
    /// Compare only this many leading characters of the current value,
    /// for APIs that list a key's prefix instead of its secret.
    pub prefix_length: Option<usize>,
}

impl Matcher {
    /// Returns the part of `value` (the field's current value) that the
    /// member at `pointer` must equal.
    pub fn needle(&self, value: &str) -> String {
        match self.prefix_length {
            Some(length) => value.chars().take(length).collect(),
            None => value.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Operations {
    pub get: Option<Operation>,
    pub list: Option<Operation>,
    pub create: Operation,
    pub disable: Option<Operation>,
    pub enable: Option<Operation>,
    pub delete: Operation,
}

/// One templated HTTP call.
#[derive(Clone, Debug)]
pub struct Operation {
    pub name: &'static str,
    /// Field path, such as `issuer.operations.create`.
    pub path: String,
    pub method: Method,
    pub url: Template,
    pub headers: Vec<(String, Template)>,
    pub body: Option<BodyTemplate>,
    pub expect_status: Vec<u16>,
    /// Statuses that mean the key is already gone (delete only).
    pub absent_status: Vec<u16>,
    /// Key field name to JSON pointer in the response (create only); `id`
    /// is always among them.
    pub pick: Vec<(String, String)>,
    /// JSON pointer of the key object in the response (get), or of the list
    /// of key objects (list).
    pub object: String,
    /// JSON pointer of the id inside each listed key object (list).
    pub item_id: String,
}

impl Operation {
    /// Returns every placeholder in the URL, headers and body.
    pub fn placeholders(&self) -> Vec<&template::Placeholder> {
        let mut out: Vec<_> = self.url.placeholders().collect();
        for (_, value) in &self.headers {
            out.extend(value.placeholders());
        }
        if let Some(body) = &self.body {
            out.extend(body.placeholders());
        }
        out
    }
}

/// What differs between the operations when they are decoded.
struct OperationKind {
    name: &'static str,
    method: &'static str,
    expect_status: &'static [u16],
    roots: &'static [Root],
}

const GET: OperationKind = OperationKind {
    name: "get",
    method: "GET",
    expect_status: &[200],
    roots: &[Root::Key, Root::Run],
};
const LIST: OperationKind = OperationKind {
    name: "list",
    method: "GET",
    expect_status: &[200],
    roots: &[Root::Run],
};
const CREATE: OperationKind = OperationKind {
    name: "create",
    method: "POST",
    expect_status: &[200, 201],
    roots: &[Root::Old, Root::Run],
};
const DISABLE: OperationKind = OperationKind {
    name: "disable",
    method: "POST",
    expect_status: &[200, 204],
    roots: &[Root::Key, Root::Run],
};
const ENABLE: OperationKind = OperationKind {
    name: "enable",
    method: "POST",
    expect_status: &[200, 204],
    roots: &[Root::Key, Root::Run],
};
const DELETE: OperationKind = OperationKind {
    name: "delete",
    method: "DELETE",
    expect_status: &[200, 202, 204],
    roots: &[Root::Key, Root::Run],
};

impl HttpSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Option<Self> {
        let base_url = BaseUrl::decode(reader, cx);
        let auth = match reader.value("auth") {
            Some(node) => decode_auth(node, &reader.path_of("auth"), cx),
            None => None,
        };
        let timeout = reader.optional("timeout", cx).unwrap_or(DEFAULT_TIMEOUT);
        let revocation = super::super::decode_revocation(reader, cx);
        let idempotency_header = reader.optional::<String>("idempotency_header", cx);
        if let Some(name) = &idempotency_header
            && reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            let node = reader.value("idempotency_header").unwrap_or(reader.node());
            cx.error(
                node,
                &reader.path_of("idempotency_header"),
                format!("invalid header name {name:?}"),
            );
        }
        let run_tag = reader.optional::<String>("run_tag", cx);
        if let (Some(pointer), Some(node)) = (&run_tag, reader.value("run_tag")) {
            check_pointer(node, &reader.path_of("run_tag"), pointer, cx);
        }
        let old_key = match reader.value("old_key") {
            Some(node) => decode_old_key(node, &reader.path_of("old_key"), cx),
            None => OldKeySpec::default(),
        };
        let Some(node) = reader.value("operations") else {
            cx.error_hint(
                reader.node(),
                reader.path(),
                "missing required field `operations`",
                "describe at least create, delete, and get or list",
            );
            return None;
        };
        let operations = decode_operations(node, &reader.path_of("operations"), cx, revocation)?;
        let spec = Self {
            base_url,
            auth,
            timeout,
            revocation,
            idempotency_header,
            run_tag,
            old_key,
            operations,
        };
        spec.check(reader, cx);
        Some(spec)
    }

    /// Returns the schema of an `http` issuer.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{duration, kind_tag, object, pointer, string, with_rules};
        let (mut properties, base_url_rule) = BaseUrl::schema_properties("operation");
        properties.insert(0, ("type", kind_tag("http")));
        properties.extend([
            ("auth", auth_schema()),
            (
                "timeout",
                duration("Timeout of each request.", Some(DEFAULT_TIMEOUT)),
            ),
            ("revocation", crate::issuers::revocation_schema()),
            (
                "idempotency_header",
                string(
                    "Header that carries the run's idempotency key on every create, such \
                     as Idempotency-Key. This or `run_tag` is required.",
                ),
            ),
            (
                "run_tag",
                pointer(
                    "JSON pointer, in a listed key, of the member that holds the id of \
                     the run that created it; needs `operations.list`.",
                ),
            ),
            ("old_key", old_key_schema()),
            ("operations", operations_schema()),
        ]);
        let schema = object(
            "Keys made and revoked through a service's admin API, one templated HTTP \
             request per operation.",
            properties,
            &["type", "operations"],
        );
        let recovery = serde_json::json!({
            "anyOf": [{"required": ["idempotency_header"]}, {"required": ["run_tag"]}],
        });
        with_rules(schema, vec![base_url_rule, recovery])
    }

    /// Names of the new key's fields: every `pick` entry but `id`.
    pub fn fields(&self) -> Vec<String> {
        self.operations
            .create
            .pick
            .iter()
            .filter(|(name, _)| name != crate::key::ID_FIELD)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Checks the rules that span several fields.
    fn check(&self, reader: &MapReader<'_>, cx: &mut Cx) {
        let node = reader.node();
        let path = reader.path();
        let ops = &self.operations;
        if ops.get.is_none() && ops.list.is_none() {
            cx.error_hint(
                node,
                &path.key("operations"),
                "neither `get` nor `list` is described",
                "describe `get` (read one key by id) or `list` (list keys), so the old key's attributes can be read",
            );
        }
        if self.old_key.matcher.is_some() && ops.list.is_none() {
            cx.error_hint(
                node,
                &path.key("old_key").key("match"),
                "`old_key.match` needs `operations.list`",
                "describe the list operation that returns the keys to match",
            );
        }
        if self.run_tag.is_some() && ops.list.is_none() {
            cx.error_hint(
                node,
                &path.key("run_tag"),
                "`run_tag` needs `operations.list`",
                "describe the list operation, or remove run_tag",
            );
        }
        let create_uses_run_id = ops
            .create
            .placeholders()
            .iter()
            .any(|p| p.root == Root::Run && p.members == ["id"]);
        // An invalid create template is left out of the operation, so the
        // run id may only seem missing; that error is reported already.
        if self.run_tag.is_some() && !create_uses_run_id && !cx.has_errors() {
            cx.error_hint(
                node,
                &path.key("operations").key("create"),
                "`run_tag` is set, but the create operation never sends {{ run.id }}",
                "store the run id in the new key, for example `metadata: {keywheel_run: \"{{ run.id }}\"}` in the body",
            );
        }
        if self.idempotency_header.is_none() && self.run_tag.is_none() {
            cx.error_hint(
                node,
                path,
                "a key created just before a crash could not be found again",
                "set `idempotency_header` (the API replays a repeated create), or `run_tag` with operations.list (keys are tagged with the run id)",
            );
        }
        if self.base_url.is_none() {
            for op in self.operations.all() {
                if op.url.source.starts_with('/') {
                    cx.error_hint(
                        node,
                        &FieldPath::root().key(&op.path).key("url"),
                        "the URL is relative, but no base URL is set",
                        "set `base_url` or `base_url_env` on the issuer, or write an absolute URL",
                    );
                }
            }
        }
        if let Some(matcher) = &self.old_key.matcher {
            let fields = self.fields();
            if !fields.contains(&matcher.field) {
                cx.error_hint(
                    node,
                    &path.key("old_key").key("match").key("field"),
                    format!("unknown key field {:?}", matcher.field),
                    format!("the create operation picks: {}", fields.join(", ")),
                );
            }
        }
    }
}

impl Operations {
    /// Returns the operations the playbook describes.
    pub fn all(&self) -> Vec<&Operation> {
        [
            self.get.as_ref(),
            self.list.as_ref(),
            Some(&self.create),
            self.disable.as_ref(),
            self.enable.as_ref(),
            Some(&self.delete),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn auth_schema() -> serde_json::Value {
    use crate::playbook::schema::{exactly_one, object, with_rules};
    let (mut properties, _) = credential::schema_properties(&AUTH_TOKEN, "the admin token");
    properties.extend([
        (
            "header",
            serde_json::json!({
                "description": "Header that carries the token.",
                "type": "string",
                "default": DEFAULT_AUTH_HEADER,
            }),
        ),
        (
            "scheme",
            serde_json::json!({
                "description": "Written before the token with one blank; \"\" sends the token alone.",
                "type": "string",
                "default": DEFAULT_AUTH_SCHEME,
            }),
        ),
    ]);
    let schema = object(
        "The admin token: the variable or file that holds it, never the token itself.",
        properties,
        &[],
    );
    with_rules(
        schema,
        vec![exactly_one(&[AUTH_TOKEN.env, AUTH_TOKEN.file])],
    )
}

fn old_key_schema() -> serde_json::Value {
    use crate::playbook::schema::{
        at_most_one, env_name, integer, object, pointer, text, with_rules,
    };
    let matcher = object(
        "Find the key in use among the listed keys by the value the targets hold; \
         needs `operations.list`.",
        vec![
            (
                "field",
                text("Key field whose current value, read from the targets, is compared."),
            ),
            (
                "pointer",
                pointer("Member of a listed key that is compared."),
            ),
            (
                "prefix_length",
                integer(
                    "Compare only this many leading characters, for APIs that list a \
                     key's prefix instead of its secret.",
                    1,
                    None,
                ),
            ),
        ],
        &["field", "pointer"],
    );
    let schema = object(
        "How the key in use is found. Without it, from the key field `id` when a target \
         holds it.",
        vec![
            (
                "id_env",
                env_name(
                    "Environment variable holding the id of the key in use.",
                    None,
                ),
            ),
            ("match", matcher),
        ],
        &[],
    );
    with_rules(schema, vec![at_most_one(&["id_env", "match"])])
}

fn operations_schema() -> serde_json::Value {
    use crate::playbook::schema::object;
    let schema = object(
        "The API's operations: `create` and `delete`; `get` or `list`; `disable` and \
         `enable` unless `revocation` is delete_only.",
        vec![
            ("get", operation_schema(&GET, "Reads one key by id.")),
            ("list", operation_schema(&LIST, "Lists the keys.")),
            ("create", operation_schema(&CREATE, "Creates the new key.")),
            ("disable", operation_schema(&DISABLE, "Disables a key.")),
            (
                "enable",
                operation_schema(&ENABLE, "Enables a disabled key again."),
            ),
            ("delete", operation_schema(&DELETE, "Deletes a key.")),
        ],
        &["create", "delete"],
    );
    let read = serde_json::json!({"anyOf": [{"required": ["get"]}, {"required": ["list"]}]});
    crate::playbook::schema::with_rules(schema, vec![read])
}

fn operation_schema(kind: &OperationKind, description: &str) -> serde_json::Value {
    use crate::playbook::schema::{choice, headers, object, pointer, statuses};
    let url = serde_json::json!({
        "description": "A path joined to the base URL, or an absolute URL; placeholders \
                        are percent-encoded.",
        "type": "string",
        "pattern": "^(/|https?://|\\{\\{)",
    });
    let mut properties = vec![
        ("method", choice("HTTP method.", METHODS, Some(kind.method))),
        ("url", url),
        (
            "headers",
            headers("Request headers; values may contain placeholders."),
        ),
        (
            "body",
            serde_json::json!({
                "description": "Request body, written as YAML and sent as JSON. A quoted \
                                string that is exactly one placeholder inserts the JSON \
                                value itself.",
            }),
        ),
        (
            "expect_status",
            statuses("Statuses that mean success.", kind.expect_status),
        ),
    ];
    let mut required = vec!["url"];
    match kind.name {
        "delete" => properties.push((
            "absent_status",
            statuses(
                "Statuses that mean the key is already gone.",
                DEFAULT_ABSENT_STATUS,
            ),
        )),
        "create" => {
            let pick = serde_json::json!({
                "description": "Key field to JSON pointer in the response. `id` is \
                                required; every other name is a secret field of the key.",
                "type": "object",
                "required": ["id"],
                "minProperties": 2,
                "propertyNames": {"pattern": "^[a-z][a-z0-9_]*$"},
                "additionalProperties": {"type": "string", "pattern": crate::playbook::schema::POINTER_PATTERN},
            });
            properties.push(("pick", pick));
            required.push("pick");
        }
        "get" => properties.push((
            "key",
            pointer("JSON pointer of the key object in the response (default: the whole body)."),
        )),
        "list" => {
            properties.push((
                "items",
                pointer("JSON pointer of the list of keys in the response."),
            ));
            let mut id = pointer("JSON pointer of the id in each listed key.");
            id["default"] = DEFAULT_ITEM_ID.into();
            properties.push(("id", id));
            required.push("items");
        }
        _ => {}
    }
    object(description, properties, &required)
}

fn decode_auth(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<AuthSpec> {
    let mut reader = MapReader::new(node, path, cx)?;
    let token = credential::decode(&mut reader, cx, &AUTH_TOKEN, true);
    let header = reader
        .optional::<String>("header", cx)
        .unwrap_or_else(|| DEFAULT_AUTH_HEADER.into());
    if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
        let node = reader.value("header").unwrap_or(node);
        cx.error(
            node,
            &reader.path_of("header"),
            format!("invalid header name {header:?}"),
        );
    }
    let scheme = reader
        .optional::<String>("scheme", cx)
        .unwrap_or_else(|| DEFAULT_AUTH_SCHEME.into());
    reader.finish(cx);
    Some(AuthSpec {
        header,
        scheme,
        token: token?,
    })
}

fn decode_old_key(node: &Node, path: &FieldPath, cx: &mut Cx) -> OldKeySpec {
    let Some(mut reader) = MapReader::new(node, path, cx) else {
        return OldKeySpec::default();
    };
    let id_env = reader.optional::<String>("id_env", cx);
    let matcher = match reader.value("match") {
        Some(node) => decode_matcher(node, &reader.path_of("match"), cx),
        None => None,
    };
    if id_env.is_some() && matcher.is_some() {
        cx.error_hint(
            node,
            path,
            "`id_env` and `match` cannot both be set",
            "name the old key's id in id_env, or find it with match; not both",
        );
    }
    reader.finish(cx);
    OldKeySpec { id_env, matcher }
}

fn decode_matcher(node: &Node, path: &FieldPath, cx: &mut Cx) -> Option<Matcher> {
    let mut reader = MapReader::new(node, path, cx)?;
    let field: String = reader.required("field", cx);
    let pointer: String = reader.required("pointer", cx);
    if let Some(node) = reader.value("pointer") {
        check_pointer(node, &reader.path_of("pointer"), &pointer, cx);
    }
    let prefix_length = reader.optional::<usize>("prefix_length", cx);
    if prefix_length == Some(0) {
        let node = reader.value("prefix_length").unwrap_or(node);
        cx.error(
            node,
            &reader.path_of("prefix_length"),
            "prefix_length must be at least 1",
        );
    }
    reader.finish(cx);
    Some(Matcher {
        field,
        pointer,
        prefix_length,
    })
}

fn decode_operations(
    node: &Node,
    path: &FieldPath,
    cx: &mut Cx,
    revocation: Revocation,
) -> Option<Operations> {
    let mut reader = MapReader::new(node, path, cx)?;
    let mut op = |kind: &OperationKind, required: bool, cx: &mut Cx| match reader.value(kind.name) {
        Some(op_node) => decode_operation(op_node, &reader.path_of(kind.name), cx, kind),
        None => {
            if required {
                cx.error_hint(
                    node,
                    path,
                    format!("missing required operation `{}`", kind.name),
                    format!("describe how the API does {} a key", kind.name),
                );
            }
            None
        }
    };
    let get = op(&GET, false, cx);
    let list = op(&LIST, false, cx);
    let create = op(&CREATE, true, cx);
    let needs_disable = revocation == Revocation::DisableThenDelete;
    let disable = op(&DISABLE, needs_disable, cx);
    let enable = op(&ENABLE, needs_disable, cx);
    let delete = op(&DELETE, true, cx);
    if revocation == Revocation::DeleteOnly {
        for name in ["disable", "enable"] {
            if let Some(op_node) = reader.value(name) {
                cx.error_hint(
                    op_node,
                    &reader.path_of(name),
                    format!("`{name}` is described, but `revocation` is delete_only"),
                    format!("remove `{name}`, or set `revocation: disable_then_delete`"),
                );
            }
        }
    }
    reader.finish(cx);
    Some(Operations {
        get,
        list,
        create: create?,
        disable,
        enable,
        delete: delete?,
    })
}

fn decode_operation(
    node: &Node,
    path: &FieldPath,
    cx: &mut Cx,
    kind: &OperationKind,
) -> Option<Operation> {
    let mut reader = MapReader::new(node, path, cx)?;
    let scope = Scope {
        roots: kind.roots,
        key_fields: None,
        place: &format!("operations.{}", kind.name),
    };
    let method = match reader.value("method") {
        Some(method_node) => decode_choice(method_node, &reader.path_of("method"), cx, METHODS)
            .unwrap_or(kind.method),
        None => kind.method,
    };
    let url = match reader.value("url") {
        Some(url_node) => decode_url(url_node, &reader.path_of("url"), cx, &scope),
        None => {
            cx.error(node, path, "missing required field `url`");
            None
        }
    };
    let headers = match reader.value("headers") {
        Some(headers_node) => decode_headers(headers_node, &reader.path_of("headers"), cx, &scope),
        None => Vec::new(),
    };
    let body = match reader.value("body") {
        Some(body_node) => body::decode(body_node, &reader.path_of("body"), cx, &scope),
        None => None,
    };
    let expect_status = match reader.value("expect_status") {
        Some(status_node) => decode_statuses(status_node, &reader.path_of("expect_status"), cx),
        None => kind.expect_status.to_vec(),
    };
    let mut op = Operation {
        name: kind.name,
        path: path.to_string(),
        method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
        url: url.unwrap_or_else(|| Template::literal("/")),
        headers,
        body,
        expect_status,
        absent_status: Vec::new(),
        pick: Vec::new(),
        object: String::new(),
        item_id: DEFAULT_ITEM_ID.into(),
    };
    decode_operation_extras(&mut reader, cx, kind, &mut op);
    reader.finish(cx);
    Some(op)
}

/// Reads the fields only some operations have.
fn decode_operation_extras(
    reader: &mut MapReader<'_>,
    cx: &mut Cx,
    kind: &OperationKind,
    op: &mut Operation,
) {
    match kind.name {
        "delete" => {
            op.absent_status = match reader.value("absent_status") {
                Some(node) => decode_statuses(node, &reader.path_of("absent_status"), cx),
                None => DEFAULT_ABSENT_STATUS.to_vec(),
            };
        }
        "create" => op.pick = decode_pick(reader, cx),
        "get" => {
            if let Some(pointer) = decode_pointer_field(reader, cx, "key") {
                op.object = pointer;
            }
        }
        "list" => {
            match decode_pointer_field(reader, cx, "items") {
                Some(pointer) => op.object = pointer,
                None => cx.error_hint(
                    reader.node(),
                    reader.path(),
                    "missing required field `items`",
                    "give the JSON pointer of the list of keys in the response, such as /data",
                ),
            }
            if let Some(pointer) = decode_pointer_field(reader, cx, "id") {
                op.item_id = pointer;
            }
        }
        _ => {}
    }
}

fn decode_pick(reader: &mut MapReader<'_>, cx: &mut Cx) -> Vec<(String, String)> {
    let Some(node) = reader.value("pick") else {
        cx.error_hint(
            reader.node(),
            reader.path(),
            "missing required field `pick`",
            "map key fields to JSON pointers in the response, for example `pick: {id: /id, secret: /secret}`",
        );
        return Vec::new();
    };
    let path = reader.path_of("pick");
    let Some(map) = std::collections::BTreeMap::<String, String>::decode(node, &path, cx) else {
        return Vec::new();
    };
    for (name, pointer) in &map {
        check_pointer(node, &path.key(name), pointer, cx);
        let valid = name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && name.starts_with(|c: char| c.is_ascii_lowercase());
        if !valid {
            cx.error_hint(
                node,
                &path.key(name),
                format!("invalid key field name {name:?}"),
                "use lowercase letters, digits and '_', starting with a letter",
            );
        }
    }
    if !map.contains_key(crate::key::ID_FIELD) {
        cx.error_hint(
            node,
            &path,
            "`pick` has no `id`",
            "add the JSON pointer of the new key's id, such as `id: /id`",
        );
    }
    if map.len() < 2 {
        cx.error_hint(
            node,
            &path,
            "`pick` names no secret field",
            "add the JSON pointer of the new key's secret, such as `secret: /secret`",
        );
    }
    map.into_iter().collect()
}

fn decode_pointer_field(
    reader: &mut MapReader<'_>,
    cx: &mut Cx,
    key: &'static str,
) -> Option<String> {
    let pointer = reader.optional::<String>(key, cx)?;
    let node = reader.value(key)?;
    check_pointer(node, &reader.path_of(key), &pointer, cx).then_some(pointer)
}

/// Checks that `pointer` is a JSON pointer (RFC 6901): empty, or `/...`.
pub fn check_pointer(node: &Node, path: &FieldPath, pointer: &str, cx: &mut Cx) -> bool {
    if pointer.is_empty() || pointer.starts_with('/') {
        return true;
    }
    cx.error_hint(
        node,
        path,
        format!("{pointer:?} is not a JSON pointer"),
        format!("JSON pointers start with '/', such as /{pointer}"),
    );
    false
}

fn decode_url(node: &Node, path: &FieldPath, cx: &mut Cx, scope: &Scope) -> Option<Template> {
    let url = template::decode(node, path, cx, scope)?;
    let starts_well = ["/", "http://", "https://", "{{"]
        .iter()
        .any(|start| url.source.starts_with(start));
    if !starts_well {
        cx.error_hint(
            node,
            path,
            format!("invalid URL {:?}", url.source),
            "write a path starting with '/' (joined to the base URL) or an absolute http:// or https:// URL",
        );
        return None;
    }
    Some(url)
}

/// Decodes a mapping of header names to templates.
pub fn decode_headers(
    node: &Node,
    path: &FieldPath,
    cx: &mut Cx,
    scope: &Scope,
) -> Vec<(String, Template)> {
    let Value::Mapping(entries) = &node.value else {
        cx.error(
            node,
            path,
            format!("expected a mapping, found {}", node.kind_name()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key_node, value_node) in entries {
        let Some(name) = String::decode(key_node, path, cx) else {
            continue;
        };
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            cx.error(
                key_node,
                &path.key(&name),
                format!("invalid header name {name:?}"),
            );
            continue;
        }
        if let Some(value) = template::decode(value_node, &path.key(&name), cx, scope) {
            out.push((name, value));
        }
    }
    out
}

/// Decodes one HTTP status or a list of them.
pub fn decode_statuses(node: &Node, path: &FieldPath, cx: &mut Cx) -> Vec<u16> {
    let statuses: Option<Vec<u16>> = match &node.value {
        Value::Sequence(_) => Vec::<u16>::decode(node, path, cx),
        _ => u16::decode(node, path, cx).map(|status| vec![status]),
    };
    let Some(statuses) = statuses else {
        return Vec::new();
    };
    if statuses.is_empty() {
        cx.error(node, path, "the list of statuses is empty");
    }
    if let Some(bad) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
        cx.error(node, path, format!("{bad} is not an HTTP status"));
    }
    statuses
}
