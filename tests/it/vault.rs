//! The vault target against a real OpenBao dev server, with a fault proxy in
//! between where a test needs to see or disturb the requests.

use std::time::Duration;

use crate::support::proxy::{Fault, FaultProxy, Rule};
use crate::support::vault::Vault;
use crate::support::{EXIT_ATTENTION, EXIT_FAILED, EXIT_OK, TestEnv, unique};

fn playbook(mount: &str, path: &str, create: bool) -> String {
    format!(
        "version: 1
name: {name}
issuer:
  type: random
  prefix: sk_live_
targets:
  - name: vault-app
    type: vault
    mount: {mount}
    path: {path}
    create: {create}
    set:
      api_key: secret
",
        name = unique("v")
    )
}

fn env_for(vault_addr: &str) -> TestEnv {
    let vault = Vault::from_env();
    let mut env = TestEnv::new();
    env.env("VAULT_ADDR", vault_addr);
    env.env("VAULT_TOKEN", &vault.token);
    env.secret(&vault.token);
    env
}

fn new_mount(vault: &Vault, version: u8) -> String {
    let mount = unique("kv");
    vault.enable_kv(&mount, version);
    mount
}

#[test]
fn rotation_keeps_other_fields_and_writes_with_cas() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    vault.require_cas(&mount);
    vault.put(
        &mount,
        "app",
        &[
            ("api_key", "sk_live_original_000000000"),
            ("db_host", "db.internal"),
        ],
    );
    let proxy = FaultProxy::start(&vault.addr);
    let env = env_for(&proxy.url);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", false));

    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);

    let (version, data) = vault.get(&mount, "app");
    env.secret(&data["api_key"]);
    assert_eq!(version, 2);
    assert!(data["api_key"].starts_with("sk_live_"));
    assert_ne!(data["api_key"], "sk_live_original_000000000");
    assert_eq!(data["db_host"], "db.internal");

    let writes = proxy.seen_matching("POST", &format!("^/v1/{mount}/data/app$"));
    assert_eq!(writes.len(), 1, "{writes:?}");
    let body: serde_json::Value = serde_json::from_slice(&writes[0].body).unwrap();
    assert_eq!(
        body["options"]["cas"], 1,
        "write must carry cas on the preflight version"
    );
}

#[test]
fn kv_version_1_mount_fails_before_a_key_exists() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 1);
    let env = env_for(&vault.addr);
    std::fs::write(env.path("app.env"), "KEY=old\n").unwrap();
    let text = playbook(&mount, "app", true)
        + "  - name: env\n    type: dotenv\n    path: app.env\n    set:\n      KEY: secret\n";
    let path = env.playbook("v.yaml", &text);

    let run = env.keywheel(&["run", "--json", path.to_str().unwrap()]);
    run.assert_code(EXIT_FAILED);
    assert!(run.stderr.contains("KV version 1"), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "failed");
    assert!(report["new_key_id"].is_null(), "a key was generated");
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        "KEY=old\n"
    );
}

#[test]
fn path_inside_a_mount_is_a_configuration_error() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    let env = env_for(&vault.addr);
    let path = env.playbook("v.yaml", &playbook(&format!("{mount}/team"), "app", true));
    let run = env.keywheel(&["run", path.to_str().unwrap()]);
    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr
            .contains(&format!("the path is inside mount {mount}/")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("does not exist"),
        "reported as a missing secret: {}",
        run.stderr
    );
}

#[test]
fn paths_are_built_exactly() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    let proxy = FaultProxy::start(&vault.addr);
    for secret in ["dataface/test", "data/foo"] {
        let env = env_for(&proxy.url);
        let path = env.playbook("v.yaml", &playbook(&mount, secret, true));
        env.keywheel(&["run", path.to_str().unwrap()])
            .assert_code(EXIT_OK);
        let expected = format!("/v1/{mount}/data/{secret}");
        let writes = proxy.seen_matching("POST", &format!("^{expected}$"));
        assert_eq!(
            writes.len(),
            1,
            "no write at {expected}: {:?}",
            proxy
                .seen()
                .iter()
                .map(|s| s.target.clone())
                .collect::<Vec<_>>()
        );
        let (_, data) = vault.get(&mount, secret);
        env.secret(&data["api_key"]);
    }
}

