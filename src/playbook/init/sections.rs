//! The sections `keywheel init` writes: the header, one issuer kind, the
//! targets, and the optional sections commented out.
//!
//! Each line is a pair of YAML text and the comment written after it.

use super::{Options, PLACEHOLDER, Writer, scalar};

pub(super) fn playbook(w: &mut Writer, options: &Options<'_>) {
    header(w, options);
    let name = format!("name: {}", scalar(options.name));
    w.fields(
        0,
        &[
            ("version: 1", "playbook format version"),
            (&name, "names the lock and the run history"),
        ],
    );
    w.optional(
        0,
        "description: API key of the billing service",
        "free text",
    );
    w.blank();

    match options.issuer {
        "random" => random(w),
        "http" => http(w),
        "command" => command(w),
        _ => aws_iam(w),
    }
    w.blank();

    let fields = key_fields(options.issuer);
    w.note(0, "Every place the new key is written to.");
    w.field(0, "targets:", "");
    let mut seen: Vec<&str> = Vec::new();
    for kind in options.targets {
        let count = seen.iter().filter(|k| *k == kind).count();
        seen.push(kind);
        // A kind named twice gets a second name and a second path.
        let suffix = match count {
            0 => String::new(),
            _ => format!("-{}", count + 1),
        };
        target(w, kind, &suffix, fields);
    }
    w.blank();

    policy(w);
    w.blank();
    verify(w, options.issuer, fields);
    w.blank();
    w.optional_block(0, watch);
    w.blank();
    w.optional_block(0, schedule);
}

fn header(w: &mut Writer, options: &Options<'_>) {
    let targets = options.targets.join(", ");
    w.note(
        0,
        &format!(
            "A keywheel playbook: the {} issuer and the targets {targets}.",
            options.issuer
        ),
    );
    w.note(
        0,
        &format!(
            "Written by `keywheel init`. Each field has a comment; commented-out fields \
             are optional and show their default or an example. Replace every \
             {PLACEHOLDER}: `keywheel validate` warns about each one left, and checks \
             the playbook without contacting anything. Secrets never go in a playbook: \
             fields ending in _env name the environment variable that holds one."
        ),
    );
    w.note(
        0,
        "For completion and checking in an editor with the YAML language server, \
         run `keywheel schema > keywheel.schema.json` and put this line, without the \
         first \"# \", at the top:",
    );
    w.note(0, "# yaml-language-server: $schema=keywheel.schema.json");
}

/// Returns the key fields of an issuer kind, `id` aside.
fn key_fields(issuer: &str) -> &'static [&'static str] {
    match issuer {
        "aws_iam" => &["access_key_id", "secret_access_key"],
        _ => &["secret"],
    }
}

fn random(w: &mut Writer) {
    w.fields(
        0,
        &[
            ("issuer:", "where new keys come from"),
            (
                "  type: random",
                "drawn from the OS random number generator; field `secret`",
            ),
            (
                "  length: 40",
                "random characters after the prefix (default 40)",
            ),
            (
                "  alphabet: alphanumeric",
                "lower, upper, digits, alphanumeric, hex, base64url, symbols, or a list",
            ),
        ],
    );
    w.optionals(
        2,
        &[
            ("prefix: sk_live_", "written before the random part"),
            ("exclude: \"0OIl\"", "characters never used"),
        ],
    );
}

