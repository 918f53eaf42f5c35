//! The http issuer against the example key service run as a real process:
//! attributes copied, propagation waited out, crashes between the create
//! and its journal record, malformed responses, and every revocation path.

use serde_json::{Value, json};

use crate::support::key_service::KeyService;
use crate::support::{
    EXIT_ATTENTION, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Run, TestEnv, dotenv_value, unique,
};

/// Playbook pieces that differ between tests.
pub struct Book<'a> {
    pub revocation: &'a str,
    pub verify: &'a str,
    pub extra_targets: &'a str,
}

impl Default for Book<'_> {
    fn default() -> Self {
        Self {
            revocation: "disable_then_delete",
            verify: "",
            extra_targets: "",
        }
    }
}

/// A probe with the new key, retried for up to `timeout`.
pub fn verify_section(timeout: &str) -> String {
    format!(
        "verify:
  base_url_env: KEYSERVICE_URL
  propagation_timeout: {timeout}
  probes:
    - name: models
      url: /v1/models
      headers:
        Authorization: \"Bearer {{{{ new.secret }}}}\"
      expect_status: 200
      expect_json:
        /object: list
"
    )
}

pub fn playbook(book: &Book) -> String {
    let revocable = match book.revocation {
        "delete_only" => "",
        _ => {
            "    disable:
      url: \"/v1/keys/{{ key.id }}/disable\"
    enable:
      url: \"/v1/keys/{{ key.id }}/enable\"
"
        }
    };
    format!(
        "version: 1
name: {name}
issuer:
  type: http
  base_url_env: KEYSERVICE_URL
  auth:
    token_env: KEYSERVICE_ADMIN_TOKEN
  revocation: {revocation}
  idempotency_header: Idempotency-Key
  run_tag: /metadata/keywheel_run
  old_key:
    match: {{field: secret, pointer: /prefix, prefix_length: 12}}
  operations:
    get:
      url: \"/v1/keys/{{{{ key.id }}}}\"
    list:
      url: /v1/keys
      items: /data
    create:
      url: /v1/keys
      body:
        name: \"{{{{ old.name }}}}\"
        scopes: \"{{{{ old.scopes }}}}\"
        rate_limit_per_minute: \"{{{{ old.rate_limit_per_minute }}}}\"
        monthly_quota: \"{{{{ old.monthly_quota }}}}\"
        ip_allowlist: \"{{{{ old.ip_allowlist }}}}\"
        expires_at: \"{{{{ old.expires_at }}}}\"
        metadata:
          keywheel_run: \"{{{{ run.id }}}}\"
      expect_status: 201
      pick: {{id: /id, secret: /secret}}
{revocable}    delete:
      url: \"/v1/keys/{{{{ key.id }}}}\"
      expect_status: 204
targets:
  - name: app-env
    type: dotenv
    path: app.env
    set:
      GATEWAY_API_KEY: secret
{extra_targets}{verify}",
        name = unique("gw"),
        revocation = book.revocation,
        extra_targets = book.extra_targets,
        verify = book.verify,
    )
}

pub const APP_ENV: &str = "# app\nGATEWAY_API_KEY={key}\nOTHER=1\n";

/// A test environment pointed at `service`, with the bootstrap key in
/// app.env.
pub fn env_for(service: &KeyService) -> TestEnv {
    let mut env = TestEnv::new();
    env.env("KEYSERVICE_URL", &service.url);
    env.env("KEYSERVICE_ADMIN_TOKEN", &service.admin_token);
    env.secret(&service.admin_token);
    env.secret(&service.bootstrap_secret);
    write_app_env(&env, &service.bootstrap_secret);
    env
}

pub fn write_app_env(env: &TestEnv, key: &str) {
    std::fs::write(env.path("app.env"), APP_ENV.replace("{key}", key)).unwrap();
}

