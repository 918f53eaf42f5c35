//! The playbook fields of the `kubernetes` target, decoded and checked
//! before anything is contacted.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::playbook::decode::{Cx, Decode, FieldPath, MapReader};
use crate::playbook::decode_field_map;
use crate::playbook::yaml::{Node, Value};

/// Timeout of each API request.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a restart may take until every rollout is complete.
const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(300);
/// Fields that would hold cluster credentials inline.
const INLINE_FIELDS: [&str; 2] = ["token", "kubeconfig"];
/// A workload as `restart` names it: `KIND/NAME`.
const WORKLOAD_PATTERN: &str = "^[A-Za-z]+/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";

#[derive(Clone, Debug)]
pub struct KubernetesSpec {
    pub access: ClusterAccess,
    pub namespaces: NamespaceChoice,
    pub secret_name: String,
    /// Secret data key to key field.
    pub set: BTreeMap<String, String>,
    /// Create the Secret, or add keys that are missing from it.
    pub create: bool,
    pub restart: Vec<RestartSpec>,
    pub rollout_timeout: Duration,
    pub timeout: Duration,
}

/// How keywheel finds the cluster and its credentials.
#[derive(Clone, Debug, Default)]
pub struct ClusterAccess {
    /// Variable holding the path of a kubeconfig file. Without it, the
    /// kubeconfig comes from `KUBECONFIG` or `~/.kube/config`, and without
    /// those from the pod's service account.
    pub kubeconfig_env: Option<String>,
    /// Kubeconfig context to use instead of the current one.
    pub context: Option<String>,
}

/// The namespaces that hold the Secret.
#[derive(Clone, Debug)]
pub enum NamespaceChoice {
    /// `namespace:`: one Secret, and the target keeps its playbook name.
    One(String),
    /// `namespaces:`: one target per namespace, named `NAME/NAMESPACE`.
    List(Vec<String>),
    /// `namespace_selector:`: one target per namespace whose labels match
    /// the selector when a run starts, named `NAME/NAMESPACE`.
    Selector(String),
}

/// A workload to restart after the push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartSpec {
    pub workload: WorkloadRef,
    /// Only in this namespace; `None` for every namespace of the target.
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// Returns the lower-case kind, as `kubectl rollout restart` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::DaemonSet => "daemonset",
        }
    }

    /// Returns the resource name used in API paths and RBAC rules.
    pub fn resource(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
        }
    }

    /// Parses a kind as kubectl accepts it: singular, plural or short name,
    /// in any case.
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "deployment" | "deployments" | "deploy" => Some(Self::Deployment),
            "statefulset" | "statefulsets" | "sts" => Some(Self::StatefulSet),
            "daemonset" | "daemonsets" | "ds" => Some(Self::DaemonSet),
            _ => None,
        }
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.name)
    }
}

impl KubernetesSpec {
    pub fn decode(reader: &mut MapReader<'_>, cx: &mut Cx) -> Self {
        let namespaces = decode_namespaces(reader, cx);
        let secret_name: String = reader.required("secret_name", cx);
        if let Some(node) = reader.value("secret_name")
            && !is_dns_subdomain(&secret_name)
        {
            cx.error_hint(
                node,
                &reader.path_of("secret_name"),
                format!("invalid Secret name {secret_name:?}"),
                "use lower-case letters, digits, '-' and '.', at most 253 characters",
            );
        }
        let set = decode_set(reader, cx);
        for field in INLINE_FIELDS {
            if let Some(node) = reader.value(field) {
                cx.error_hint(
                    node,
                    &reader.path_of(field),
                    format!("`{field}` cannot be written in a playbook"),
                    "put the kubeconfig path in an environment variable and name that variable in `kubeconfig_env`",
                );
            }
        }
        let restart = match reader.value("restart") {
            Some(node) => decode_restarts(node, &reader.path_of("restart"), &namespaces, cx),
            None => Vec::new(),
        };
        let rollout_timeout = reader
            .optional("rollout_timeout", cx)
            .unwrap_or(DEFAULT_ROLLOUT_TIMEOUT);
        if let Some(node) = reader.value("rollout_timeout")
            && restart.is_empty()
        {
            cx.warn(
                node,
                &reader.path_of("rollout_timeout"),
                "`rollout_timeout` has no effect without `restart`",
            );
        }
        Self {
            access: ClusterAccess {
                kubeconfig_env: reader.optional("kubeconfig_env", cx),
                context: reader.optional("context", cx),
            },
            namespaces,
            secret_name,
            set,
            create: reader.optional("create", cx).unwrap_or(false),
            restart,
            rollout_timeout,
            timeout: reader.optional("timeout", cx).unwrap_or(DEFAULT_TIMEOUT),
        }
    }

