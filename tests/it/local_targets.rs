//! Rotations into files and .env files, which need no server.

use std::os::unix::fs::PermissionsExt;

use crate::support::{EXIT_OK, TestEnv, dotenv_value};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

const PLAYBOOK: &str = "version: 1
name: local
issuer:
  type: random
  prefix: sk_test_
  length: 32
targets:
  - name: env
    type: dotenv
    path: app.env
    set:
      API_KEY: secret
  - name: json
    type: file
    format: json
    path: config.json
    set:
      /upstream/api_key: secret
  - name: raw
    type: file
    path: keys/api.key
    create: true
";

const ORIGINAL_ENV: &str = "# app settings\nexport DB_HOST=db.internal\nAPI_KEY=\"sk_test_original_value_000000\"  # rotated by keywheel\r\nEMPTY=\nLAST='x y'";

/// Spacing and number spellings that a rewrite of the document would change.
const ORIGINAL_JSON: &str = "{\"name\":\"app\",  \"timeout\": 1.50e1,\n  \"upstream\" : {\"url\": \"https://x\", \"api_key\": \"old\"}}\n";

#[test]
fn dotenv_rotation_changes_only_the_value() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), ORIGINAL_ENV).unwrap();
    std::fs::set_permissions(env.path("app.env"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::write(env.path("config.json"), ORIGINAL_JSON).unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);

    env.keywheel(&["run", playbook.to_str().unwrap()])
        .assert_code(EXIT_OK);

    let text = std::fs::read_to_string(env.path("app.env")).unwrap();
    let key = dotenv_value(&text, "API_KEY").unwrap();
    env.secret(&key);
    assert!(key.starts_with("sk_test_") && key.len() == 40, "{key}");
    let expected = ORIGINAL_ENV.replace("sk_test_original_value_000000", &key);
    assert_eq!(text, expected, "bytes other than the value changed");
    assert_eq!(mode(&env.path("app.env")), 0o640, "mode was not kept");

    let config = std::fs::read_to_string(env.path("config.json")).unwrap();
    let expected = ORIGINAL_JSON.replace("\"old\"", &format!("\"{key}\""));
    assert_eq!(config, expected, "bytes other than the JSON value changed");

    let raw = std::fs::read_to_string(env.path("keys/api.key")).unwrap();
    assert_eq!(raw, key, "raw file holds exactly the key");
    assert_eq!(
        mode(&env.path("keys/api.key")),
        0o600,
        "new file is private"
    );
}

#[test]
fn second_rotation_replaces_the_first() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "API_KEY=x\n").unwrap();
    std::fs::write(
        env.path("config.json"),
        "{\"upstream\": {\"api_key\": \"x\"}}",
    )
    .unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);
    env.keywheel(&["run", playbook.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let first = dotenv_value(
        &std::fs::read_to_string(env.path("app.env")).unwrap(),
        "API_KEY",
    )
    .unwrap();
    env.keywheel(&["run", playbook.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let second = dotenv_value(
        &std::fs::read_to_string(env.path("app.env")).unwrap(),
        "API_KEY",
    )
    .unwrap();
    env.secret(&first);
    env.secret(&second);
    assert_ne!(first, second);

    let history = env.keywheel(&["history", "--json"]);
    let runs = history.json()["runs"].as_array().unwrap().clone();
    assert_eq!(runs.len(), 2);
    assert!(runs.iter().all(|r| r["status"] == "completed"));
}

#[test]
fn missing_variable_without_create_fails_before_any_change() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "OTHER=1\n").unwrap();
    std::fs::write(env.path("config.json"), "{}").unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);
    let run = env.keywheel(&["run", playbook.to_str().unwrap()]);
    run.assert_code(crate::support::EXIT_FAILED);
    assert!(
        run.stderr.contains("has no variable API_KEY"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("create: true"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        "OTHER=1\n"
    );
    assert!(!env.path("keys/api.key").exists(), "a target was written");
    let status = env.keywheel(&["status", "--json"]).json();
    assert_eq!(status["runs"][0]["status"], "failed");
}

#[test]
fn missing_json_member_fails_preflight() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "API_KEY=x\n").unwrap();
    // A typo in the file, or in `set`, must not leave the old key in use.
    let config = "{\"upstream\": {\"apikey\": \"old-key-value-0000\"}}";
    std::fs::write(env.path("config.json"), config).unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);

    let run = env.keywheel(&["run", playbook.to_str().unwrap()]);

    run.assert_code(crate::support::EXIT_FAILED);
    assert!(
        run.stderr.contains("has no member /upstream/api_key"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("create: true"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(env.path("config.json")).unwrap(),
        config
    );
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        "API_KEY=x\n"
    );
}

#[test]
fn status_json_has_stable_fields() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "API_KEY=x\n").unwrap();
    std::fs::write(
        env.path("config.json"),
        "{\"upstream\": {\"api_key\": \"x\"}}",
    )
    .unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);
    let run = env.keywheel(&["run", "--json", playbook.to_str().unwrap()]);
    run.assert_code(EXIT_OK);
    let report = run.json();
    for field in [
        "run_id",
        "playbook",
        "status",
        "mode",
        "started_at",
        "updated_at",
        "host",
        "user",
        "message",
        "new_key_id",
        "old_key_id",
        "targets",
        "steps",
        "attention",
    ] {
        assert!(report.get(field).is_some(), "missing {field}: {report}");
    }
    assert_eq!(report["status"], "completed");
    assert_eq!(report["targets"].as_array().unwrap().len(), 3);
    assert!(
        report["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] == "pushed")
    );
    env.secret(
        &dotenv_value(
            &std::fs::read_to_string(env.path("app.env")).unwrap(),
            "API_KEY",
        )
        .unwrap(),
    );
}