pub fn app_env_key(env: &TestEnv) -> String {
    let text = std::fs::read_to_string(env.path("app.env")).unwrap();
    let key = dotenv_value(&text, "GATEWAY_API_KEY").unwrap();
    env.secret(&key);
    key
}

fn run(env: &TestEnv, text: &str, extra: &[&str]) -> Run {
    let path = env.playbook("gateway.yaml", text);
    let mut args = vec!["run", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.keywheel(&args)
}

/// The journal's events, in order.
pub fn journal_events(env: &TestEnv, run_id: &str) -> Vec<Value> {
    std::fs::read_to_string(env.journal(run_id))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line.split_once(' ').unwrap().1).unwrap())
        .collect()
}

/// Sequence number of the first event named `event` for `step`.
pub fn seq_of(events: &[Value], event: &str, step: Option<&str>) -> Option<u64> {
    events
        .iter()
        .find(|e| e["event"] == event && step.is_none_or(|s| e["step"] == s))
        .and_then(|e| e["seq"].as_u64())
}

fn ids(service: &KeyService) -> Vec<String> {
    service
        .keys()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn new_key_copies_scopes_limits_and_allowlist() {
    let service = KeyService::start();
    let attributes = json!({
        "name": "billing-app",
        "scopes": ["models:read", "chat:write"],
        "rate_limit_per_minute": 120,
        "monthly_quota": 5000,
        "ip_allowlist": ["127.0.0.1/32", "10.0.0.0/8"],
        "expires_at": "2031-01-01T00:00:00Z",
    });
    service.update(&service.bootstrap_id, attributes.clone());
    let env = env_for(&service);
    let text = playbook(&Book {
        verify: &verify_section("10s"),
        ..Book::default()
    });

    run(&env, &text, &["--yes"]).assert_code(EXIT_OK);

    let keys = service.keys();
    assert_eq!(keys.len(), 1, "the old key is still there: {keys:?}");
    let new = &keys[0];
    assert_ne!(new["id"], service.bootstrap_id.as_str());
    for name in [
        "name",
        "scopes",
        "rate_limit_per_minute",
        "monthly_quota",
        "ip_allowlist",
        "expires_at",
    ] {
        assert_eq!(new[name], attributes[name], "{name} was not copied");
    }
    assert_eq!(new["status"], "active");
    let secret = app_env_key(&env);
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        APP_ENV.replace("{key}", &secret)
    );
    assert_eq!(service.call_models(&secret), 200);
    assert_eq!(service.call_models(&service.bootstrap_secret), 401);
}

#[test]
fn propagation_delay_is_waited_out() {
    let service = KeyService::with_delay(2.0);
    let env = env_for(&service);
    let text = playbook(&Book {
        verify: &verify_section("20s"),
        ..Book::default()
    });

    let started = std::time::Instant::now();
    run(&env, &text, &["--yes"]).assert_code(EXIT_OK);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));

    let new_id = service.keys()[0]["id"].as_str().unwrap().to_string();
    assert!(
        service.calls(&new_id, 401) >= 3,
        "the probe should have been refused while the key propagated"
    );
    let run_id = env.last_run_id();
    let events = journal_events(&env, &run_id);
    let verified = seq_of(&events, "done", Some("verify")).expect("verify done");
    let first_push = seq_of(&events, "intent", Some("push:app-env")).expect("push");
    let revoke = seq_of(&events, "intent", Some("revoke")).expect("revoke");
    assert!(verified < first_push, "pushed before verification passed");
    assert!(verified < revoke, "revoked before verification passed");
    assert_eq!(service.call_models(&app_env_key(&env)), 200);
}