    /// Returns the schema of a `kubernetes` target.
    pub fn schema() -> serde_json::Value {
        use crate::playbook::schema::{
            boolean, duration, env_name, exactly_one, field_map, object, rejected, string, text,
            with_rules,
        };
        let namespace = serde_json::json!({
            "type": "string",
            "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        });
        let mut one = namespace.clone();
        one["description"] = "The namespace of the Secret.".into();
        let workload = serde_json::json!({
            "description": "KIND/NAME, with KIND deployment, statefulset or daemonset.",
            "type": "string",
            "pattern": WORKLOAD_PATTERN,
        });
        let restart_one = object(
            "A workload restarted in one namespace of the target only.",
            vec![("workload", workload.clone()), ("namespace", one.clone())],
            &["workload"],
        );
        let mut properties = vec![
            ("namespace", one),
            (
                "namespaces",
                serde_json::json!({
                    "description": "Several namespaces: one target each, named NAME/NAMESPACE.",
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": true,
                    "items": namespace,
                }),
            ),
            (
                "namespace_selector",
                text(
                    "A label selector such as team=payments: one target per matching \
                     namespace, named NAME/NAMESPACE, matched when a run starts.",
                ),
            ),
            (
                "secret_name",
                serde_json::json!({
                    "description": "The Secret's name.",
                    "type": "string",
                    "pattern": "^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$",
                }),
            ),
            (
                "set",
                field_map(
                    "Secret data key to key field; other keys are kept.",
                    Some("^[-._a-zA-Z0-9]{1,253}$"),
                ),
            ),
            (
                "create",
                boolean(
                    "Create the Secret, or add missing keys, instead of failing at preflight.",
                    false,
                ),
            ),
            (
                "kubeconfig_env",
                env_name(
                    "Environment variable holding a kubeconfig path (default: KUBECONFIG, \
                     ~/.kube/config, else the pod's service account).",
                    None,
                ),
            ),
            (
                "context",
                string("Kubeconfig context (default: the current context)."),
            ),
            (
                "restart",
                serde_json::json!({
                    "description": "Workloads to restart once every target is pushed: \
                                    KIND/NAME in every namespace of the target, or \
                                    {workload: KIND/NAME, namespace: NAME} in one.",
                    "type": "array",
                    "items": {"anyOf": [workload, restart_one]},
                }),
            ),
            (
                "rollout_timeout",
                duration(
                    "How long the restarts of one target may take until every rollout is complete.",
                    Some(DEFAULT_ROLLOUT_TIMEOUT),
                ),
            ),
            (
                "timeout",
                duration("Timeout of each API request.", Some(DEFAULT_TIMEOUT)),
            ),
        ];
        for field in INLINE_FIELDS {
            let description = "Never written in a playbook: name a variable holding the \
                               kubeconfig path in `kubeconfig_env`.";
            properties.push((field, rejected(description)));
        }
        let schema = super::super::kind_schema(
            "kubernetes",
            "Keys of a Secret's data, in one namespace or many, with optional restarts of \
             the workloads that read it.",
            properties,
            &["secret_name", "set"],
        );
        let namespaces = exactly_one(&["namespace", "namespaces", "namespace_selector"]);
        with_rules(schema, vec![namespaces])
    }
}

/// Reads `namespace`, `namespaces` or `namespace_selector`: exactly one of
/// them must be set.
fn decode_namespaces(reader: &mut MapReader<'_>, cx: &mut Cx) -> NamespaceChoice {
    let one = reader.value("namespace");
    let list = reader.value("namespaces");
    let selector = reader.value("namespace_selector");
    let given = [one, list, selector].iter().flatten().count();
    if given != 1 {
        let node = one.or(list).or(selector).unwrap_or(reader.node());
        let message = if given == 0 {
            "missing the namespace of the Secret"
        } else {
            "`namespace`, `namespaces` and `namespace_selector` exclude each other"
        };
        cx.error_hint(
            node,
            reader.path(),
            message,
            "set exactly one of `namespace: NAME`, `namespaces: [NAME, ...]` or `namespace_selector: LABEL=VALUE`",
        );
        return NamespaceChoice::List(Vec::new());
    }

    if let Some(node) = one {
        let path = reader.path_of("namespace");
        let name = String::decode(node, &path, cx).unwrap_or_default();
        check_namespace(node, &path, &name, cx);
        return NamespaceChoice::One(name);
    }

    if let Some(node) = list {
        let path = reader.path_of("namespaces");
        let names = Vec::<String>::decode(node, &path, cx).unwrap_or_default();
        if names.is_empty() && matches!(node.value, Value::Sequence(_)) {
            cx.error_hint(node, &path, "no namespaces", "list at least one namespace");
        }
        for (index, name) in names.iter().enumerate() {
            check_namespace(node, &path.index(index), name, cx);
            if names[..index].contains(name) {
                cx.error(
                    node,
                    &path.index(index),
                    format!("namespace {name:?} is listed twice"),
                );
            }
        }
        return NamespaceChoice::List(names);
    }

    let path = reader.path_of("namespace_selector");
    let text = selector
        .and_then(|node| String::decode(node, &path, cx))
        .unwrap_or_default();
    if text.trim().is_empty()
        && let Some(node) = selector
    {
        cx.error_hint(
            node,
            &path,
            "the namespace selector is empty",
            "give a label selector such as `team=payments`; an empty one would match every namespace",
        );
    }
    NamespaceChoice::Selector(text.trim().to_string())
}

fn decode_set(reader: &mut MapReader<'_>, cx: &mut Cx) -> BTreeMap<String, String> {
    let Some(node) = reader.value("set") else {
        cx.error_hint(
            reader.node(),
            reader.path(),
            "missing required field `set`",
            "map Secret data keys to key fields, for example `set: {API_KEY: secret}`",
        );
        return BTreeMap::new();
    };
    let path = reader.path_of("set");
    let set = decode_field_map(node, &path, cx);
    for key in set.keys() {
        if !is_secret_key(key) {
            cx.error_hint(
                node,
                &path.key(key),
                format!("invalid Secret data key {key:?}"),
                "use letters, digits, '-', '_' and '.', at most 253 characters",
            );
        }
    }
    set
}

/// Reads `restart:`, a list of `KIND/NAME` strings or of mappings with
/// `workload: KIND/NAME` and `namespace: NAME`.
fn decode_restarts(
    node: &Node,
    path: &FieldPath,
    namespaces: &NamespaceChoice,
    cx: &mut Cx,
) -> Vec<RestartSpec> {
    let Value::Sequence(items) = &node.value else {
        cx.error(
            node,
            path,
            format!("expected a list, found {}", node.kind_name()),
        );
        return Vec::new();
    };
    let mut restarts: Vec<RestartSpec> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = path.index(index);
        let Some(restart) = decode_restart(item, &item_path, namespaces, cx) else {
            continue;
        };
        if restarts.contains(&restart) {
            cx.error(
                item,
                &item_path,
                format!("{} is listed twice", restart.workload),
            );
            continue;
        }
        restarts.push(restart);
    }
    restarts
}

fn decode_restart(
    node: &Node,
    path: &FieldPath,
    namespaces: &NamespaceChoice,
    cx: &mut Cx,
) -> Option<RestartSpec> {
    if let Value::Scalar(_) = node.value {
        let text = String::decode(node, path, cx)?;
        let workload = parse_workload(node, path, &text, cx)?;
        return Some(RestartSpec {
            workload,
            namespace: None,
        });
    }
    let mut reader = MapReader::new(node, path, cx)?;
    let text: String = reader.required("workload", cx);
    let workload_path = reader.path_of("workload");
    let workload = reader
        .value("workload")
        .and_then(|value| parse_workload(value, &workload_path, &text, cx));
    let namespace: Option<String> = reader.optional("namespace", cx);
    if let (Some(name), Some(value)) = (&namespace, reader.value("namespace")) {
        let namespace_path = reader.path_of("namespace");
        check_namespace(value, &namespace_path, name, cx);
        let listed = match namespaces {
            NamespaceChoice::One(one) => one == name,
            NamespaceChoice::List(list) => list.contains(name),
            // Checked when the selector is evaluated.
            NamespaceChoice::Selector(_) => true,
        };
        if !listed {
            cx.error_hint(
                value,
                &namespace_path,
                format!("namespace {name:?} is not a namespace of this target"),
                "restart workloads only in the namespaces the Secret is written to",
            );
        }
    }
    reader.finish(cx);
    Some(RestartSpec {
        workload: workload?,
        namespace,
    })
}

fn parse_workload(node: &Node, path: &FieldPath, text: &str, cx: &mut Cx) -> Option<WorkloadRef> {
    let hint = "write KIND/NAME with KIND deployment, statefulset or daemonset, for example `deployment/web`";
    let Some((kind, name)) = text.split_once('/') else {
        cx.error_hint(node, path, format!("invalid workload {text:?}"), hint);
        return None;
    };
    let Some(kind) = WorkloadKind::parse(kind) else {
        cx.error_hint(
            node,
            path,
            format!("keywheel cannot restart a {kind:?}"),
            hint,
        );
        return None;
    };
    if !is_dns_subdomain(name) {
        cx.error_hint(
            node,
            path,
            format!("invalid {} name {name:?}", kind.as_str()),
            "use lower-case letters, digits, '-' and '.', at most 253 characters",
        );
        return None;
    }
    Some(WorkloadRef {
        kind,
        name: name.to_string(),
    })
}

fn check_namespace(node: &Node, path: &FieldPath, name: &str, cx: &mut Cx) {
    if !is_dns_label(name) {
        cx.error_hint(
            node,
            path,
            format!("invalid namespace {name:?}"),
            "use lower-case letters, digits and '-', at most 63 characters, starting and ending with a letter or digit",
        );
    }
}

/// Checks that `name` is an RFC 1123 label, as namespace names must be.
pub fn is_dns_label(name: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(alphanumeric)
        && name.ends_with(alphanumeric)
        && name.chars().all(|c| alphanumeric(c) || c == '-')
}

/// Checks that `name` is an RFC 1123 subdomain, as Secret and workload
/// names must be.
fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// Checks that `key` is a valid key of a Secret's `data`.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::playbook::decode::Diagnostic;
    use crate::playbook::yaml;