fn http(w: &mut Writer) {
    w.fields(
        0,
        &[
            ("issuer:", "where new keys come from"),
            ("  type: http", "keys made through a service's admin API"),
        ],
    );
    w.note(
        2,
        "The requests below drive examples/key_service.py from keywheel's source, \
         which the dev stack runs: describe your API's the same way. {{ key.id }}, \
         {{ old.NAME }} and {{ run.id }} are filled in for each request.",
    );
    w.fields(
        2,
        &[
            (
                "base_url_env: KEYSERVICE_URL",
                "variable holding the base URL (or base_url: https://...)",
            ),
            ("auth:", "how requests authenticate"),
            (
                "  token_env: KEYSERVICE_ADMIN_TOKEN",
                "variable holding the admin token (or token_file: PATH)",
            ),
        ],
    );
    w.optionals(
        4,
        &[
            (
                "header: Authorization",
                "header that carries the token (default)",
            ),
            ("scheme: Bearer", "written before the token (default)"),
        ],
    );
    w.optional(2, "timeout: 30s", "timeout of each request (default)");
    w.fields(
        2,
        &[
            (
                "revocation: disable_then_delete",
                "or delete_only, for an API that cannot disable keys",
            ),
            (
                "idempotency_header: Idempotency-Key",
                "sent on every create: a create repeated after a crash returns the same key",
            ),
            (
                "run_tag: /metadata/keywheel_run",
                "where a listed key holds the run id the create gave it",
            ),
            ("old_key:", "how the key in use is found"),
            (
                "  match:",
                "the listed key that matches what the targets hold",
            ),
            ("    field: secret", "key field read from the targets"),
            (
                "    pointer: /prefix",
                "member of a listed key compared with it",
            ),
            (
                "    prefix_length: 12",
                "compare only this many leading characters",
            ),
        ],
    );
    http_operations(w);
}

/// Writes the operations of an `http` issuer.
fn http_operations(w: &mut Writer) {
    w.fields(
        2,
        &[
            ("operations:", "one templated request per operation"),
            ("  get:", "reads one key"),
            (
                "    url: \"/v1/keys/{{ key.id }}\"",
                "method: GET (default)",
            ),
            ("  list:", "lists the keys"),
            ("    url: /v1/keys", "a path, or an absolute URL"),
            (
                "    items: /data",
                "JSON pointer of the list in the response",
            ),
            ("  create:", "makes the new key"),
            ("    url: /v1/keys", "method: POST (default)"),
            (
                "    body:",
                "sent as JSON; the new key keeps the old key's settings",
            ),
            (
                "      name: \"{{ old.name }}\"",
                "an attribute of the key in use",
            ),
            (
                "      scopes: \"{{ old.scopes }}\"",
                "a list is inserted as a list",
            ),
            ("      metadata:", ""),
            (
                "        keywheel_run: \"{{ run.id }}\"",
                "read back through run_tag",
            ),
            ("    expect_status: 201", "default: 200 or 201"),
            ("    pick:", "key fields taken from the response"),
            ("      id: /id", ""),
            ("      secret: /secret", ""),
            ("  disable:", "revoke: disables the old key"),
            (
                "    url: \"/v1/keys/{{ key.id }}/disable\"",
                "method: POST (default)",
            ),
            ("  enable:", "rollback: enables it again"),
            (
                "    url: \"/v1/keys/{{ key.id }}/enable\"",
                "method: POST (default)",
            ),
            (
                "  delete:",
                "retire: deletes the old key; a rollback the new one",
            ),
            (
                "    url: \"/v1/keys/{{ key.id }}\"",
                "method: DELETE (default)",
            ),
            ("    expect_status: 204", "default: 200, 202 or 204"),
        ],
    );
    w.optional(
        6,
        "absent_status: 404",
        "statuses that mean already deleted (default)",
    );
}

fn command(w: &mut Writer) {
    w.fields(
        0,
        &[
            ("issuer:", "where new keys come from"),
            (
                "  type: command",
                "a local program does each operation, JSON on stdin and stdout",
            ),
        ],
    );
    w.note(
        2,
        "examples/key_service_command.py in keywheel's source is such a program, for \
         the example key service that the dev stack runs.",
    );
    let program = format!("program: ./{PLACEHOLDER}");
    w.field(2, &program, "relative to this playbook, or a name on PATH");
    w.optionals(
        2,
        &[
            ("args: [--verbose]", "fixed arguments; never secrets"),
            (
                "timeout: 30s",
                "per call; the program and its children are killed after it",
            ),
        ],
    );
    w.fields(
        2,
        &[
            (
                "revocation: disable_then_delete",
                "or delete_only, where keys cannot be disabled",
            ),
            (
                "fields: [secret]",
                "key fields the program returns (default)",
            ),
            (
                "pass_env: [KEYSERVICE_URL]",
                "variables the program gets; it has only PATH besides",
            ),
            (
                "credential_env: KEYSERVICE_ADMIN_TOKEN",
                "variable holding a credential sent on stdin (or credential_file: PATH)",
            ),
        ],
    );
}

