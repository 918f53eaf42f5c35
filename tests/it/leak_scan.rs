//! The leak scan itself: it finds secrets a test never registered, because
//! it opens what keywheel sealed in the journals, and it rejects a state
//! file that others can read.

use std::os::unix::fs::PermissionsExt as _;

use crate::support::{EXIT_OK, TestEnv, dotenv_value};

const ORIGINAL: &str = "original-value-0000";

/// Rotates a .env file without registering any secret with the scan, and
/// returns the new key.
fn rotated() -> (TestEnv, String) {
    let env = TestEnv::new();
    std::fs::write(env.path("app.env"), format!("KEY={ORIGINAL}\n")).unwrap();
    let playbook = env.playbook(
        "scan.yaml",
        "version: 1\nname: scan\nissuer:\n  type: random\ntargets:\n  - name: env\n    type: dotenv\n    path: app.env\n    set:\n      KEY: secret\n",
    );
    env.keywheel(&["run", playbook.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let text = std::fs::read_to_string(env.path("app.env")).unwrap();
    let key = dotenv_value(&text, "KEY").unwrap();
    (env, key)
}

/// Runs the scan and returns its failure message, if it failed.
fn scan_failure(env: &TestEnv) -> Option<String> {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| env.assert_no_leaks()));
    let payload = result.err()?;
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(ToString::to_string));
    Some(message.unwrap_or_default())
}

/// Writes `text` into a private file of the state directory.
fn write_state_file(env: &TestEnv, text: &str) -> std::path::PathBuf {
    let path = env.state_dir.join("stray.log");
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn unregistered_new_key_is_found() {
    let (env, key) = rotated();
    assert_eq!(scan_failure(&env), None, "the clean run failed the scan");

    let stray = write_state_file(&env, &format!("debug: key={key}\n"));

    let failure = scan_failure(&env).expect("the leaked new key was not found");
    assert!(failure.contains("stray.log"), "{failure}");
    std::fs::remove_file(stray).unwrap();
}

#[test]
fn unregistered_previous_value_is_found() {
    let (env, _) = rotated();

    let stray = write_state_file(&env, &format!("debug: old={ORIGINAL}\n"));

    let failure = scan_failure(&env).expect("the leaked previous value was not found");
    assert!(failure.contains("stray.log"), "{failure}");
    std::fs::remove_file(stray).unwrap();
}

#[test]
fn readable_state_file_is_rejected() {
    let (env, _) = rotated();
    let journal = env.journal(&env.last_run_id());
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o644)).unwrap();

    let failure = scan_failure(&env).expect("a journal readable by others passed");
    assert!(failure.contains("has mode 644"), "{failure}");
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o600)).unwrap();
}
