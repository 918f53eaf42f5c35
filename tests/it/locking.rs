//! One run per playbook at a time.

use std::time::{Duration, Instant};

use crate::support::proxy::{Fault, FaultProxy, Rule};
use crate::support::vault::Vault;
use crate::support::{EXIT_LOCKED, EXIT_OK, TestEnv, unique};

fn slow_vault_playbook(env: &mut TestEnv, vault: &Vault, proxy: &FaultProxy) -> std::path::PathBuf {
    let path = unique("lock");
    vault.put("secret", &path, &[("api_key", "original-value-0000000")]);
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("/data/{path}$"),
        1,
        Fault::Delay(Duration::from_millis(1500)),
    ));
    env.env("VAULT_ADDR", &proxy.url);
    env.env("VAULT_TOKEN", &vault.token);
    env.secret(&vault.token);
    let text = format!(
        "version: 1\nname: {}\nissuer:\n  type: random\ntargets:\n  - name: v\n    type: vault\n    mount: secret\n    path: {path}\n    set:\n      api_key: secret\n",
        unique("lock")
    );
    env.playbook("lock.yaml", &text)
}

#[test]
fn second_run_exits_locked_naming_the_first() {
    let vault = Vault::from_env();
    let proxy = FaultProxy::start(&vault.addr);
    let mut env = TestEnv::new();
    let playbook = slow_vault_playbook(&mut env, &vault, &proxy);

    let first = env
        .command(&["run", playbook.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let locks = env.state_dir.join("locks");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "first run never took the lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = env.keywheel(&["run", playbook.to_str().unwrap()]);
    let first = env.record_output(first.wait_with_output().unwrap());

    first.assert_code(EXIT_OK);
    second.assert_code(EXIT_LOCKED);
    let run_id = env.last_run_id();
    assert!(
        second.stderr.contains(&format!("locked by run {run_id}")),
        "{}",
        second.stderr
    );
    let runs = std::fs::read_dir(env.state_dir.join("runs"))
        .unwrap()
        .count();
    assert_eq!(runs, 1, "the second run must not start a run");
}

#[test]
fn lock_of_dead_process_needs_break_lock() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "KEY=original-value-0000\n").unwrap();
    let playbook = env.playbook("d.yaml", "version: 1\nname: dead-lock\nissuer:\n  type: random\ntargets:\n  - name: env\n    type: dotenv\n    path: app.env\n    set:\n      KEY: secret\n");
    // Killed after taking the lock and before writing any record.
    env.keywheel_crashing("before:1", &["run", playbook.to_str().unwrap()])
        .assert_killed();

    let run = env.keywheel(&["run", playbook.to_str().unwrap()]);
    run.assert_code(EXIT_LOCKED);
    assert!(run.stderr.contains("process gone"), "{}", run.stderr);
    assert!(run.stderr.contains("--break-lock"), "{}", run.stderr);

    let run = env.keywheel(&["run", "--break-lock", playbook.to_str().unwrap()]);
    run.assert_code(EXIT_OK);
    assert!(run.stderr.contains("breaking the lock"), "{}", run.stderr);
    env.secret(
        &crate::support::dotenv_value(
            &std::fs::read_to_string(env.path("app.env")).unwrap(),
            "KEY",
        )
        .unwrap(),
    );
}

#[test]
fn unfinished_run_blocks_a_new_one() {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), "KEY=original-value-0000\n").unwrap();
    let playbook = env.playbook("u.yaml", "version: 1\nname: unfinished\nissuer:\n  type: random\ntargets:\n  - name: env\n    type: dotenv\n    path: app.env\n    set:\n      KEY: secret\n");
    env.keywheel_crashing("after:6", &["run", playbook.to_str().unwrap()])
        .assert_killed();
    let run_id = env.last_run_id();

    let run = env.keywheel(&["run", "--break-lock", playbook.to_str().unwrap()]);
    run.assert_code(EXIT_LOCKED);
    assert!(
        run.stderr.contains(&format!("unfinished run {run_id}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("keywheel resume"), "{}", run.stderr);

    env.keywheel(&["rollback", &run_id]).assert_code(EXIT_OK);
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        "KEY=original-value-0000\n"
    );
    env.keywheel(&["run", playbook.to_str().unwrap()])
        .assert_code(EXIT_OK);
    env.secret(
        &crate::support::dotenv_value(
            &std::fs::read_to_string(env.path("app.env")).unwrap(),
            "KEY",
        )
        .unwrap(),
    );
}

#[test]
fn check_and_set_stops_a_run_without_the_lock() {
    // Two hosts without a shared store: each has its own state directory,
    // so each takes its own lock on the same playbook.
    let vault = Vault::from_env();
    let path = unique("race");
    vault.put("secret", &path, &[("api_key", "original-value-0000000")]);
    let text = format!(
        "version: 1\nname: race\nissuer:\n  type: random\ntargets:\n  - name: v\n    type: vault\n    mount: secret\n    path: {path}\n    set:\n      api_key: secret\n  - name: env\n    type: dotenv\n    path: app.env\n    set:\n      KEY: secret\npolicy:\n  concurrency: 1\n"
    );
    let hosts: Vec<TestEnv> = (0..2)
        .map(|_| {
            let mut env = TestEnv::new();
            env.env("VAULT_ADDR", &vault.addr);
            env.env("VAULT_TOKEN", &vault.token);
            env.secret(&vault.token);
            std::fs::write(env.path("app.env"), "KEY=original-value-0000\n").unwrap();
            env
        })
        .collect();
    let (winner, loser) = (&hosts[0], &hosts[1]);
    let loser_book = loser.playbook("race.yaml", &text);
    let winner_book = winner.playbook("race.yaml", &text);

    // The loser checks the secret first, then the winner rotates it.
    loser
        .keywheel_crashing("after:2", &["run", loser_book.to_str().unwrap()])
        .assert_killed();
    winner
        .keywheel(&["run", winner_book.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let winner_key = vault.get("secret", &path).1["api_key"].clone();
    winner.secret(&winner_key);

    let run = loser.keywheel(&["resume", "--json"]);
    run.assert_code(crate::support::EXIT_FAILED);
    assert!(
        run.stderr.contains("changed since preflight"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["status"], "rolled_back");
    assert_eq!(
        vault.get("secret", &path).1["api_key"],
        winner_key,
        "the loser overwrote the winner"
    );
    assert_eq!(
        std::fs::read_to_string(loser.path("app.env")).unwrap(),
        "KEY=original-value-0000\n"
    );
    let pushed_env = run.json()["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["step"] == "push:env");
    assert!(!pushed_env, "the loser pushed after check-and-set failed");
}