fn aws_iam(w: &mut Writer) {
    w.fields(
        0,
        &[
            ("issuer:", "where new keys come from"),
            (
                "  type: aws_iam",
                "a new IAM access key: fields access_key_id and secret_access_key",
            ),
        ],
    );
    w.note(
        2,
        "AWS credentials come from the standard chain (environment, profile, SSO, a \
         role), never from a playbook.",
    );
    let user = format!("user: {PLACEHOLDER}");
    w.field(2, &user, "the IAM user whose access key rotates");
    w.optional(
        2,
        "propagation_timeout: 60s",
        "how long sts:GetCallerIdentity is retried (default)",
    );
    aws_settings(w, 2);
}

fn aws_settings(w: &mut Writer, indent: usize) {
    w.optionals(
        indent,
        &[
            ("region: us-east-1", "default: the standard AWS chain"),
            ("profile: rotation", "a profile of the AWS config files"),
            (
                "endpoint_url_env: AWS_ENDPOINT_URL",
                "variable holding an endpoint URL, for emulators",
            ),
            ("timeout: 30s", "timeout of each HTTP attempt (default)"),
        ],
    );
}

fn target(w: &mut Writer, kind: &str, suffix: &str, fields: &[&str]) {
    let name = match kind {
        "file" => "key-file",
        "dotenv" => "app-env",
        "vault" => "vault-secret",
        "kubernetes" => "k8s-secret",
        _ => "aws-secret",
    };
    let entry = format!("- name: {name}{suffix}");
    w.field(2, &entry, "unique among the targets");
    match kind {
        "file" => file(w, suffix, fields),
        "dotenv" => dotenv(w, suffix, fields),
        "vault" => vault(w, suffix, fields),
        "kubernetes" => kubernetes(w, fields),
        _ => aws_secret(w, fields),
    }
}

/// Writes `set:` with one entry per key field, named by `slot`.
fn set(w: &mut Writer, comment: &str, fields: &[&str], slot: fn(&str) -> String) {
    w.field(4, "set:", comment);
    for field in fields {
        w.field(6, &format!("{}: {field}", slot(field)), "");
    }
}

/// Returns the variable or Secret data key for a key field: `API_KEY` for
/// `secret`.
fn upper_slot(field: &str) -> String {
    match field {
        "secret" => "API_KEY".into(),
        other => format!("AWS_{}", other.to_ascii_uppercase()),
    }
}

/// Returns the JSON member or secret field for a key field: `api_key` for
/// `secret`.
fn lower_slot(field: &str) -> String {
    match field {
        "secret" => "api_key".into(),
        other => other.into(),
    }
}

/// Writes `create: false`; with true, preflight creates `what` where it
/// is missing instead of failing.
fn create(w: &mut Writer, what: &str) {
    w.field(4, "create: false", &format!("true: add {what} if missing"));
}

fn mode(w: &mut Writer) {
    w.optional(
        4,
        "mode: \"0600\"",
        "mode of a file keywheel creates (default)",
    );
}

