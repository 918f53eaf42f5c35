//! A blocking client for the OpenBao dev server, to set up and inspect what
//! the tests rotate.

use std::collections::BTreeMap;

use serde_json::{Value, json};

pub struct Vault {
    pub addr: String,
    pub token: String,
    http: reqwest::blocking::Client,
}

impl Vault {
    pub fn from_env() -> Self {
        Self {
            addr: super::stack_env("VAULT_ADDR"),
            token: super::stack_env("VAULT_TOKEN"),
            http: reqwest::blocking::Client::new(),
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}/v1/{}", self.addr.trim_end_matches('/'), path);
        let mut request = self
            .http
            .request(method, url)
            .header("X-Vault-Token", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("OpenBao answers");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Mounts a KV engine of `version` at `mount`.
    pub fn enable_kv(&self, mount: &str, version: u8) {
        let body = json!({"type": "kv", "options": {"version": version.to_string()}});
        let (status, answer) = self.request(
            reqwest::Method::POST,
            &format!("sys/mounts/{mount}"),
            Some(body),
        );
        assert!(status < 300, "mount {mount}: {status} {answer}");
    }

    /// Writes a new version; returns its number.
    pub fn put(&self, mount: &str, path: &str, data: &[(&str, &str)]) -> u64 {
        let data: BTreeMap<&str, &str> = data.iter().copied().collect();
        let cas = self.current_version(mount, path);
        let body = json!({"options": {"cas": cas}, "data": data});
        let (status, answer) = self.request(
            reqwest::Method::POST,
            &format!("{mount}/data/{path}"),
            Some(body),
        );
        assert!(status < 300, "put {mount}/{path}: {status} {answer}");
        answer["data"]["version"].as_u64().expect("version")
    }

    /// Reads the current version: (version, data).
    pub fn get(&self, mount: &str, path: &str) -> (u64, BTreeMap<String, String>) {
        let (status, answer) =
            self.request(reqwest::Method::GET, &format!("{mount}/data/{path}"), None);
        assert_eq!(status, 200, "get {mount}/{path}: {answer}");
        let version = answer["data"]["metadata"]["version"]
            .as_u64()
            .expect("version");
        let data = answer["data"]["data"]
            .as_object()
            .expect("data")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        (version, data)
    }

    /// Current version from the metadata, 0 when the secret does not exist.
    pub fn current_version(&self, mount: &str, path: &str) -> u64 {
        let (status, answer) = self.request(
            reqwest::Method::GET,
            &format!("{mount}/metadata/{path}"),
            None,
        );
        if status == 404 {
            return 0;
        }
        answer["data"]["current_version"].as_u64().unwrap_or(0)
    }

    /// Soft-deletes the given versions.
    pub fn soft_delete(&self, mount: &str, path: &str, versions: &[u64]) {
        let (status, answer) = self.request(
            reqwest::Method::POST,
            &format!("{mount}/delete/{path}"),
            Some(json!({"versions": versions})),
        );
        assert!(status < 300, "delete: {status} {answer}");
    }

    /// Sets `cas_required` on a mount.
    pub fn require_cas(&self, mount: &str) {
        let (status, answer) = self.request(
            reqwest::Method::POST,
            &format!("{mount}/config"),
            Some(json!({"cas_required": true})),
        );
        assert!(status < 300, "config: {status} {answer}");
    }
}