#[test]
fn propagation_timeout_deletes_new_key_only() {
    let service = KeyService::with_delay(120.0);
    let env = env_for(&service);
    let text = playbook(&Book {
        verify: &verify_section("2s"),
        ..Book::default()
    });

    let run = run(&env, &text, &["--yes", "--json"]);
    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr
            .contains("did not pass within the propagation timeout of 2s"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["status"], "rolled_back");

    assert_eq!(ids(&service), [service.bootstrap_id.as_str()]);
    let old = service.key(&service.bootstrap_id).unwrap();
    assert_eq!(old["status"], "active");
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
    let events = journal_events(&env, &env.last_run_id());
    assert!(seq_of(&events, "intent", Some("push:app-env")).is_none());
    assert!(seq_of(&events, "intent", Some("revoke")).is_none());
    assert!(seq_of(&events, "done", Some("delete-new")).is_some());
}

/// Runs until the process is killed just before the key_created record.
fn crash_before_key_record(env: &TestEnv, text: &str) -> String {
    let path = env.playbook("gateway.yaml", text);
    // run_started, preflight, intent generate, then key_created.
    env.keywheel_crashing("before:4", &["run", path.to_str().unwrap(), "--yes"])
        .assert_killed();
    env.last_run_id()
}

fn tagged_with(service: &KeyService, run_id: &str) -> Vec<Value> {
    service
        .keys()
        .into_iter()
        .filter(|k| k["metadata"]["keywheel_run"] == run_id)
        .collect()
}

#[test]
fn crash_after_create_then_resume_reuses_key() {
    let service = KeyService::start();
    let env = env_for(&service);
    let run_id = crash_before_key_record(&env, &playbook(&Book::default()));
    let created = tagged_with(&service, &run_id);
    assert_eq!(
        created.len(),
        1,
        "the create did not happen before the crash"
    );

    let resumed = env.keywheel(&["resume", &run_id, "--yes"]);
    resumed.assert_code(EXIT_OK);
    assert!(resumed.stderr.contains("Recovered"), "{}", resumed.stderr);

    let keys = service.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["id"], created[0]["id"], "a second key was made");
    assert_eq!(service.call_models(&app_env_key(&env)), 200);
}

#[test]
fn crash_after_create_then_rollback_deletes_key() {
    let service = KeyService::start();
    let env = env_for(&service);
    let run_id = crash_before_key_record(&env, &playbook(&Book::default()));
    assert_eq!(tagged_with(&service, &run_id).len(), 1);

    env.keywheel(&["rollback", &run_id]).assert_code(EXIT_OK);

    assert_eq!(ids(&service), [service.bootstrap_id.as_str()]);
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
    assert_eq!(service.call_models(&service.bootstrap_secret), 200);
}

#[test]
fn crash_and_lost_replay_cache_deletes_orphan() {
    let mut service = KeyService::start();
    let mut env = env_for(&service);
    let run_id = crash_before_key_record(&env, &playbook(&Book::default()));
    let orphan = tagged_with(&service, &run_id)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A restart empties the idempotency cache, so the replayed create
    // makes a new key; the orphan whose secret is lost must go.
    service.restart();
    env.env("KEYSERVICE_URL", &service.url);
    env.keywheel(&["resume", &run_id, "--yes"])
        .assert_code(EXIT_OK);

    let keys = service.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys[0]["id"], orphan.as_str());
    assert!(service.key(&orphan).is_none(), "the orphan is still there");
    assert_eq!(service.call_models(&app_env_key(&env)), 200);
}

#[test]
fn malformed_create_responses_fail_without_revoke() {
    let cases = [
        ("missing_id", 1, "has no id at \"/id\""),
        ("missing_secret", 1, "has no secret at \"/secret\""),
        ("html", 10, "an HTML page titled \"502 Bad Gateway\""),
        ("status500", 10, "unexpected status 500 (expected 201)"),
    ];
    for (mode, count, expected) in cases {
        let service = KeyService::start();
        let env = env_for(&service);
        service.fault("create", mode, count);

        let run = run(&env, &playbook(&Book::default()), &["--yes", "--json"]);
        run.assert_code(EXIT_FAILED);
        assert!(run.stderr.contains("create"), "{mode}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{mode}: {}", run.stderr);
        assert!(!run.stderr.contains("<html"), "{mode}: raw HTML shown");
        assert!(!run.stderr.contains("<!DOCTYPE"), "{mode}: raw HTML shown");

        assert_eq!(ids(&service), [service.bootstrap_id.as_str()], "{mode}");
        assert_eq!(
            service.key(&service.bootstrap_id).unwrap()["status"],
            "active",
            "{mode}"
        );
        assert_eq!(app_env_key(&env), service.bootstrap_secret, "{mode}");
        let events = journal_events(&env, &env.last_run_id());
        assert!(
            seq_of(&events, "intent", Some("revoke")).is_none(),
            "{mode}"
        );
    }
}

