//! The command issuer: the example program against the example key
//! service, and a local test program that records what it was given, to
//! show that secrets never reach argv or the environment, that a timeout
//! kills the program and its children, and that stderr is redacted.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http_issuer::{app_env_key, env_for, verify_section, write_app_env};
use crate::support::key_service::KeyService;
use crate::support::{EXIT_FAILED, EXIT_OK, TestEnv, unique};

fn example_program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/key_service_command.py")
}

fn playbook(program: &Path, timeout: &str, verify: &str) -> String {
    format!(
        "version: 1
name: {name}
issuer:
  type: command
  program: {program}
  timeout: {timeout}
  pass_env: [KEYSERVICE_URL]
  credential_env: KEYSERVICE_ADMIN_TOKEN
targets:
  - name: app-env
    type: dotenv
    path: app.env
    set:
      GATEWAY_API_KEY: secret
{verify}",
        name = unique("cmd"),
        program = program.display(),
    )
}

#[test]
fn example_program_rotates_a_gateway_key() {
    let service = KeyService::start();
    service.update(
        &service.bootstrap_id,
        json!({"rate_limit_per_minute": 90, "ip_allowlist": ["127.0.0.1/32"]}),
    );
    let env = env_for(&service);
    let path = env.playbook(
        "cmd.yaml",
        &playbook(&example_program(), "20s", &verify_section("10s")),
    );

    env.keywheel(&["run", path.to_str().unwrap(), "--yes"])
        .assert_code(EXIT_OK);

    let keys = service.keys();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["scopes"], json!(["models:read", "chat:write"]));
    assert_eq!(keys[0]["rate_limit_per_minute"], 90);
    assert_eq!(keys[0]["ip_allowlist"], json!(["127.0.0.1/32"]));
    let secret = app_env_key(&env);
    assert_eq!(service.call_models(&secret), 200);
    assert_eq!(service.call_models(&service.bootstrap_secret), 401);
}

/// A local issuer program that keeps keys in keys.json next to it and
/// records its argv and environment for each call. `mode` in the same
/// folder makes it sleep (with a child) or fail.
pub const TEST_PROGRAM: &str = r#"#!/usr/bin/env python3
import json, os, secrets, subprocess, sys, time

here = os.path.dirname(os.path.abspath(__file__))
request = json.load(sys.stdin)
operation = request["operation"]
with open("/proc/self/cmdline", "rb") as f:
    cmdline = f.read()
with open("/proc/self/environ", "rb") as f:
    environ = f.read()
with open(os.path.join(here, f"seen-{operation}-{os.getpid()}"), "wb") as f:
    f.write(cmdline + b"\n" + environ)

mode_file = os.path.join(here, "mode")
mode = open(mode_file).read().strip() if os.path.exists(mode_file) else "ok"
if mode == "sleep":
    child = subprocess.Popen(["sleep", "60"])
    with open(os.path.join(here, "pids"), "w") as f:
        f.write(f"{os.getpid()} {child.pid}\n")
    time.sleep(60)
if mode == "fail":
    current = request.get("current", {}).get("secret")
    print(f"cannot {operation} with token {request.get('credential')}", file=sys.stderr)
    print(f"the current secret {current} is unknown", file=sys.stderr)
    print(f"it made sk_test_{secrets.token_hex(16)} before failing", file=sys.stderr)
    sys.exit(3)

store_path = os.path.join(here, "keys.json")
store = json.load(open(store_path)) if os.path.exists(store_path) else {}
def save():
    with open(store_path, "w") as f:
        json.dump(store, f)

if operation == "preflight":
    secret = request["current"]["secret"]
    old = [k for k, v in store.items() if v["secret"] == secret]
    if not old:
        store["key_old"] = {"secret": secret, "status": "active", "run": ""}
        save()
        old = ["key_old"]
    print(json.dumps({"old_key": {"id": old[0], "attributes": {"scopes": ["a"]}}}))
elif operation in ("create", "find_created"):
    made = [k for k, v in store.items() if v["run"] == request["idempotency_key"]]
    if operation == "find_created" and not made:
        print(json.dumps({"key": None, "orphan_ids": []}))
        sys.exit(0)
    if not made:
        key_id = "key_" + secrets.token_hex(4)
        store[key_id] = {"secret": "sk_test_" + secrets.token_hex(16), "status": "active", "run": request["idempotency_key"]}
        save()
        made = [key_id]
    key = {"id": made[0], "fields": {"secret": store[made[0]]["secret"]}}
    print(json.dumps({"key": key}))
else:
    key_id = request["key_id"]
    if operation == "delete":
        store.pop(key_id, None)
    elif key_id in store:
        store[key_id]["status"] = "disabled" if operation == "disable" else "active"
    save()
    print("{}")
"#;

struct Local {
    env: TestEnv,
    dir: PathBuf,
    playbook: PathBuf,
}

const OLD_SECRET: &str = "sk_test_old_secret_0123456789abcdef";
const CREDENTIAL: &str = "admin-credential-0123456789abcdef";