fn file(w: &mut Writer, suffix: &str, fields: &[&str]) {
    let path = format!("path: {PLACEHOLDER}/api{suffix}.key");
    w.fields(
        4,
        &[
            (
                "type: file",
                "the whole file is a key field, or JSON members are",
            ),
            (&path, "relative to this playbook's directory"),
        ],
    );
    if let [field] = fields {
        let field = format!("field: {field}");
        w.field(4, &field, "the key field written (default secret)");
        w.optional(
            4,
            "trailing_newline: true",
            "end the file with a newline (default false)",
        );
    } else {
        w.field(
            4,
            "format: json",
            "members of a JSON document (default raw)",
        );
        let comment = "member name or JSON pointer <- key field; others are kept";
        set(w, comment, fields, lower_slot);
    }
    create(w, "the file");
    mode(w);
}

fn dotenv(w: &mut Writer, suffix: &str, fields: &[&str]) {
    let path = format!("path: {PLACEHOLDER}/app{suffix}.env");
    w.fields(
        4,
        &[
            (
                "type: dotenv",
                "variables in a .env file; other lines are kept",
            ),
            (&path, "relative to this playbook's directory"),
        ],
    );
    set(w, "variable <- key field", fields, upper_slot);
    create(w, "the file or variables");
    mode(w);
}

fn vault(w: &mut Writer, suffix: &str, fields: &[&str]) {
    let path = format!("path: {PLACEHOLDER}/app{suffix}");
    w.fields(
        4,
        &[
            ("type: vault", "a KV version 2 secret in OpenBao or Vault"),
            ("mount: secret", "the KV version 2 mount"),
            (&path, "the secret inside the mount"),
        ],
    );
    let comment = "field in the secret <- key field; others are kept";
    set(w, comment, fields, lower_slot);
    w.fields(
        4,
        &[
            (
                "address_env: VAULT_ADDR",
                "variable holding the address (default)",
            ),
            (
                "token_env: VAULT_TOKEN",
                "variable holding the token (default)",
            ),
        ],
    );
    create(w, "the secret or fields");
    w.optionals(
        4,
        &[
            (
                "namespace: team-a",
                "Vault Enterprise namespace (default $VAULT_NAMESPACE)",
            ),
            (
                "ca_cert: vault-ca.pem",
                "CA of the server (default $VAULT_CACERT)",
            ),
            ("timeout: 30s", "timeout of each request (default)"),
        ],
    );
}

fn kubernetes(w: &mut Writer, fields: &[&str]) {
    let namespace = format!("namespace: {PLACEHOLDER}");
    let secret_name = format!("secret_name: {PLACEHOLDER}");
    w.fields(
        4,
        &[
            ("type: kubernetes", "keys of a Kubernetes Secret's data"),
            (
                &namespace,
                "or namespaces: [a, b], or namespace_selector: team=x",
            ),
            (&secret_name, "the Secret"),
        ],
    );
    let comment = "data key <- key field; other keys are kept";
    set(w, comment, fields, upper_slot);
    create(w, "the Secret or keys");
    let restart = format!("restart: [deployment/{PLACEHOLDER}]");
    w.optionals(
        4,
        &[
            (
                "kubeconfig_env: APP_KUBECONFIG",
                "variable holding a kubeconfig path (default KUBECONFIG)",
            ),
            (
                "context: production",
                "kubeconfig context (default: the current one)",
            ),
            (&restart, "restarted once every target holds the new key"),
            (
                "rollout_timeout: 5m",
                "how long the restarts may take (default)",
            ),
            ("timeout: 30s", "timeout of each API request (default)"),
        ],
    );
}

fn aws_secret(w: &mut Writer, fields: &[&str]) {
    let secret_id = format!("secret_id: {PLACEHOLDER}");
    w.fields(
        4,
        &[
            ("type: aws_secret", "a secret in AWS Secrets Manager"),
            (&secret_id, "name or ARN; the secret must exist"),
        ],
    );
    let comment = "JSON field <- key field (or field: / binary: for the whole value)";
    set(w, comment, fields, upper_slot);
    create(w, "JSON fields; the secret must exist");
    aws_settings(w, 4);
}

