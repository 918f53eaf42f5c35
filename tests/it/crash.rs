//! kill -9 at every journal point of a Vault plus .env rotation: `resume`
//! then finishes the run, and, from the same crash, `rollback` restores the
//! previous bytes of every target.

use crate::support::vault::Vault;
use crate::support::{EXIT_OK, EXIT_USAGE, TestEnv, dotenv_value, unique};

const ORIGINAL_KEY: &str = "sk_live_original_key_00000000";
const ORIGINAL_ENV: &str =
    "# app\nDB_HOST=db.internal\nAPP_API_KEY=sk_live_original_key_00000000 # managed\nTAIL=1\n";

struct Setup {
    env: TestEnv,
    vault: Vault,
    path: String,
    playbook: std::path::PathBuf,
}

fn setup() -> Setup {
    let vault = Vault::from_env();
    let path = unique("crash");
    vault.put(
        "secret",
        &path,
        &[("api_key", ORIGINAL_KEY), ("db_host", "db.internal")],
    );
    let mut env = TestEnv::new();
    env.env("VAULT_ADDR", &vault.addr);
    env.env("VAULT_TOKEN", &vault.token);
    env.secret(&vault.token);
    std::fs::write(env.path("app.env"), ORIGINAL_ENV).unwrap();
    let text = format!(
        "version: 1
name: {name}
issuer:
  type: random
  prefix: sk_live_
targets:
  - name: vault-app
    type: vault
    mount: secret
    path: {path}
    set:
      api_key: secret
  - name: app-env
    type: dotenv
    path: app.env
    set:
      APP_API_KEY: secret
policy:
  concurrency: 1
",
        name = unique("crash")
    );
    let playbook = env.playbook("crash.yaml", &text);
    Setup {
        env,
        vault,
        path,
        playbook,
    }
}

impl Setup {
    fn vault_value(&self) -> String {
        self.vault.get("secret", &self.path).1["api_key"].clone()
    }

    fn env_text(&self) -> String {
        std::fs::read_to_string(self.env.path("app.env")).unwrap()
    }

    /// Every target holds the same key; returns it.
    fn assert_consistent(&self) -> String {
        let in_vault = self.vault_value();
        let in_env = dotenv_value(&self.env_text(), "APP_API_KEY").unwrap();
        self.env.secret(&in_vault);
        assert_eq!(in_vault, in_env, "targets disagree");
        assert_eq!(
            self.vault.get("secret", &self.path).1["db_host"],
            "db.internal"
        );
        in_vault
    }

    fn assert_rotated(&self) {
        let key = self.assert_consistent();
        assert_ne!(key, ORIGINAL_KEY);
        assert!(key.starts_with("sk_live_"));
        assert_eq!(
            self.env_text(),
            ORIGINAL_ENV.replace(ORIGINAL_KEY, &key),
            "other bytes of the .env changed"
        );
    }

    fn assert_original(&self) {
        assert_eq!(
            self.env_text(),
            ORIGINAL_ENV,
            ".env is not byte for byte the original"
        );
        assert_eq!(self.vault_value(), ORIGINAL_KEY);
    }

    fn run_id(&self) -> Option<String> {
        let history = self.env.keywheel(&["history", "--json"]).json();
        history["runs"][0]["run_id"].as_str().map(str::to_string)
    }
}

/// Number of journal records of an uninterrupted run.
fn records_in_full_run() -> usize {
    let setup = setup();
    setup
        .env
        .keywheel(&["run", setup.playbook.to_str().unwrap()])
        .assert_code(EXIT_OK);
    setup.assert_rotated();
    let run_id = setup.run_id().unwrap();
    std::fs::read_to_string(setup.env.journal(&run_id))
        .unwrap()
        .lines()
        .count()
}

#[derive(Clone, Copy, Debug)]
enum Recovery {
    Resume,
    Rollback,
}

fn crash_and_recover(point: &str, recovery: Recovery) {
    let setup = setup();
    let crashed = setup
        .env
        .keywheel_crashing(point, &["run", setup.playbook.to_str().unwrap()]);
    crashed.assert_killed();

    let Some(run_id) = setup.run_id() else {
        // Killed before the first record: nothing happened, nothing to do.
        setup.assert_original();
        let run = setup.env.keywheel(&["resume"]);
        run.assert_code(EXIT_USAGE);
        assert!(
            run.stderr.contains("no unfinished run"),
            "{point}: {}",
            run.stderr
        );
        return;
    };
    match recovery {
        Recovery::Resume => {
            let run = setup.env.keywheel(&["resume", &run_id]);
            let finished_already =
                run.code == Some(EXIT_USAGE) && run.stderr.contains("already finished");
            assert!(
                run.code == Some(EXIT_OK) || finished_already,
                "{point}: resume failed:\n{}",
                run.stderr
            );
            setup.assert_rotated();
        }
        Recovery::Rollback => {
            let run = setup.env.keywheel(&["rollback", &run_id]);
            if run.code == Some(EXIT_USAGE) && run.stderr.contains("already finished (completed)") {
                setup.assert_rotated();
                return;
            }
            assert_eq!(
                run.code,
                Some(EXIT_OK),
                "{point}: rollback failed:\n{}",
                run.stderr
            );
            setup.assert_original();
        }
    }
    let status = setup.env.keywheel(&["status", &run_id, "--json"]).json();
    let final_status = status["runs"][0]["status"].as_str().unwrap().to_string();
    assert!(
        ["completed", "rolled_back"].contains(&final_status.as_str()),
        "{point}: ended {final_status}"
    );
}

#[test]
fn crash_at_every_journal_point_then_resume_or_rollback() {
    let records = records_in_full_run();
    assert!(records >= 10, "a run writes {records} records");
    for seq in 1..=records {
        for point in [format!("before:{seq}"), format!("after:{seq}")] {
            crash_and_recover(&point, Recovery::Resume);
            crash_and_recover(&point, Recovery::Rollback);
        }
    }
}