fn local(mode: &str, timeout: &str) -> Local {
    let mut env = TestEnv::new();
    let dir = env.path("program");
    std::fs::create_dir(&dir).unwrap();
    let program = dir.join("issuer.py");
    std::fs::write(&program, TEST_PROGRAM).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("mode"), mode).unwrap();
    env.env("KEYSERVICE_URL", "http://127.0.0.1:9");
    env.env("KEYSERVICE_ADMIN_TOKEN", CREDENTIAL);
    env.env("UNRELATED_SECRET_TOKEN", "do-not-pass-this-value-0123");
    env.secret(CREDENTIAL);
    env.secret(OLD_SECRET);
    write_app_env(&env, OLD_SECRET);
    let playbook = env.playbook("cmd.yaml", &playbook(&program, timeout, ""));
    Local { env, dir, playbook }
}

impl Local {
    fn run(&self) -> crate::support::Run {
        self.env
            .keywheel(&["run", self.playbook.to_str().unwrap(), "--yes"])
    }

    /// What the program recorded of its argv and environment, per call.
    fn seen(&self) -> Vec<(String, Vec<u8>)> {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("seen-"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[test]
fn secrets_never_reach_argv_or_environment() {
    let local = local("ok", "10s");
    local.run().assert_code(EXIT_OK);
    let new_secret = app_env_key(&local.env);
    assert_ne!(new_secret, OLD_SECRET);

    let seen = local.seen();
    let operations: Vec<&str> = seen
        .iter()
        .map(|(name, _)| name.split('-').nth(1).unwrap())
        .collect();
    for operation in ["preflight", "create", "disable", "delete"] {
        assert!(
            operations.contains(&operation),
            "{operation} not called: {operations:?}"
        );
    }
    for (name, bytes) in &seen {
        assert!(!contains(bytes, OLD_SECRET), "{name}: the old secret");
        assert!(!contains(bytes, CREDENTIAL), "{name}: the credential");
        assert!(!contains(bytes, &new_secret), "{name}: the new secret");
        assert!(
            !contains(bytes, "KEYWHEEL_"),
            "{name}: keywheel's variables"
        );
        assert!(
            !contains(bytes, "do-not-pass-this"),
            "{name}: an unlisted variable"
        );
        assert!(
            contains(bytes, "KEYSERVICE_URL=http://127.0.0.1:9"),
            "{name}: pass_env"
        );
    }
}

/// Whether process `pid` is gone or dead (a zombie not yet reaped).
fn is_gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

#[test]
fn timeout_kills_program_and_its_child() {
    let local = local("sleep", "1s");
    let started = Instant::now();
    let run = local.run();
    run.assert_code(EXIT_FAILED);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        run.stderr.contains("timed out after 1s and was killed"),
        "{}",
        run.stderr
    );

    let pids = std::fs::read_to_string(local.dir.join("pids")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in pids.split_whitespace() {
        while !is_gone(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(is_gone(pid), "process {pid} outlived the timeout");
    }
    assert_eq!(app_env_key(&local.env), OLD_SECRET);
}

#[test]
fn failing_program_stderr_is_redacted() {
    let local = local("fail", "10s");
    let run = local.run();
    run.assert_code(EXIT_FAILED);
    assert!(
        run.stderr.contains("exited with status 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("cannot preflight with token [redacted]"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("the current secret [redacted] is unknown"),
        "{}",
        run.stderr
    );
    // A key keywheel never saw is hidden by its shape.
    assert!(
        run.stderr.contains("it made [redacted] before failing"),
        "{}",
        run.stderr
    );
}

/// Waits until the sleeping test program has started and returns its pid
/// and its child's.
fn wait_for_program(local: &Local) -> String {
    let pids_file = local.dir.join("pids");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pids_file.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(&pids_file).expect("the program never started")
}

/// Kills every process in `pids` that is still there.
fn kill_all(pids: &str) {
    for pid in pids.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-9", pid])
            .status();
    }
}

#[test]
fn program_dies_with_a_killed_keywheel() {
    let local = local("sleep", "60s");
    let mut keywheel = local
        .env
        .command(&["run", local.playbook.to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pids = wait_for_program(&local);

    keywheel.kill().unwrap();
    keywheel.wait().unwrap();

    // The program itself must go: left running, it could finish a create
    // after `resume` has already looked for the keys this run made.
    let program = pids.split_whitespace().next().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_gone(program) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let program_gone = is_gone(program);
    kill_all(&pids);
    assert!(program_gone, "the program {program} outlived keywheel");
}

#[test]
fn sigterm_stops_run_with_json_error() {
    let local = local("sleep", "60s");
    let keywheel = local
        .env
        .command(&["run", "--json", local.playbook.to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pids = wait_for_program(&local);

    let pid = keywheel.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let output = keywheel.wait_with_output().unwrap();

    assert_eq!(output.status.code(), Some(143));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(error["exit_code"], 143);
    let run_id = local.env.last_run_id();
    assert_eq!(error["run_id"], run_id.as_str());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains(&format!("stopped by SIGTERM: run {run_id} is unfinished")),
        "{stderr}"
    );
    kill_all(&pids);
}