fn policy(w: &mut Writer) {
    w.fields(
        0,
        &[
            ("policy:", "run-wide settings"),
            (
                "  on_partial_failure: rollback",
                "or hold: keep pushed targets and wait for `keywheel resume`",
            ),
            (
                "  concurrency: 16",
                "targets pushed at the same time (default)",
            ),
            (
                "  target_timeout: 5m",
                "time limit of one target's call (default)",
            ),
        ],
    );
}

fn verify(w: &mut Writer, issuer: &str, fields: &[&str]) {
    if issuer == "aws_iam" {
        w.note(
            0,
            "The aws_iam issuer checks the new key itself. Probes of your own service \
             can be added under `verify:`.",
        );
        return;
    }
    let field = fields.first().copied().unwrap_or("secret");
    w.note(
        0,
        "Requests that show the service accepts the new key, after generate and \
         after push, retried until propagation_timeout; and one that shows it refuses \
         the old key once revoked.",
    );
    w.optional_block(0, |w| verify_block(w, field));
}

fn verify_block(w: &mut Writer, field: &str) {
    let new_key = format!("Authorization: \"Bearer {{{{ new.{field} }}}}\"");
    let old_key = format!("Authorization: \"Bearer {{{{ old.{field} }}}}\"");
    w.optionals(
        0,
        &[
            ("verify:", ""),
            ("  base_url_env: KEYSERVICE_URL", "or base_url: https://..."),
            (
                "  propagation_timeout: 30s",
                "how long a failing probe is retried (default)",
            ),
            ("  timeout: 10s", "timeout of each request (default)"),
        ],
    );
    w.optionals(
        2,
        &[
            ("probes:", "made with the new key"),
            ("  - name: new-key-works", "names the probe in output"),
            (
                "    url: /v1/models",
                "a path joined to base_url, or an absolute URL",
            ),
            ("    headers:", "request headers"),
            (&format!("      {new_key}"), ""),
            ("    expect_status: 200", "default"),
            (
                "    after: [generate, push]",
                "when it runs (default: both)",
            ),
        ],
    );
    w.optionals(
        2,
        &[
            ("revoked:", "made with the old key once it is revoked"),
            ("  url: /v1/models", "as in a probe; no name and no after"),
            ("  headers:", "request headers"),
            (&format!("    {old_key}"), ""),
            ("  expect_status: 401", "the old key is refused"),
        ],
    );
}

fn watch(w: &mut Writer) {
    w.note(
        0,
        "Error rates sampled after the push, and again after the old key is \
         disabled; a breach rolls the run back. Prometheus is read from $PROMETHEUS_URL.",
    );
    w.optionals(
        0,
        &[
            ("watch:", ""),
            (
                "  on_inconclusive: rollback",
                "a window without a clear pass; or hold",
            ),
            ("  queries:", "Prometheus checks"),
            ("    - name: error-ratio", "names the check"),
            ("      query: >-", "PromQL, run as an instant query"),
            (
                "        (sum(rate(http_requests_total{code=~\"5..\"}[1m])) or vector(0))",
                "",
            ),
            ("        / sum(rate(http_requests_total[1m]))", ""),
            (
                "      max: 0.05",
                "or max_increase / max_ratio against a baseline",
            ),
            ("      interval: 15s", "time between samples (default)"),
            ("      duration: 5m", "length of the window (default)"),
        ],
    );
}

fn schedule(w: &mut Writer) {
    w.optionals(
        0,
        &[
            (
                "max_age: 90d",
                "`run --if-due` and `keywheel due` rotate once the key is this old",
            ),
            ("notify:", "webhooks told of a run's start and end"),
            (
                "  - webhook_env: SLACK_WEBHOOK_URL",
                "variable holding the URL",
            ),
            (
                "    events: [failure, rollback, needs_attention]",
                "default: all",
            ),
            ("    format: slack", "or json: the whole run report"),
            ("emergency:", "how `keywheel run --emergency` revokes"),
            (
                "  revoke: after_push",
                "or before_push, for a leak that is being abused",
            ),
        ],
    );
}
