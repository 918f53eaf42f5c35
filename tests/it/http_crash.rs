//! kill -9 at every journal point of an http issuer rotation into a .env
//! file and OpenBao: `resume` finishes the run with exactly one new key at
//! the service, and, from the same crash, `rollback` leaves the old key
//! active, no other key, and every target as it was.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::http_issuer::{Book, playbook, verify_section};
use crate::support::crash::{CrashFixture, run_matrix};
use crate::support::key_service::KeyService;
use crate::support::vault::Vault;
use crate::support::{TestEnv, dotenv_value, unique};

pub struct HttpCrash<'s> {
    service: &'s KeyService,
    vault: &'s Vault,
    pub env: TestEnv,
    name: String,
    old_id: String,
    old_secret: String,
    vault_path: String,
    pub playbook: PathBuf,
}

pub fn http_crash<'s>(service: &'s KeyService, vault: &'s Vault) -> HttpCrash<'s> {
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
    HttpCrash {
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

impl HttpCrash<'_> {
    /// Keys at the service that carry this fixture's name.
    fn keys(&self) -> Vec<Value> {
        self.service
            .keys()
            .into_iter()
            .filter(|key| key["name"] == self.name.as_str())
            .collect()
    }
}

impl CrashFixture for HttpCrash<'_> {
    fn env(&self) -> &TestEnv {
        &self.env
    }

    fn playbook(&self) -> &Path {
        &self.playbook
    }

    fn old_value(&self) -> String {
        self.old_secret.clone()
    }

    fn target_values(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.env.path("app.env")).unwrap();
        let in_env = dotenv_value(&text, "GATEWAY_API_KEY").unwrap();
        let in_vault = self.vault.get("secret", &self.vault_path).1["api_key"].clone();
        vec![("app-env".into(), in_env), ("vault-app".into(), in_vault)]
    }

    fn issuer_keys(&self) -> Option<Vec<(String, bool)>> {
        let keys = self
            .keys()
            .iter()
            .map(|key| {
                let id = key["id"].as_str().unwrap().to_string();
                (id, key["status"] == "active")
            })
            .collect();
        Some(keys)
    }

    fn old_key_id(&self) -> Option<String> {
        Some(self.old_id.clone())
    }

    fn old_key_accepted(&self) -> Option<bool> {
        Some(self.service.call_models(&self.old_secret) == 200)
    }

    fn check_rotated(&self, point: &str, new_value: &str) {
        let keys = self.keys();
        assert_eq!(keys[0]["ip_allowlist"], json!(["127.0.0.1/32"]), "{point}");
        assert_eq!(self.service.call_models(new_value), 200, "{point}");
    }
}

#[test]
fn http_issuer_crash_matrix() {
    let service = KeyService::start();
    let vault = Vault::from_env();
    run_matrix(
        "http issuer into dotenv and vault",
        &["http", "dotenv", "vault"],
        || http_crash(&service, &vault),
    );
}