/// Crashes a run right after its preflight record, so that a resume pushes
/// with the version preflight saw.
fn crash_after_preflight(env: &TestEnv, path: &std::path::Path) -> String {
    env.keywheel_crashing("after:2", &["run", path.to_str().unwrap()])
        .assert_killed();
    env.keywheel(&["history", "--json"]).json()["runs"][0]["run_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn soft_deleted_version_is_retried_with_cas() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    vault.require_cas(&mount);
    let proxy = FaultProxy::start(&vault.addr);
    let env = env_for(&proxy.url);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", true));
    let run_id = crash_after_preflight(&env, &path);

    for n in 1..=3 {
        vault.put(
            &mount,
            "app",
            &[("api_key", &format!("someone-else-{n}-0000000"))],
        );
    }
    vault.soft_delete(&mount, "app", &[3]);

    env.keywheel(&["resume", &run_id]).assert_code(EXIT_OK);

    let writes = proxy.seen_matching("POST", &format!("^/v1/{mount}/data/app$"));
    let cas: Vec<u64> = writes
        .iter()
        .map(|w| {
            serde_json::from_slice::<serde_json::Value>(&w.body).unwrap()["options"]["cas"]
                .as_u64()
                .expect("every write carries cas")
        })
        .collect();
    assert_eq!(
        cas,
        [0, 3],
        "refused create-only write, then one retry on the deleted version"
    );
    let (version, data) = vault.get(&mount, "app");
    env.secret(&data["api_key"]);
    assert_eq!(version, 4);
    assert!(data["api_key"].starts_with("sk_live_"));
}

#[test]
fn live_concurrent_write_stops_the_push() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    let proxy = FaultProxy::start(&vault.addr);
    let env = env_for(&proxy.url);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", true));
    let run_id = crash_after_preflight(&env, &path);

    vault.put(
        &mount,
        "app",
        &[("api_key", "someone-else-wrote-this-0000")],
    );

    let run = env.keywheel(&["resume", &run_id]);
    run.assert_code(EXIT_ATTENTION);
    assert!(
        run.stderr.contains("changed since preflight"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("someone else changed vault-app after preflight, so keywheel left it alone"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("0 of 1 target(s)"), "{}", run.stderr);
    assert!(run.stderr.contains("1 left alone"), "{}", run.stderr);
    assert!(
        run.stderr.contains("warning vault-app: left version"),
        "{}",
        run.stderr
    );
    let status = env.keywheel(&["status", &run_id, "--json"]).json();
    assert_eq!(status["runs"][0]["targets"][0]["status"], "left_alone");
    assert!(
        !run.stderr.contains("every target holds its previous value"),
        "{}",
        run.stderr
    );
    let (version, data) = vault.get(&mount, "app");
    assert_eq!(version, 1, "the other writer's version was overwritten");
    assert_eq!(data["api_key"], "someone-else-wrote-this-0000");
    for write in proxy.seen_matching("POST", &format!("^/v1/{mount}/data/app$")) {
        let body: serde_json::Value = serde_json::from_slice(&write.body).unwrap();
        assert!(
            body["options"]["cas"].is_u64(),
            "a write without cas: {body}"
        );
    }
}

#[test]
fn throttled_write_waits_for_retry_after() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    vault.put(&mount, "app", &[("api_key", "sk_live_original_000000000")]);
    let proxy = FaultProxy::start(&vault.addr);
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("^/v1/{mount}/data/app$"),
        1,
        Fault::Status {
            status: 429,
            retry_after: Some("2".into()),
            body: "{\"errors\":[\"rate limit quota exceeded\"]}".into(),
        },
    ));
    let env = env_for(&proxy.url);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", false));

    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);

    let writes = proxy.seen_matching("POST", &format!("^/v1/{mount}/data/app$"));
    assert_eq!(writes.len(), 2, "one refused write and one retry");
    let waited = writes[1].at.duration_since(writes[0].at);
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    assert_eq!(
        writes[0].body, writes[1].body,
        "the retry must repeat the same request, same cas and same key"
    );
    let (_, data) = vault.get(&mount, "app");
    env.secret(&data["api_key"]);
}

