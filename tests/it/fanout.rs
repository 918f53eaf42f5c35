//! Runs over many targets: a summary instead of a line per target, every
//! failure named, complete `--json`, and targets that time out.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::support::proxy::{Fault, FaultProxy, Rule};
use crate::support::vault::Vault;
use crate::support::{EXIT_ATTENTION, EXIT_FAILED, EXIT_OK, TestEnv, unique};

const ORIGINAL: &str = "sk_live_original_000000000";

/// Builds a playbook with `dotenv` dotenv targets and `vault` Vault
/// targets under `mount`, followed by `policy`.
fn playbook(dotenv: usize, mount: &str, vault: usize, policy: &str) -> String {
    let mut text = format!(
        "version: 1\nname: {}\nissuer:\n  type: random\n  prefix: sk_live_\ntargets:\n",
        unique("fan")
    );
    for index in 0..dotenv {
        let _ = write!(
            text,
            "  - name: env-{index}\n    type: dotenv\n    path: env-{index}.env\n    set:\n      API_KEY: secret\n"
        );
    }
    for index in 0..vault {
        let _ = write!(
            text,
            "  - name: vault-{index}\n    type: vault\n    mount: {mount}\n    path: app-{index}\n    set:\n      api_key: secret\n"
        );
    }
    text + policy
}

/// Creates a test environment whose Vault targets go through `proxy`, with
/// `dotenv` .env files and `count` secrets under a new mount, each
/// containing [`ORIGINAL`]. Returns it with the mount.
fn setup(vault: &Vault, proxy: &FaultProxy, dotenv: usize, count: usize) -> (TestEnv, String) {
    let mount = unique("kv");
    vault.enable_kv(&mount, 2);
    for index in 0..count {
        vault.put(&mount, &format!("app-{index}"), &[("api_key", ORIGINAL)]);
    }
    let mut env = TestEnv::new();
    env.env("VAULT_ADDR", &proxy.url);
    env.env("VAULT_TOKEN", &vault.token);
    env.secret(&vault.token);
    for index in 0..dotenv {
        std::fs::write(
            env.path(&format!("env-{index}.env")),
            format!("API_KEY={ORIGINAL}\n"),
        )
        .unwrap();
    }
    (env, mount)
}