#[test]
fn html_error_page_at_preflight_changes_nothing() {
    let service = KeyService::start();
    let env = env_for(&service);
    service.fault("get", "html", 10);

    let run = run(&env, &playbook(&Book::default()), &["--yes", "--json"]);
    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains("get (GET http://127.0.0.1"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("an HTML page titled"), "{}", run.stderr);
    assert!(run.json()["new_key_id"].is_null());
    assert_eq!(ids(&service), [service.bootstrap_id.as_str()]);
}

#[test]
fn failed_disable_rolls_back_everything() {
    let service = KeyService::start();
    let env = env_for(&service);
    service.fault("disable", "status500", 10);

    let run = run(&env, &playbook(&Book::default()), &["--yes", "--json"]);
    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["status"], "rolled_back");
    assert!(run.stderr.contains("disable"), "{}", run.stderr);

    assert_eq!(ids(&service), [service.bootstrap_id.as_str()]);
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "active"
    );
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
}

#[test]
fn held_run_disables_then_resume_deletes() {
    let service = KeyService::start();
    let env = env_for(&service);
    let text = playbook(&Book::default());

    // No terminal and no --yes: the run stops before the point of no return.
    let held = run(&env, &text, &[]);
    held.assert_code(EXIT_ATTENTION);
    let old = service.key(&service.bootstrap_id).unwrap();
    assert_eq!(old["status"], "disabled");
    assert_eq!(service.call_models(&service.bootstrap_secret), 401);
    let new_secret = app_env_key(&env);
    assert_eq!(service.call_models(&new_secret), 200);

    let run_id = env.last_run_id();
    env.keywheel(&["resume", &run_id, "--yes"])
        .assert_code(EXIT_OK);
    assert!(service.key(&service.bootstrap_id).is_none());
    assert_eq!(service.keys().len(), 1);
}

#[test]
fn rollback_after_disable_enables_old_key() {
    let service = KeyService::start();
    let env = env_for(&service);
    let held = run(&env, &playbook(&Book::default()), &[]);
    held.assert_code(EXIT_ATTENTION);
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "disabled"
    );

    let run_id = env.last_run_id();
    env.keywheel(&["rollback", &run_id]).assert_code(EXIT_OK);

    assert_eq!(ids(&service), [service.bootstrap_id.as_str()]);
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "active"
    );
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
    assert_eq!(service.call_models(&service.bootstrap_secret), 200);
}

#[test]
fn delete_only_asks_before_deleting() {
    let service = KeyService::start();
    let env = env_for(&service);
    let text = playbook(&Book {
        revocation: "delete_only",
        ..Book::default()
    });

    let held = run(&env, &text, &[]);
    held.assert_code(EXIT_ATTENTION);
    assert!(
        held.stderr.contains("stopped before deleting the old key"),
        "{}",
        held.stderr
    );
    let old = service.key(&service.bootstrap_id).unwrap();
    assert_eq!(old["status"], "active", "delete-only must not disable");
    let run_id = env.last_run_id();
    let events = journal_events(&env, &run_id);
    assert!(seq_of(&events, "intent", Some("revoke")).is_none());

    env.keywheel(&["resume", &run_id, "--yes"])
        .assert_code(EXIT_OK);
    assert!(service.key(&service.bootstrap_id).is_none());
    assert_eq!(service.call_models(&service.bootstrap_secret), 401);
    let events = journal_events(&env, &run_id);
    assert!(seq_of(&events, "done", Some("retire")).is_some());
    assert!(seq_of(&events, "intent", Some("revoke")).is_none());
}

