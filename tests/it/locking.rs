//! One run per playbook at a time: of many starts exactly one runs, a
//! lock left by a dead process is named and can be broken, and without
//! the lock check-and-set still stops the second writer.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::proxy::{Fault, FaultProxy, Gate, Rule};
use crate::support::vault::Vault;
use crate::support::{EXIT_ATTENTION, EXIT_LOCKED, EXIT_OK, TestEnv, unique};

/// Returns a playbook that rotates a random key into Vault secret `path`.
fn vault_playbook(path: &str) -> String {
    format!(
        "version: 1\nname: {}\nissuer:\n  type: random\ntargets:\n  - name: v\n    type: vault\n    mount: secret\n    path: {path}\n    set:\n      api_key: secret\n",
        unique("lock")
    )
}

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
    let text = vault_playbook(&path);
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
    let mut crashing = env.command(&["run", playbook.to_str().unwrap()]);
    crashing
        .env("KEYWHEEL_CRASH_AT", "before:1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = crashing.spawn().unwrap();
    let pid = child.id();
    env.record_output(child.wait_with_output().unwrap())
        .assert_killed();
    // The run never wrote a record, so only its lock names it.
    let lock: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.state_dir.join("locks/dead-lock.lock")).unwrap())
            .unwrap();
    let run_id = lock["run_id"].as_str().unwrap().to_string();
    let host = keywheel::host::hostname();
    assert_eq!(lock["pid"], pid);

    let run = env.keywheel(&["run", playbook.to_str().unwrap()]);
    run.assert_code(EXIT_LOCKED);
    let expected = format!("locked by run {run_id} (pid {pid} on {host}, process gone)");
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(run.stderr.contains("--break-lock"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        "KEY=original-value-0000\n",
        "a locked run changed the target"
    );

    let run = env.keywheel(&["run", "--break-lock", playbook.to_str().unwrap()]);
    run.assert_code(EXIT_OK);
    let expected = format!("breaking the lock of run {run_id} (pid {pid} on {host})");
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    assert!(
        !env.state_dir.join("locks/dead-lock.lock").exists(),
        "the lock outlived the run that broke it"
    );
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

/// Processes started at once for one playbook.
const STARTS: usize = 50;

#[test]
fn fifty_simultaneous_starts_run_once() {
    let vault = Vault::from_env();
    let proxy = FaultProxy::start(&vault.addr);
    let path = unique("many");
    vault.put("secret", &path, &[("api_key", "original-value-0000000")]);
    // The run that takes the lock stops at its first Vault call until
    // every other start has ended.
    let gate = Gate::default();
    proxy.inject(Rule::new(None, "^/v1/", 1, gate.fault()));
    let mut env = TestEnv::new();
    env.env("VAULT_ADDR", &proxy.url);
    env.env("VAULT_TOKEN", &vault.token);
    env.secret(&vault.token);
    let text = vault_playbook(&path);
    let playbook = env.playbook("many.yaml", &text);

    let barrier = std::sync::Barrier::new(STARTS);
    let children: Vec<Child> = std::thread::scope(|scope| {
        let spawned: Vec<_> = (0..STARTS)
            .map(|_| {
                let (env, barrier, playbook) = (&env, &barrier, &playbook);
                scope.spawn(move || {
                    let mut command = env.command(&["run", playbook.to_str().unwrap()]);
                    command.stdout(Stdio::piped()).stderr(Stdio::piped());
                    barrier.wait();
                    command.spawn().unwrap()
                })
            })
            .collect();
        spawned.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (mut running, mut ended) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut pending = children;
    while !pending.is_empty() && ended.len() < STARTS - 1 {
        assert!(Instant::now() < deadline, "the starts did not end");
        let mut still = Vec::new();
        for mut child in pending {
            match child.try_wait().unwrap() {
                Some(_) => ended.push(env.record_output(child.wait_with_output().unwrap())),
                None => still.push(child),
            }
        }
        pending = still;
        std::thread::sleep(Duration::from_millis(50));
    }
    running.extend(pending);
    assert_eq!(running.len(), 1, "not exactly one run went on");
    let run_id = env.last_run_id();

    for loser in &ended {
        loser.assert_code(EXIT_LOCKED);
        let expected = format!("locked by run {run_id} (pid ");
        assert!(loser.stderr.contains(&expected), "{}", loser.stderr);
    }
    let runs = std::fs::read_dir(env.state_dir.join("runs"))
        .unwrap()
        .count();
    assert_eq!(runs, 1, "a locked start created a run");
    let calls = proxy.seen().len();
    assert_eq!(calls, 1, "a locked start called Vault");

    gate.open();
    let winner = running.pop().unwrap();
    let winner = env.record_output(winner.wait_with_output().unwrap());
    winner.assert_code(EXIT_OK);
    let (version, data) = vault.get("secret", &path);
    assert_eq!(version, 2, "one new version, from the one run");
    env.secret(&data["api_key"]);
    let writes = proxy.seen_matching("POST", &format!("/data/{path}$"));
    assert_eq!(writes.len(), 1);
    let lookups = proxy.seen_matching("GET", "^/v1/sys/internal/ui/mounts/");
    assert_eq!(lookups.len(), 1, "more than one preflight");
}

#[test]
fn check_and_set_stops_second_writer() {
    let vault = Vault::from_env();
    let proxy = FaultProxy::start(&vault.addr);
    let path = unique("cas");
    vault.put("secret", &path, &[("api_key", "original-value-0000000")]);
    // Both runs write only once both have passed preflight: the second
    // write carries the version the first one replaced.
    let gate = Gate::default();
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("/data/{path}$"),
        2,
        gate.fault(),
    ));
    let text = vault_playbook(&path);
    // Two state directories, as on two hosts without a shared store: no
    // lock is shared.
    let envs: Vec<TestEnv> = (0..2)
        .map(|_| {
            let mut env = TestEnv::new();
            env.env("VAULT_ADDR", &proxy.url);
            env.env("VAULT_TOKEN", &vault.token);
            env.secret(&vault.token);
            env
        })
        .collect();
    let children: Vec<Child> = envs
        .iter()
        .map(|env| {
            let playbook = env.playbook("cas.yaml", &text);
            let mut command = env.command(&["run", "--json", playbook.to_str().unwrap()]);
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
            command.spawn().unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.seen_matching("POST", &format!("/data/{path}$")).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "both runs never reached the write"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    gate.open();
    let runs: Vec<_> = envs
        .iter()
        .zip(children)
        .map(|(env, child)| env.record_output(child.wait_with_output().unwrap()))
        .collect();

    let codes: Vec<Option<i32>> = runs.iter().map(|r| r.code).collect();
    let winner = codes.iter().position(|c| *c == Some(EXIT_OK));
    // The loser rolls back and leaves the winner's write alone, which
    // needs the operator's attention.
    let loser = codes.iter().position(|c| *c == Some(EXIT_ATTENTION));
    let (Some(winner), Some(loser)) = (winner, loser) else {
        panic!("expected one completed run and one rolled-back run: {codes:?}\n{runs:#?}");
    };
    assert!(
        runs[loser].stderr.contains("changed since preflight"),
        "{}",
        runs[loser].stderr
    );
    let loser_report = runs[loser].json();
    assert_eq!(loser_report["status"], "rolled_back");
    let (version, data) = vault.get("secret", &path);
    envs[0].secret(&data["api_key"]);
    envs[1].secret(&data["api_key"]);
    assert_eq!(version, 2, "only the winner's write went in");
    let winner_report = runs[winner].json();
    assert_eq!(winner_report["status"], "completed");
    assert_ne!(data["api_key"], "original-value-0000000");
    // The loser's restore leaves the winner's version alone.
    let target = &loser_report["targets"][0];
    assert_eq!(target["push"], "push_failed", "{loser_report}");
    assert_eq!(target["status"], "left_alone", "{loser_report}");
    assert!(
        target["detail"]
            .as_str()
            .unwrap()
            .contains("left version 2 alone"),
        "{loser_report}"
    );
    let writes = proxy.seen_matching("POST", &format!("/data/{path}$"));
    assert_eq!(writes.len(), 2, "the loser wrote again after the refusal");
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
    run.assert_code(EXIT_ATTENTION);
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