#[test]
fn server_errors_back_off_without_retry_after() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    vault.put(&mount, "app", &[("api_key", "sk_live_original_000000000")]);
    let proxy = FaultProxy::start(&vault.addr);
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("^/v1/{mount}/data/app$"),
        2,
        Fault::Status {
            status: 503,
            retry_after: None,
            body: "{\"errors\":[\"Vault is sealed\"]}".into(),
        },
    ));
    let env = env_for(&proxy.url);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", false));
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let writes = proxy.seen_matching("POST", &format!("^/v1/{mount}/data/app$"));
    assert_eq!(writes.len(), 3);
    let first_gap = writes[1].at.duration_since(writes[0].at);
    let second_gap = writes[2].at.duration_since(writes[1].at);
    assert!(first_gap >= Duration::from_millis(100), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(200), "{second_gap:?}");
    let (_, data) = vault.get(&mount, "app");
    env.secret(&data["api_key"]);
}

#[test]
fn persistent_failure_rolls_back_other_targets() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    vault.put(&mount, "app", &[("api_key", "sk_live_original_000000000")]);
    let proxy = FaultProxy::start(&vault.addr);
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("^/v1/{mount}/data/app$"),
        100,
        Fault::Status {
            status: 500,
            retry_after: None,
            body: "{\"errors\":[\"internal error\"]}".into(),
        },
    ));
    let env = env_for(&proxy.url);
    std::fs::write(env.path("app.env"), "API_KEY=sk_live_original_000000000\n").unwrap();
    let text = playbook(&mount, "app", false)
        + "  - name: env\n    type: dotenv\n    path: app.env\n    set:\n      API_KEY: secret\npolicy:\n  concurrency: 1\n";
    let path = env.playbook("v.yaml", &text);
    let run = env.keywheel(&["run", "--json", path.to_str().unwrap()]);
    run.assert_code(EXIT_FAILED);
    let report = run.json();
    assert_eq!(report["status"], "rolled_back");
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        "API_KEY=sk_live_original_000000000\n"
    );
    assert_eq!(
        vault.get(&mount, "app").1["api_key"],
        "sk_live_original_000000000"
    );
    let attempts = proxy
        .seen_matching("POST", &format!("^/v1/{mount}/data/app$"))
        .len();
    assert!(
        (2..=10).contains(&attempts),
        "retries must be bounded: {attempts}"
    );
}

#[test]
fn garbage_answers_are_clear_errors() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    vault.put(&mount, "app", &[("api_key", "sk_live_original_000000000")]);
    let cases = [
        (
            200,
            "<html><body>Welcome to nginx!</body></html>",
            "not JSON",
        ),
        (502, "<html><body>Bad Gateway</body></html>", "502"),
        (200, "{\"data\": {\"path\": 7}}", "there is no mount"),
    ];
    for (status, body, expected) in cases {
        let proxy = FaultProxy::start(&vault.addr);
        proxy.inject(Rule::new(
            Some("GET"),
            "^/v1/sys/internal/ui/mounts/",
            100,
            Fault::Status {
                status,
                retry_after: None,
                body: body.into(),
            },
        ));
        let env = env_for(&proxy.url);
        let path = env.playbook("v.yaml", &playbook(&mount, "app", false));
        let run = env.keywheel(&["run", "--json", path.to_str().unwrap()]);
        run.assert_code(EXIT_FAILED);
        assert!(
            run.stderr.contains(expected),
            "{expected:?} missing:\n{}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(
            !run.stderr.contains("<html>"),
            "raw HTML printed: {}",
            run.stderr
        );
        assert_eq!(run.json()["status"], "failed");
        assert!(run.json()["new_key_id"].is_null());
    }
    assert_eq!(
        vault.get(&mount, "app").1["api_key"],
        "sk_live_original_000000000"
    );
}