#[test]
fn revocation_not_confirmed_is_reported() {
    let service = KeyService::start();
    let env = env_for(&service);
    // Expects 403 where the service sends 401: the check cannot pass.
    let verify = format!(
        "{}  revoked:
    url: /v1/models
    headers:
      Authorization: \"Bearer {{{{ old.secret }}}}\"
    expect_status: 403
",
        verify_section("1s")
    );
    let text = playbook(&Book {
        verify: &verify,
        ..Book::default()
    });

    let run = run(&env, &text, &["--yes", "--json"]);
    run.assert_code(EXIT_OK);
    assert!(
        run.stderr.contains("revocation not confirmed"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("revocation not confirmed"),
        "{report}"
    );
    let events = journal_events(&env, &env.last_run_id());
    let failed = events
        .iter()
        .find(|e| e["event"] == "failed" && e["step"] == "confirm-revoked")
        .expect("a failed confirm-revoked record");
    assert_eq!(failed["class"], "not_confirmed");
}

#[test]
fn invalid_templates_are_reported_with_lines() {
    let env = TestEnv::new();
    let text = playbook(&Book {
        revocation: "delete_only",
        ..Book::default()
    })
    .replace("{{ old.scopes }}", "{{ new.secret }}")
    .replace(
        "{{ key.id }}\"\n      expect_status: 204",
        "{{ key.idd }}\"\n      expect_status: 204",
    )
    .replace("  idempotency_header: Idempotency-Key\n", "")
    .replace(
        "    delete:\n",
        "    disable:\n      url: /x\n    delete:\n",
    );
    let path = env.playbook("bad.yaml", &text);
    let run = env.keywheel(&["validate", path.to_str().unwrap()]);
    run.assert_code(EXIT_USAGE);
    let line_of = |needle: &str| {
        std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .position(|l| l.contains(needle))
            .unwrap()
            + 1
    };
    let scopes_line = line_of("{{ new.secret }}");
    assert!(
        run.stderr.contains(&format!(
            "bad.yaml:{scopes_line}:17: issuer.operations.create.body.scopes: {{{{ new.secret }}}} is not available in operations.create"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("unknown placeholder {{ key.idd }}"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("`revocation` is delete_only"),
        "{}",
        run.stderr
    );
}

/// Runs keywheel in a pseudo-terminal, answering each expected question.
fn in_terminal(env: &TestEnv, answers: &[(&str, &str)], args: &[&str]) -> Run {
    let inner = env.command(args);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pty_run.py");
    let mut outer = std::process::Command::new("python3");
    outer.arg(script).args(["--timeout", "30"]);
    for (expect, send) in answers {
        outer.args(["--expect", expect, "--send", send]);
    }
    outer
        .arg("--")
        .arg(inner.get_program())
        .args(inner.get_args());
    for (name, value) in inner.get_envs() {
        match value {
            Some(value) => outer.env(name, value),
            None => outer.env_remove(name),
        };
    }
    if let Some(dir) = inner.get_current_dir() {
        outer.current_dir(dir);
    }
    outer.stdin(std::process::Stdio::null());
    env.run_command(outer)
}

#[test]
fn delete_only_question_at_terminal() {
    let service = KeyService::start();
    let env = env_for(&service);
    let text = playbook(&Book {
        revocation: "delete_only",
        ..Book::default()
    });
    let path = env.playbook("gateway.yaml", &text);
    let question = "Delete old key key_[0-9a-f]+\\? The issuer cannot disable keys";

    let declined = in_terminal(&env, &[(question, "n")], &["run", path.to_str().unwrap()]);
    declined.assert_code(EXIT_ATTENTION);
    assert!(
        declined
            .stdout
            .contains("the operator declined to delete the old key"),
        "{}",
        declined.stdout
    );
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "active"
    );

    let run_id = env.last_run_id();
    in_terminal(&env, &[(question, "y")], &["resume", &run_id]).assert_code(EXIT_OK);
    assert!(service.key(&service.bootstrap_id).is_none());
    assert_eq!(service.keys().len(), 1);
}

#[test]
fn yes_skips_question_at_terminal() {
    let service = KeyService::start();
    let env = env_for(&service);
    let text = playbook(&Book {
        revocation: "delete_only",
        ..Book::default()
    });
    let path = env.playbook("gateway.yaml", &text);

    let run = in_terminal(&env, &[], &["run", "--yes", path.to_str().unwrap()]);

    run.assert_code(EXIT_OK);
    assert!(
        !run.stdout.contains("[y/N]"),
        "asked although --yes was given: {}",
        run.stdout
    );
    assert!(service.key(&service.bootstrap_id).is_none());
    assert_eq!(service.call_models(&app_env_key(&env)), 200);
}

#[test]
fn create_answering_old_key_id_changes_nothing() {
    let service = KeyService::start();
    let env = env_for(&service);
    // A create whose answer is the key in use, as a wrong `pick` or an API
    // that regenerates a key in place would give.
    let text = playbook(&Book::default())
        .replace(
            "      url: /v1/keys\n      body:",
            "      method: GET\n      url: \"/v1/keys/{{ old.id }}\"\n      body:",
        )
        .replace(
            "      expect_status: 201\n      pick: {id: /id, secret: /secret}",
            "      expect_status: 200\n      pick: {id: /id, secret: /prefix}",
        );
    assert!(text.contains("pick: {id: /id, secret: /prefix}"), "{text}");

    let run = run(&env, &text, &["--yes", "--json"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr
            .contains("answered create with the id of the key in use"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["status"], "failed");
    assert_eq!(ids(&service), [service.bootstrap_id.as_str()]);
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "active"
    );
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
}

#[test]
fn failed_reenable_keeps_targets_on_new_key() {
    let service = KeyService::start();
    let env = env_for(&service);
    // No terminal and no --yes: held before retire, old key disabled.
    run(&env, &playbook(&Book::default()), &[]).assert_code(EXIT_ATTENTION);
    let new_key = app_env_key(&env);
    service.fault("enable", "status500", 50);

    let run_id = env.last_run_id();
    let rollback = env.keywheel(&["rollback", &run_id]);

    rollback.assert_code(EXIT_ATTENTION);
    assert!(
        rollback.stderr.contains("the targets keep the new key"),
        "{}",
        rollback.stderr
    );
    assert_eq!(
        app_env_key(&env),
        new_key,
        "a target got the disabled old key"
    );
    assert_eq!(service.call_models(&new_key), 200);
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "disabled"
    );
}

#[test]
fn ctrl_c_at_question_stops_with_message() {
    let service = KeyService::start();
    let env = env_for(&service);
    let text = playbook(&Book {
        revocation: "delete_only",
        ..Book::default()
    });
    let path = env.playbook("gateway.yaml", &text);
    let question = "Delete old key key_[0-9a-f]+\\?";

    let run = in_terminal(
        &env,
        &[(question, "\u{3}")],
        &["run", path.to_str().unwrap()],
    );

    assert_eq!(run.code, Some(130), "{}", run.stdout);
    let run_id = env.last_run_id();
    assert!(
        run.stdout
            .contains(&format!("interrupted: run {run_id} is unfinished")),
        "{}",
        run.stdout
    );
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "active"
    );
    env.keywheel(&["rollback", &run_id]).assert_code(EXIT_OK);
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
}

#[test]
fn failed_retire_can_still_roll_back() {
    let service = KeyService::start();
    let env = env_for(&service);
    service.fault("delete", "status500", 20);
    let failed = run(&env, &playbook(&Book::default()), &["--yes"]);
    failed.assert_code(EXIT_ATTENTION);
    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "disabled"
    );
    service.reset_faults();

    env.keywheel(&["rollback", &env.last_run_id()])
        .assert_code(EXIT_OK);

    assert_eq!(
        service.key(&service.bootstrap_id).unwrap()["status"],
        "active"
    );
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
    assert_eq!(service.call_models(&service.bootstrap_secret), 200);
}

#[test]
fn create_without_secret_deletes_the_key_it_made() {
    let service = KeyService::start();
    let env = env_for(&service);
    service.fault("create", "missing_secret", 1);
    // Without a run tag, only the create's own answer names the key.
    let text = playbook(&Book::default()).replace("  run_tag: /metadata/keywheel_run\n", "");
    assert!(!text.contains("run_tag"));

    let run = run(&env, &text, &["--yes", "--json"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains("keywheel deleted key"),
        "{}",
        run.stderr
    );
    assert_eq!(ids(&service), [service.bootstrap_id.as_str()]);
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
}

/// Writes `contents` to other.env, adds it as target `other-env` with the
/// `set` lines given, and returns the playbook's path.
fn with_other_env(env: &TestEnv, contents: &str, set: &str) -> std::path::PathBuf {
    std::fs::write(env.path("other.env"), contents).unwrap();
    let extra_targets = format!(
        "  - name: other-env
    type: dotenv
    path: other.env
    set:
{set}"
    );
    let text = playbook(&Book {
        extra_targets: &extra_targets,
        ..Book::default()
    });
    env.playbook("gateway.yaml", &text)
}

#[test]
fn targets_holding_different_keys_stop_at_preflight() {
    let service = KeyService::start();
    let env = env_for(&service);
    let path = with_other_env(
        &env,
        "GATEWAY_API_KEY=sk_other_value_0000000000\n",
        "      GATEWAY_API_KEY: secret\n",
    );

    let run = env.keywheel(&["run", path.to_str().unwrap(), "--yes"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr
            .contains("targets app-env and other-env hold different values for key field `secret`"),
        "{}",
        run.stderr
    );
    assert_eq!(service.keys().len(), 1, "a key was created");
    assert_eq!(app_env_key(&env), service.bootstrap_secret);
    let plan = env.keywheel(&["plan", path.to_str().unwrap()]);
    assert!(
        plan.stderr.contains("hold different values")
            || plan.stdout.contains("hold different values"),
        "{}{}",
        plan.stdout,
        plan.stderr
    );
}

#[test]
fn one_target_holding_two_keys_stops_at_preflight() {
    let service = KeyService::start();
    let env = env_for(&service);
    let contents = format!(
        "BACKUP_KEY=sk_other_value_0000000000\nGATEWAY_API_KEY={}\n",
        service.bootstrap_secret
    );
    let path = with_other_env(
        &env,
        &contents,
        "      GATEWAY_API_KEY: secret\n      BACKUP_KEY: secret\n",
    );

    let run = env.keywheel(&["run", path.to_str().unwrap(), "--yes"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr
            .contains("hold different values for key field `secret`"),
        "{}",
        run.stderr
    );
    assert_eq!(service.keys().len(), 1, "a key was created");
}

#[test]
fn held_id_of_another_key_stops_at_preflight() {
    let service = KeyService::start();
    let env = env_for(&service);
    let (other_id, other_secret) = service.create_key(serde_json::json!({"name": "other"}));
    env.secret(&other_secret);
    let path = with_other_env(&env, &format!("KEY_ID={other_id}\n"), "      KEY_ID: id\n");

    let run = env.keywheel(&["run", path.to_str().unwrap(), "--yes"]);

    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains(&format!(
            "key {other_id}, named by the id the targets hold, is not the key whose secret they hold"
        )),
        "{}",
        run.stderr
    );
    assert_eq!(service.keys().len(), 2, "a key was created");
    assert_eq!(
        service.key(&other_id).unwrap()["status"],
        "active",
        "the other key was touched"
    );
}