/// Returns the words of the table row that starts with `kind`.
fn table_row(stderr: &str, kind: &str) -> Vec<String> {
    let line = stderr
        .lines()
        .find(|line| line.split_whitespace().next() == Some(kind))
        .unwrap_or_else(|| panic!("no table row for {kind}:\n{stderr}"));
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn many_targets_print_a_summary() {
    let vault = Vault::from_env();
    let proxy = FaultProxy::start(&vault.addr);
    let (env, mount) = setup(&vault, &proxy, 120, 10);
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("^/v1/{mount}/data/app-[357]$"),
        3,
        Fault::Status {
            status: 403,
            retry_after: None,
            body: "{\"errors\":[\"permission denied\"]}".into(),
        },
    ));
    let text = playbook(120, &mount, 10, "policy:\n  on_partial_failure: hold\n");
    let path = env.playbook("many.yaml", &text);

    let run = env.keywheel(&["run", "--json", path.to_str().unwrap()]);
    run.assert_code(EXIT_ATTENTION);

    let lines = run.stderr.lines().count();
    assert!(lines < 40, "{lines} lines for 130 targets:\n{}", run.stderr);
    assert!(
        run.stderr
            .contains(" push       write 130 target(s) (120 dotenv, 10 vault), read each back"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("env-17:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("Pushed 127 of 130 target(s) in "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(", 3 failed"), "{}", run.stderr);
    assert_eq!(
        table_row(&run.stderr, "KIND")[..4],
        ["KIND", "PUSHED", "FAILED", "SKIPPED"]
    );
    assert_eq!(table_row(&run.stderr, "dotenv")[1..4], ["120", "0", "0"]);
    assert_eq!(table_row(&run.stderr, "vault")[1..4], ["7", "3", "0"]);
    for name in ["vault-3", "vault-5", "vault-7"] {
        let line = format!("error {name}: push failed: ");
        assert!(run.stderr.contains(&line), "{name}:\n{}", run.stderr);
    }

    let report = run.json();
    let targets = report["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 130, "--json lists every target");
    let failed: Vec<&str> = targets
        .iter()
        .filter(|t| t["status"] == "push_failed")
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["vault-3", "vault-5", "vault-7"]);
    assert!(targets.iter().take(120).all(|t| t["kind"] == "dotenv"));
    assert!(targets.iter().skip(120).all(|t| t["kind"] == "vault"));

    // The proxy's rule is used up, so resume pushes the three and counts
    // the others as done before.
    let resumed = env.keywheel(&["resume"]);
    resumed.assert_code(EXIT_OK);
    assert!(
        resumed.stderr.contains("Pushed 3 target(s) in "),
        "{}",
        resumed.stderr
    );
    assert!(
        resumed.stderr.contains("127 skipped as done before"),
        "{}",
        resumed.stderr
    );
    assert_eq!(
        table_row(&resumed.stderr, "dotenv")[1..4],
        ["0", "0", "120"]
    );
    assert_eq!(table_row(&resumed.stderr, "vault")[1..4], ["3", "0", "7"]);
    let (_, data) = vault.get(&mount, "app-5");
    env.secret(&data["api_key"]);
    assert_ne!(data["api_key"], ORIGINAL);
}

#[test]
fn verbose_prints_a_line_per_target() {
    let vault = Vault::from_env();
    let proxy = FaultProxy::start(&vault.addr);
    let (env, mount) = setup(&vault, &proxy, 3, 0);
    let path = env.playbook("three.yaml", &playbook(3, &mount, 0, ""));

    let quiet = env.keywheel(&["run", path.to_str().unwrap()]);
    quiet.assert_code(EXIT_OK);
    assert!(!quiet.stderr.contains("env-1:"), "{}", quiet.stderr);

    let verbose = env.keywheel(&["run", "-v", path.to_str().unwrap()]);
    verbose.assert_code(EXIT_OK);
    for index in 0..3 {
        let checked = format!("Checked env-{index}: ");
        let pushed = format!("Pushed env-{index}: ");
        assert!(verbose.stderr.contains(&checked), "{}", verbose.stderr);
        assert!(verbose.stderr.contains(&pushed), "{}", verbose.stderr);
    }
    let key = crate::support::dotenv_value(
        &std::fs::read_to_string(env.path("env-0.env")).unwrap(),
        "API_KEY",
    )
    .unwrap();
    env.secret(&key);
}

/// Makes the proxy hold the first write to `app-0` for far longer than any
/// test runs, as a server that accepted a request and never responds.
fn stall_first_write(proxy: &FaultProxy, mount: &str) {
    proxy.inject(Rule::new(
        Some("POST"),
        &format!("^/v1/{mount}/data/app-0$"),
        1,
        Fault::Delay(Duration::from_secs(600)),
    ));
}

#[test]
fn push_timeout_is_reported_and_rolled_back() {
    let vault = Vault::from_env();
    let proxy = FaultProxy::start(&vault.addr);
    let (env, mount) = setup(&vault, &proxy, 1, 2);
    stall_first_write(&proxy, &mount);
    let text = playbook(1, &mount, 2, "policy:\n  target_timeout: 1s\n");
    let path = env.playbook("slow.yaml", &text);

    let started = Instant::now();
    let run = env.keywheel(&["run", "--json", path.to_str().unwrap()]);
    run.assert_code(EXIT_FAILED);
    assert!(started.elapsed() < Duration::from_secs(60));

    assert!(
        run.stderr
            .contains("error vault-0: push failed: timed out after 1s"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("push failed for vault-0"),
        "{}",
        run.stderr
    );
    let report = run.json();
    assert_eq!(report["status"], "rolled_back");
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "push:vault-0")
        .unwrap()
        .clone();
    assert_eq!(step["status"], "failed");
    assert!(
        step["detail"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 1s"),
        "{step}"
    );
    for index in 0..2 {
        let (_, data) = vault.get(&mount, &format!("app-{index}"));
        assert_eq!(data["api_key"], ORIGINAL, "app-{index} is restored");
    }
    assert_eq!(
        std::fs::read_to_string(env.path("env-0.env")).unwrap(),
        format!("API_KEY={ORIGINAL}\n")
    );
}

#[test]
fn held_timeout_is_finished_by_resume() {
    let vault = Vault::from_env();
    let proxy = FaultProxy::start(&vault.addr);
    let (env, mount) = setup(&vault, &proxy, 0, 2);
    stall_first_write(&proxy, &mount);
    let text = playbook(
        0,
        &mount,
        2,
        "policy:\n  target_timeout: 1s\n  on_partial_failure: hold\n",
    );
    let path = env.playbook("slow.yaml", &text);

    let run = env.keywheel(&["run", path.to_str().unwrap()]);
    run.assert_code(EXIT_ATTENTION);
    assert!(
        run.stderr
            .contains("vault-0: push failed: timed out after 1s"),
        "{}",
        run.stderr
    );

    let resumed = env.keywheel(&["resume"]);
    resumed.assert_code(EXIT_OK);
    let (_, first) = vault.get(&mount, "app-0");
    let (_, second) = vault.get(&mount, "app-1");
    env.secret(&first["api_key"]);
    assert_ne!(first["api_key"], ORIGINAL);
    assert_eq!(first["api_key"], second["api_key"]);
}
