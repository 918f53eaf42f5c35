//! The example key service (examples/key_service.py) as a real process of
//! its own per test, with a blocking client for its admin API.
//!
//! The service logs one line per request, so its stderr goes to a file: a
//! pipe that is not read fills up and then blocks the service.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct KeyService {
    pub url: String,
    pub admin_token: String,
    /// The secret of the key the service made at its first start.
    pub bootstrap_secret: String,
    pub bootstrap_id: String,
    dir: tempfile::TempDir,
    propagation_delay: f64,
    child: Child,
    http: reqwest::blocking::Client,
}

impl KeyService {
    /// Starts a service whose keys work at once.
    pub fn start() -> Self {
        Self::with_delay(0.0)
    }

    /// Starts a service whose new keys are rejected for `delay` seconds.
    pub fn with_delay(delay: f64) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let admin_token = format!("admin-{}", super::hex(&rand::random::<[u8; 16]>()));
        let child = spawn(dir.path(), &admin_token, delay);
        let url = wait_for_port(dir.path(), &child);
        let bootstrap = std::fs::read_to_string(dir.path().join("bootstrap.env")).unwrap();
        let bootstrap_secret = super::dotenv_value(&bootstrap, "GATEWAY_API_KEY").unwrap();
        let mut service = Self {
            url,
            admin_token,
            bootstrap_secret,
            bootstrap_id: String::new(),
            dir,
            propagation_delay: delay,
            child,
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .build()
                .unwrap(),
        };
        service.bootstrap_id = service.keys()[0]["id"].as_str().unwrap().to_string();
        service
    }

    /// Kills the service (its in-memory idempotency cache is lost) and
    /// starts it again on the same state file. The URL changes.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("port"));
        self.child = spawn(self.dir.path(), &self.admin_token, self.propagation_delay);
        self.url = wait_for_port(self.dir.path(), &self.child);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("service.log")
    }

    fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("the key service responds");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> Vec<Value> {
        let (status, body) = self.admin(reqwest::Method::GET, "/v1/keys", None);
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    pub fn key(&self, id: &str) -> Option<Value> {
        let (status, body) = self.admin(reqwest::Method::GET, &format!("/v1/keys/{id}"), None);
        (status == 200).then_some(body)
    }

    /// Creates a key; returns its id and secret.
    pub fn create_key(&self, body: Value) -> (String, String) {
        let (status, body) = self.admin(reqwest::Method::POST, "/v1/keys", Some(body));
        assert_eq!(status, 201, "{body}");
        (
            body["id"].as_str().unwrap().to_string(),
            body["secret"].as_str().unwrap().to_string(),
        )
    }

    pub fn update(&self, id: &str, body: Value) {
        let (status, body) = self.admin(
            reqwest::Method::PATCH,
            &format!("/v1/keys/{id}"),
            Some(body),
        );
        assert_eq!(status, 200, "{body}");
    }

    /// Makes the next `count` admin calls of `operation` misbehave.
    pub fn fault(&self, operation: &str, mode: &str, count: u32) {
        let body = json!({"operation": operation, "mode": mode, "count": count});
        let (status, body) = self.admin(reqwest::Method::POST, "/_control/faults", Some(body));
        assert!(status < 300, "{body}");
    }

    /// Clears every injected fault and the error rate.
    pub fn reset_faults(&self) {
        let (status, body) = self.admin(reqwest::Method::POST, "/_control/reset-faults", None);
        assert!(status < 300, "{body}");
    }

    /// Status of `GET /v1/models` called with `secret`.
    pub fn call_models(&self, secret: &str) -> u16 {
        self.http
            .get(format!("{}/v1/models", self.url))
            .bearer_auth(secret)
            .send()
            .expect("the key service responds")
            .status()
            .as_u16()
    }

    /// Protected calls made with key `key_id` that got `status`.
    pub fn calls(&self, key_id: &str, status: u16) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .expect("the key service responds")
            .text()
            .unwrap();
        let labels = format!("status=\"{status}\",key_id=\"{key_id}\"");
        text.lines()
            .filter(|line| line.starts_with("keyservice_requests_total{") && line.contains(&labels))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for KeyService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(dir: &Path, admin_token: &str, delay: f64) -> Child {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/key_service.py");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("service.log"))
        .unwrap();
    Command::new("python3")
        .arg(script)
        .args(["--port", "0", "--port-file"])
        .arg(dir.join("port"))
        .arg("--state-file")
        .arg(dir.join("keys.json"))
        .arg("--bootstrap-key-file")
        .arg(dir.join("bootstrap.env"))
        .args(["--propagation-delay", &delay.to_string()])
        .env("KEYSERVICE_ADMIN_TOKEN", admin_token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start python3 examples/key_service.py")
}

fn wait_for_port(dir: &Path, child: &Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("port"))
            && let Ok(port) = text.trim().parse::<u16>()
        {
            return format!("http://127.0.0.1:{port}");
        }
        assert!(
            Instant::now() < deadline,
            "the key service (pid {}) did not start; see {}",
            child.id(),
            dir.join("service.log").display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