    fn decode(text: &str) -> (KubernetesSpec, Vec<Diagnostic>) {
        let root = yaml::parse(text).unwrap();
        let mut cx = Cx::new(std::path::PathBuf::from("."));
        cx.key_fields = vec!["secret".into(), "id".into()];
        let mut reader = MapReader::new(&root, &FieldPath::root(), &mut cx).unwrap();
        let spec = KubernetesSpec::decode(&mut reader, &mut cx);
        reader.finish(&mut cx);
        (spec, cx.diagnostics)
    }

    #[test]
    fn full_spec_decodes() {
        let (spec, diagnostics) = decode(
            "namespaces: [team-a, team-b]
secret_name: app-secret
set: {API_KEY: secret}
kubeconfig_env: DEMO_KUBECONFIG
context: dev
restart:
  - deployment/web
  - workload: sts/db
    namespace: team-b
rollout_timeout: 2m
",
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert!(
            matches!(&spec.namespaces, NamespaceChoice::List(list) if list == &["team-a", "team-b"])
        );
        assert_eq!(
            spec.access.kubeconfig_env.as_deref(),
            Some("DEMO_KUBECONFIG")
        );
        assert_eq!(spec.access.context.as_deref(), Some("dev"));
        assert_eq!(spec.restart.len(), 2);
        assert_eq!(spec.restart[0].workload.to_string(), "deployment/web");
        assert_eq!(spec.restart[0].namespace, None);
        assert_eq!(spec.restart[1].workload.kind, WorkloadKind::StatefulSet);
        assert_eq!(spec.restart[1].namespace.as_deref(), Some("team-b"));
        assert_eq!(spec.rollout_timeout, Duration::from_secs(120));
    }

    #[test]
    fn namespace_fields_exclude_each_other() {
        let (_, diagnostics) =
            decode("namespace: a\nnamespace_selector: team=x\nsecret_name: s\nset: {K: secret}\n");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(diagnostics[0].message.contains("exclude each other"));
        let (_, diagnostics) = decode("secret_name: s\nset: {K: secret}\n");
        assert!(diagnostics[0].message.contains("missing the namespace"));
    }

    #[test]
    fn invalid_names_are_reported() {
        let (_, diagnostics) = decode(
            "namespaces: [Team_A, ok, ok]
secret_name: App
set: {'bad key': secret}
restart: [pod/x, deployment/Web, {workload: deployment/y, namespace: other}]
",
        );
        let messages: Vec<&str> = diagnostics.iter().map(|d| d.message.as_str()).collect();
        for expected in [
            "invalid namespace \"Team_A\"",
            "namespace \"ok\" is listed twice",
            "invalid Secret name \"App\"",
            "invalid Secret data key \"bad key\"",
            "keywheel cannot restart a \"pod\"",
            "invalid deployment name \"Web\"",
            "namespace \"other\" is not a namespace of this target",
        ] {
            assert!(messages.contains(&expected), "{expected}: {messages:?}");
        }
    }

    #[test]
    fn inline_credentials_are_rejected() {
        let (_, diagnostics) =
            decode("namespace: a\nsecret_name: s\nset: {K: secret}\ntoken: abc\n");
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(
            diagnostics[0]
                .message
                .contains("cannot be written in a playbook")
        );
    }

    #[test]
    fn workload_kinds_take_kubectl_names() {
        for (text, kind) in [
            ("Deployment", WorkloadKind::Deployment),
            ("deploy", WorkloadKind::Deployment),
            ("statefulsets", WorkloadKind::StatefulSet),
            ("ds", WorkloadKind::DaemonSet),
        ] {
            assert_eq!(WorkloadKind::parse(text), Some(kind), "{text}");
        }
        assert_eq!(WorkloadKind::parse("pod"), None);
    }
}