#[test]
fn versioned_path_warning_is_a_configuration_error() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    vault.put(&mount, "app", &[("api_key", "sk_live_original_000000000")]);
    let proxy = FaultProxy::start(&vault.addr);
    // What Vault answers for a path a versioned K/V store cannot have.
    let body = "{\"errors\":[],\"warnings\":[\"Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API endpoints to use. If using the Vault CLI, use 'vault kv get' for this operation.\"]}";
    proxy.inject(Rule::new(
        Some("GET"),
        &format!("^/v1/{mount}/metadata/app$"),
        100,
        Fault::Status {
            status: 404,
            retry_after: None,
            body: body.into(),
        },
    ));
    let env = env_for(&proxy.url);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", true));
    let run = env.keywheel(&["run", "--json", path.to_str().unwrap()]);
    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains("invalid for a versioned K/V store"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("does not exist"), "{}", run.stderr);
    assert!(!run.stderr.contains("will be created"), "{}", run.stderr);
    assert!(run.json()["new_key_id"].is_null());
    assert_eq!(vault.current_version(&mount, "app"), 1);
}

#[test]
fn other_fields_keep_their_json_types() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    let body = serde_json::json!({"options": {"cas": 0}, "data": {
        "api_key": "sk_live_original_000000000",
        "port": 5432,
        "enabled": true,
        "nested": {"a": 1},
    }});
    let (status, _) = vault.request(
        reqwest::Method::POST,
        &format!("{mount}/data/app"),
        Some(body),
    );
    assert!(status < 300);
    let env = env_for(&vault.addr);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", false));
    env.keywheel_crashing("after:9", &["run", path.to_str().unwrap()])
        .assert_killed();

    let read = |what: &str| {
        let (_, answer) = vault.request(reqwest::Method::GET, &format!("{mount}/data/app"), None);
        let data = answer["data"]["data"].clone();
        assert_eq!(data["port"], 5432, "{what}: {data}");
        assert_eq!(data["enabled"], true, "{what}: {data}");
        assert_eq!(
            data["nested"],
            serde_json::json!({"a": 1}),
            "{what}: {data}"
        );
        data["api_key"].as_str().unwrap().to_string()
    };
    env.secret(&read("after the push"));

    env.keywheel(&["rollback", &env.last_run_id()])
        .assert_code(EXIT_OK);
    assert_eq!(read("after the rollback"), "sk_live_original_000000000");
}

#[test]
fn rollback_of_created_secret_keeps_other_writers_fields() {
    let vault = Vault::from_env();
    let mount = new_mount(&vault, 2);
    let env = env_for(&vault.addr);
    let path = env.playbook("v.yaml", &playbook(&mount, "app", true));
    env.keywheel_crashing("after:9", &["run", path.to_str().unwrap()])
        .assert_killed();
    let (_, data) = vault.get(&mount, "app");
    env.secret(&data["api_key"]);
    vault.put(
        &mount,
        "app",
        &[
            ("api_key", &data["api_key"]),
            ("db_password", "another-teams-value-0000"),
        ],
    );

    env.keywheel(&["rollback", &env.last_run_id()])
        .assert_code(EXIT_OK);

    let (version, data) = vault.get(&mount, "app");
    assert_eq!(version, 3, "the secret was deleted");
    assert_eq!(
        data.get("db_password").map(String::as_str),
        Some("another-teams-value-0000")
    );
    assert!(
        !data.contains_key("api_key"),
        "the new key stayed: {data:?}"
    );
}
