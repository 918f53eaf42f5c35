//! Damaged journals: a torn last record is ignored, anything else is a
//! clear error that touches nothing.

use crate::support::{EXIT_ATTENTION, EXIT_OK, EXIT_USAGE, TestEnv, dotenv_value};

const PLAYBOOK: &str = "version: 1
name: journal-test
issuer:
  type: random
targets:
  - name: env
    type: dotenv
    path: app.env
    set:
      KEY: secret
";

fn crashed_run(env: &TestEnv, point: &str) -> String {
    std::fs::write(env.path("app.env"), "KEY=original-value-0000\n").unwrap();
    let playbook = env.playbook("j.yaml", PLAYBOOK);
    env.keywheel_crashing(point, &["run", playbook.to_str().unwrap()])
        .assert_killed();
    env.last_run_id()
}

#[test]
fn torn_last_record_is_ignored() {
    let env = TestEnv::new();
    let run_id = crashed_run(&env, "after:5");
    let journal = env.journal(&run_id);
    let mut bytes = std::fs::read(&journal).unwrap();
    let intact = bytes.len();
    bytes.extend_from_slice(b"1234abcd {\"seq\":6,\"at\":\"2026-");
    std::fs::write(&journal, &bytes).unwrap();

    env.keywheel(&["status", &run_id]).assert_code(EXIT_OK);
    env.keywheel(&["resume", &run_id]).assert_code(EXIT_OK);
    let text = std::fs::read_to_string(env.path("app.env")).unwrap();
    env.secret(&dotenv_value(&text, "KEY").unwrap());
    let after = std::fs::read(&journal).unwrap();
    assert!(after.len() > intact);
    assert!(
        !after
            .windows(14)
            .any(|w| w == b"\"seq\":6,\"at\":\"2026-"[..14].as_ref())
            || after.starts_with(&bytes[..intact])
    );
    let lines: Vec<&str> = std::str::from_utf8(&after).unwrap().lines().collect();
    assert!(
        lines.iter().all(|l| l.len() > 9 && l.as_bytes()[8] == b' '),
        "torn bytes were not cut off"
    );
}

#[test]
fn corruption_before_the_end_stops_with_line() {
    let env = TestEnv::new();
    let run_id = crashed_run(&env, "after:6");
    let journal = env.journal(&run_id);
    let text = std::fs::read_to_string(&journal).unwrap();
    let damaged = text.replacen("\"event\":\"preflight\"", "\"event\":\"preflighx\"", 1);
    assert_ne!(damaged, text);
    std::fs::write(&journal, damaged).unwrap();

    let run = env.keywheel(&["status", &run_id]);
    run.assert_code(EXIT_ATTENTION);
    assert!(run.stderr.contains("corrupt at line 2"), "{}", run.stderr);
    let run = env.keywheel(&["resume", &run_id]);
    run.assert_code(EXIT_ATTENTION);
    assert_eq!(
        std::fs::read_to_string(env.path("app.env")).unwrap(),
        "KEY=original-value-0000\n"
    );
}

#[test]
fn wrong_seal_key_is_named() {
    let mut env = TestEnv::new();
    let run_id = crashed_run(&env, "after:6");
    env.env("KEYWHEEL_SEAL_KEY", &crate::support::hex(&[9u8; 32]));
    let run = env.keywheel(&["resume", &run_id]);
    run.assert_code(EXIT_USAGE);
    assert!(
        run.stderr.contains("was sealed with seal key"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("KEYWHEEL_SEAL_KEY"), "{}", run.stderr);
}