#[test]
fn state_files_are_private() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "API_KEY=x\n").unwrap();
    std::fs::write(
        env.path("config.json"),
        "{\"upstream\": {\"api_key\": \"x\"}}",
    )
    .unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);
    env.keywheel(&["run", playbook.to_str().unwrap()])
        .assert_code(EXIT_OK);
    env.secret(
        &dotenv_value(
            &std::fs::read_to_string(env.path("app.env")).unwrap(),
            "API_KEY",
        )
        .unwrap(),
    );
    let files = env.state_files();
    assert!(!files.is_empty());
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn help_documents_exit_codes() {
    let env = TestEnv::new();
    let run = env.keywheel(&["--help"]);
    run.assert_code(EXIT_OK);
    for line in [
        "0  success",
        "1  the run failed",
        "2  bad usage",
        "3  the run is held",
        "4  locked",
        "130  interrupted",
    ] {
        assert!(
            run.stdout.contains(line),
            "{line:?} missing from help:\n{}",
            run.stdout
        );
    }
}

#[test]
fn rollback_leaves_a_deleted_file_alone() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "API_KEY=original-value-0000\n").unwrap();
    std::fs::write(
        env.path("config.json"),
        "{\"upstream\": {\"api_key\": \"old\"}}",
    )
    .unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);
    let path = playbook.to_str().unwrap();
    // A full run gives the number of records; the crash comes just
    // before the last one, when every target contains the new key.
    env.keywheel(&["run", path]).assert_code(EXIT_OK);
    let records = std::fs::read_to_string(env.journal(&env.last_run_id()))
        .unwrap()
        .lines()
        .count();
    std::fs::write(env.path("app.env"), "API_KEY=original-value-0000\n").unwrap();
    env.keywheel_crashing(&format!("after:{}", records - 1), &["run", path])
        .assert_killed();
    let run_id = env.last_run_id();
    let pushed = dotenv_value(
        &std::fs::read_to_string(env.path("app.env")).unwrap(),
        "API_KEY",
    )
    .unwrap();
    env.secret(&pushed);
    std::fs::remove_file(env.path("config.json")).unwrap();

    let rollback = env.keywheel(&["rollback", &run_id]);

    rollback.assert_code(crate::support::EXIT_ATTENTION);
    let removed = format!(
        "json: left alone: {} was deleted after the push",
        env.path("config.json").display()
    );
    assert!(rollback.stderr.contains(&removed), "{}", rollback.stderr);
    let status = env.keywheel(&["status", &run_id, "--json"]).json();
    let targets = status["runs"][0]["targets"].as_array().unwrap().clone();
    let json = targets.iter().find(|t| t["name"] == "json").unwrap();
    assert_eq!(json["status"], "left_alone");
    assert!(
        !env.path("config.json").exists(),
        "a deleted file came back"
    );
    let env_file = std::fs::read_to_string(env.path("app.env")).unwrap();
    assert_eq!(env_file, "API_KEY=original-value-0000\n");
}

#[test]
fn rollback_restores_json_member_after_other_edits() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "API_KEY=original-value-0000\n").unwrap();
    let config = "{\"upstream\": {\"api_key\": \"old-value-0000\"}, \"other\": 1}";
    std::fs::write(env.path("config.json"), config).unwrap();
    let playbook = env.playbook("local.yaml", PLAYBOOK);
    let path = playbook.to_str().unwrap();
    env.keywheel(&["run", path]).assert_code(EXIT_OK);
    let records = std::fs::read_to_string(env.journal(&env.last_run_id()))
        .unwrap()
        .lines()
        .count();
    let first = dotenv_value(
        &std::fs::read_to_string(env.path("app.env")).unwrap(),
        "API_KEY",
    )
    .unwrap();
    env.secret(&first);
    std::fs::write(env.path("app.env"), "API_KEY=original-value-0000\n").unwrap();
    std::fs::write(env.path("config.json"), config).unwrap();
    env.keywheel_crashing(&format!("after:{}", records - 1), &["run", path])
        .assert_killed();
    let run_id = env.last_run_id();
    let pushed = std::fs::read_to_string(env.path("config.json")).unwrap();
    env.secret(
        &dotenv_value(
            &std::fs::read_to_string(env.path("app.env")).unwrap(),
            "API_KEY",
        )
        .unwrap(),
    );
    // Someone changes another member while the run is unfinished.
    std::fs::write(
        env.path("config.json"),
        pushed.replace("\"other\": 1", "\"other\": 2"),
    )
    .unwrap();

    env.keywheel(&["rollback", &run_id]).assert_code(EXIT_OK);

    let restored = std::fs::read_to_string(env.path("config.json")).unwrap();
    assert_eq!(restored, config.replace("\"other\": 1", "\"other\": 2"));
    let status = env.keywheel(&["status", &run_id, "--json"]).json();
    let targets = status["runs"][0]["targets"].as_array().unwrap().clone();
    let json = targets.iter().find(|t| t["name"] == "json").unwrap();
    assert_eq!(json["status"], "restored");
}
