//! kill -9 at every journal point of an http issuer rotation into a .env
//! file and OpenBao: `resume` finishes the run with exactly one new key at
//! the service, and, from the same crash, `rollback` leaves the old key
//! active, no other key, and every target as it was.

use serde_json::{Value, json};

use crate::http_issuer::{Book, playbook, verify_section};
use crate::support::key_service::KeyService;
use crate::support::vault::Vault;
use crate::support::{EXIT_OK, EXIT_USAGE, TestEnv, dotenv_value, unique};

struct Setup<'s> {
    service: &'s KeyService,
    vault: &'s Vault,
    env: TestEnv,
    name: String,
    old_id: String,
    old_secret: String,
    vault_path: String,
    playbook: std::path::PathBuf,
}

fn setup<'s>(service: &'s KeyService, vault: &'s Vault) -> Setup<'s> {
    let name = unique("crash-key");
    let (old_id, old_secret) = service.create_key(json!({
        "name": name,
        "scopes": ["models:read"],
        "ip_allowlist": ["127.0.0.1/32"],
    }));
    let vault_path = unique("gw");
    vault.put("secret", &vault_path, &[("api_key", &old_secret)]);

    let mut env = TestEnv::new();
    env.env("KEYSERVICE_URL", &service.url);
    env.env("KEYSERVICE_ADMIN_TOKEN", &service.admin_token);
    env.env("VAULT_ADDR", &vault.addr);
    env.env("VAULT_TOKEN", &vault.token);
    env.secret(&service.admin_token);
    env.secret(&vault.token);
    env.secret(&old_secret);
    std::fs::write(
        env.path("app.env"),
        format!("GATEWAY_API_KEY={old_secret}\n"),
    )
    .unwrap();
    let vault_target = format!(
        "  - name: vault-app
    type: vault
    mount: secret
    path: {vault_path}
    set:
      api_key: secret
"
    );
    let text = playbook(&Book {
        verify: &verify_section("10s"),
        extra_targets: &vault_target,
        ..Book::default()
    });
    let playbook = env.playbook(
        "gateway.yaml",
        &format!("{text}policy:\n  concurrency: 1\n"),
    );
    Setup {
        service,
        vault,
        env,
        name,
        old_id,
        old_secret,
        vault_path,
        playbook,
    }
}

impl Setup<'_> {
    fn env_key(&self) -> String {
        let text = std::fs::read_to_string(self.env.path("app.env")).unwrap();
        dotenv_value(&text, "GATEWAY_API_KEY").unwrap()
    }

    fn vault_key(&self) -> String {
        self.vault.get("secret", &self.vault_path).1["api_key"].clone()
    }

    /// Keys at the service that carry this setup's name.
    fn keys(&self) -> Vec<Value> {
        self.service
            .keys()
            .into_iter()
            .filter(|key| key["name"] == self.name.as_str())
            .collect()
    }

    fn assert_rotated(&self, point: &str) {
        let key = self.env_key();
        self.env.secret(&key);
        assert_eq!(key, self.vault_key(), "{point}: targets disagree");
        assert_ne!(key, self.old_secret, "{point}: not rotated");
        let keys = self.keys();
        assert_eq!(keys.len(), 1, "{point}: keys left: {keys:?}");
        assert_ne!(keys[0]["id"], self.old_id.as_str(), "{point}");
        assert_eq!(keys[0]["status"], "active", "{point}");
        assert_eq!(keys[0]["ip_allowlist"], json!(["127.0.0.1/32"]), "{point}");
        assert_eq!(self.service.call_models(&key), 200, "{point}");
    }

    fn assert_original(&self, point: &str) {
        assert_eq!(self.env_key(), self.old_secret, "{point}: .env changed");
        assert_eq!(self.vault_key(), self.old_secret, "{point}: vault changed");
        let keys = self.keys();
        assert_eq!(keys.len(), 1, "{point}: keys left: {keys:?}");
        assert_eq!(keys[0]["id"], self.old_id.as_str(), "{point}");
        assert_eq!(keys[0]["status"], "active", "{point}");
    }

    /// Runs with a crash point; returns the run id, or `None` when the
    /// crash came before the run's first record (then nothing changed).
    fn crash(&self, point: &str) -> Option<String> {
        self.env
            .keywheel_crashing(point, &["run", self.playbook.to_str().unwrap(), "--yes"])
            .assert_killed();
        let run_id = self.run_id();
        if run_id.is_none() {
            self.assert_original(point);
        }
        run_id
    }

    fn run_id(&self) -> Option<String> {
        let history = self.env.keywheel(&["history", "--json"]).json();
        history["runs"][0]["run_id"].as_str().map(str::to_string)
    }
}

fn records_in_full_run(service: &KeyService, vault: &Vault) -> usize {
    let setup = setup(service, vault);
    setup
        .env
        .keywheel(&["run", setup.playbook.to_str().unwrap(), "--yes"])
        .assert_code(EXIT_OK);
    setup.assert_rotated("full run");
    let run_id = setup.run_id().unwrap();
    std::fs::read_to_string(setup.env.journal(&run_id))
        .unwrap()
        .lines()
        .count()
}

fn crash_and_resume(service: &KeyService, vault: &Vault, point: &str) {
    let setup = setup(service, vault);
    let Some(run_id) = setup.crash(point) else {
        return;
    };
    let run = setup.env.keywheel(&["resume", &run_id, "--yes"]);
    let finished_already = run.code == Some(EXIT_USAGE) && run.stderr.contains("already finished");
    assert!(
        run.code == Some(EXIT_OK) || finished_already,
        "{point}: resume failed:\n{}",
        run.stderr
    );
    setup.assert_rotated(point);
}

fn crash_and_roll_back(service: &KeyService, vault: &Vault, point: &str) {
    let setup = setup(service, vault);
    let Some(run_id) = setup.crash(point) else {
        return;
    };
    let run = setup.env.keywheel(&["rollback", &run_id]);
    if run.code == Some(EXIT_USAGE)
        && (run.stderr.contains("already finished (completed)")
            || run.stderr.contains("passed the point of no return"))
    {
        // The old key is deleted: only going forward is left.
        if run.stderr.contains("point of no return") {
            setup
                .env
                .keywheel(&["resume", &run_id, "--yes"])
                .assert_code(EXIT_OK);
        }
        setup.assert_rotated(point);
        return;
    }
    assert_eq!(
        run.code,
        Some(EXIT_OK),
        "{point}: rollback failed:\n{}",
        run.stderr
    );
    setup.assert_original(point);
}

#[test]
fn http_crash_at_every_journal_point() {
    let service = KeyService::start();
    let vault = Vault::from_env();
    let records = records_in_full_run(&service, &vault);
    assert!(records >= 15, "a run writes {records} records");
    for seq in 1..=records {
        for point in [format!("before:{seq}"), format!("after:{seq}")] {
            crash_and_resume(&service, &vault, &point);
            crash_and_roll_back(&service, &vault, &point);
        }
    }
}
