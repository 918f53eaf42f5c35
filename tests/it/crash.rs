//! kill -9 at every journal point, then `resume` or `rollback`, for two
//! scenarios: the random issuer into Vault and a .env file, and the command
//! issuer into a raw file and a JSON file. The matrix and its invariant
//! check are in `support::crash`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::crash::{CrashFixture, run_matrix};
use crate::support::vault::Vault;
use crate::support::{TestEnv, dotenv_value, unique};

const ORIGINAL_KEY: &str = "sk_live_original_key_00000000";
const ORIGINAL_ENV: &str =
    "# app\nDB_HOST=db.internal\nAPP_API_KEY=sk_live_original_key_00000000 # managed\nTAIL=1\n";

/// The random issuer into a Vault secret and a .env file.
pub struct RandomVault<'v> {
    pub env: TestEnv,
    vault: &'v Vault,
    path: String,
    pub playbook: PathBuf,
}

pub fn random_vault(vault: &Vault) -> RandomVault<'_> {
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
    RandomVault {
        env,
        vault,
        path,
        playbook,
    }
}

impl RandomVault<'_> {
    fn env_text(&self) -> String {
        std::fs::read_to_string(self.env.path("app.env")).unwrap()
    }
}

impl CrashFixture for RandomVault<'_> {
    fn env(&self) -> &TestEnv {
        &self.env
    }

    fn playbook(&self) -> &Path {
        &self.playbook
    }

    fn old_value(&self) -> String {
        ORIGINAL_KEY.into()
    }

    fn target_values(&self) -> Vec<(String, String)> {
        let in_vault = self.vault.get("secret", &self.path).1["api_key"].clone();
        let in_env = dotenv_value(&self.env_text(), "APP_API_KEY").unwrap();
        vec![("vault-app".into(), in_vault), ("app-env".into(), in_env)]
    }

    fn check_rotated(&self, point: &str, new_value: &str) {
        assert!(new_value.starts_with("sk_live_"), "{point}");
        assert_eq!(
            self.env_text(),
            ORIGINAL_ENV.replace(ORIGINAL_KEY, new_value),
            "{point}: other bytes of the .env changed"
        );
        let data = self.vault.get("secret", &self.path).1;
        assert_eq!(data["db_host"], "db.internal", "{point}");
    }

    fn check_original(&self, point: &str) {
        assert_eq!(
            self.env_text(),
            ORIGINAL_ENV,
            "{point}: .env is not byte for byte the original"
        );
        let data = self.vault.get("secret", &self.path).1;
        assert_eq!(data["db_host"], "db.internal", "{point}");
    }
}

#[test]
fn random_issuer_vault_dotenv_crash_matrix() {
    let vault = Vault::from_env();
    run_matrix(
        "random issuer into vault and dotenv",
        &["random", "vault", "dotenv"],
        || random_vault(&vault),
    );
}

const OLD_SECRET: &str = "sk_test_old_secret_0123456789abcdef";
const CONFIG_JSON: &str = "{\n  \"host\": \"db.internal\",\n  \"api_key\": \"{key}\",\n  \"upstream\": {\n    \"token\": \"{key}\",\n    \"retries\": 3\n  }\n}\n";

/// The command issuer (a local program keeping its keys in keys.json)
/// into a raw key file and a JSON file.
pub struct CommandFiles {
    env: TestEnv,
    program_dir: PathBuf,
    playbook: PathBuf,
}

pub fn command_files() -> CommandFiles {
    let mut env = TestEnv::new();
    let program_dir = env.path("program");
    std::fs::create_dir(&program_dir).unwrap();
    let program = program_dir.join("issuer.py");
    std::fs::write(&program, crate::command_issuer::TEST_PROGRAM).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let keys = json!({"key_old": {"secret": OLD_SECRET, "status": "active", "run": ""}});
    std::fs::write(program_dir.join("keys.json"), keys.to_string()).unwrap();
    env.env("KEYSERVICE_URL", "http://127.0.0.1:9");
    env.env(
        "KEYSERVICE_ADMIN_TOKEN",
        "admin-credential-0123456789abcdef",
    );
    env.secret("admin-credential-0123456789abcdef");
    env.secret(OLD_SECRET);
    std::fs::write(env.path("api.key"), OLD_SECRET).unwrap();
    std::fs::write(
        env.path("config.json"),
        CONFIG_JSON.replace("{key}", OLD_SECRET),
    )
    .unwrap();
    let text = format!(
        "version: 1
name: {name}
issuer:
  type: command
  program: {program}
  timeout: 10s
  pass_env: [KEYSERVICE_URL]
  credential_env: KEYSERVICE_ADMIN_TOKEN
targets:
  - name: key-file
    type: file
    path: api.key
  - name: config
    type: file
    path: config.json
    format: json
    set:
      api_key: secret
      /upstream/token: secret
policy:
  concurrency: 1
",
        name = unique("crash-cmd"),
        program = program.display(),
    );
    let playbook = env.playbook("crash.yaml", &text);
    CommandFiles {
        env,
        program_dir,
        playbook,
    }
}

impl CommandFiles {
    fn store(&self) -> Value {
        let text = std::fs::read_to_string(self.program_dir.join("keys.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn config(&self) -> String {
        std::fs::read_to_string(self.env.path("config.json")).unwrap()
    }
}

impl CrashFixture for CommandFiles {
    fn env(&self) -> &TestEnv {
        &self.env
    }

    fn playbook(&self) -> &Path {
        &self.playbook
    }

    fn old_value(&self) -> String {
        OLD_SECRET.into()
    }

    fn target_values(&self) -> Vec<(String, String)> {
        let raw = std::fs::read_to_string(self.env.path("api.key")).unwrap();
        let config: Value = serde_json::from_str(&self.config()).unwrap();
        let member = config["api_key"].as_str().unwrap().to_string();
        let nested = config["upstream"]["token"].as_str().unwrap().to_string();
        vec![
            ("key-file".into(), raw),
            ("config /api_key".into(), member),
            ("config /upstream/token".into(), nested),
        ]
    }

    fn issuer_keys(&self) -> Option<Vec<(String, bool)>> {
        let store = self.store();
        let keys = store.as_object().unwrap();
        for key in keys.values() {
            self.env.secret(key["secret"].as_str().unwrap());
        }
        Some(
            keys.iter()
                .map(|(id, key)| (id.clone(), key["status"] == "active"))
                .collect(),
        )
    }

    fn old_key_id(&self) -> Option<String> {
        Some("key_old".into())
    }

    fn old_key_accepted(&self) -> Option<bool> {
        let store = self.store();
        Some(store["key_old"]["status"] == "active")
    }

    fn check_rotated(&self, point: &str, new_value: &str) {
        assert!(new_value.starts_with("sk_test_"), "{point}");
        let expected: Value =
            serde_json::from_str(&CONFIG_JSON.replace("{key}", new_value)).unwrap();
        let found: Value = serde_json::from_str(&self.config()).unwrap();
        assert_eq!(
            found, expected,
            "{point}: other members of config.json changed"
        );
    }

    fn check_original(&self, point: &str) {
        assert_eq!(
            self.config(),
            CONFIG_JSON.replace("{key}", OLD_SECRET),
            "{point}: config.json is not byte for byte the original"
        );
        assert_eq!(
            std::fs::read_to_string(self.env.path("api.key")).unwrap(),
            OLD_SECRET,
            "{point}: api.key is not byte for byte the original"
        );
    }
}

#[test]
fn command_issuer_file_targets_crash_matrix() {
    run_matrix(
        "command issuer into raw and json files",
        &["command", "file (raw)", "file (json)"],
        command_files,
    );
}
