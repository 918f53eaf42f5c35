//! The dev stack's Prometheus and a private example key service per test,
//! scraped under the test's own `job` label so that queries see only the
//! test's series.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TestEnv, dotenv_value, stack_env, unique};

/// The variable the key service's simulated consumer reads.
pub const CONSUMER_VAR: &str = "GATEWAY_API_KEY";
/// Variable holding the key service's admin token, for the service and for
/// HTTP checks that call its admin API.
pub const ADMIN_TOKEN_ENV: &str = "KEYSERVICE_ADMIN_TOKEN";

pub struct Prometheus {
    pub url: String,
    targets_dir: PathBuf,
    http: reqwest::blocking::Client,
}

impl Prometheus {
    pub fn from_env() -> Self {
        Self {
            url: stack_env("PROMETHEUS_URL"),
            targets_dir: PathBuf::from(stack_env("KEYWHEEL_PROM_TARGETS_DIR")),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// Runs an instant query and returns its `data` member.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("query", promql);
        let answer: serde_json::Value = self.http.get(url).send().unwrap().json().unwrap();
        assert_eq!(answer["status"], "success", "query {promql}: {answer}");
        answer["data"].clone()
    }
}

/// An example key service with a simulated consumer, scraped by the dev
/// stack's Prometheus under `job`.
pub struct KeyService {
    pub job: String,
    pub url: String,
    /// The .env file the consumer reads its key from.
    pub env_file: PathBuf,
    admin_token: String,
    child: Child,
    target_file: PathBuf,
    http: reqwest::blocking::Client,
}

impl KeyService {
    /// Starts the service in the test's directory, writes its bootstrap key
    /// into `app.env`, registers it with Prometheus and waits until a query
    /// returns its request rate.
    pub fn start(env: &mut TestEnv, prometheus: &Prometheus) -> Self {
        let job = unique("watch");
        let admin_token = super::hex(&rand::random::<[u8; 16]>());
        env.secret(&admin_token);
        env.env(ADMIN_TOKEN_ENV, &admin_token);
        let env_file = env.path("app.env");
        let port_file = env.path("keyservice.port");
        let log = std::fs::File::create(env.path("keyservice.log")).unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/key_service.py");
        let child = Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .arg("--port-file")
            .arg(&port_file)
            .arg("--state-file")
            .arg(env.path("keyservice.json"))
            .arg("--bootstrap-key-file")
            .arg(&env_file)
            .arg("--consumer-env-file")
            .arg(&env_file)
            .args(["--consumer-var", CONSUMER_VAR])
            .env(ADMIN_TOKEN_ENV, &admin_token)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start examples/key_service.py with python3");
        let deadline = Instant::now() + Duration::from_secs(15);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "the key service did not start; see {}",
                env.path("keyservice.log").display()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let old_key = dotenv_value(&std::fs::read_to_string(&env_file).unwrap(), CONSUMER_VAR)
            .expect("bootstrap key in app.env");
        env.secret(&old_key);

        let target_file = prometheus.targets_dir.join(format!("{job}.json"));
        let targets = serde_json::json!([{
            "targets": [format!("127.0.0.1:{port}")],
            "labels": {"job": job},
        }]);
        std::fs::write(&target_file, targets.to_string()).unwrap();
        let service = Self {
            job,
            url: format!("http://127.0.0.1:{port}"),
            env_file,
            admin_token,
            child,
            target_file,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        service.wait_for_rate(prometheus);
        service
    }

    /// Waits until the request rate of this job is visible: Prometheus
    /// picks a new file_sd target up within about 5 s, and a rate needs
    /// two scrapes.
    fn wait_for_rate(&self, prometheus: &Prometheus) {
        let query = format!(
            "sum(rate(keyservice_requests_total{{job=\"{}\"}}[3s])) > 0",
            self.job
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let data = prometheus.query(&query);
            if data["result"].as_array().is_some_and(|r| !r.is_empty()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus did not see job {} within 30 s",
                self.job
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Returns the query of the ratio of 5xx responses over the last 3 s, 0
    /// when there are none.
    pub fn server_error_ratio(&self) -> String {
        self.ratio("5..")
    }

    /// Returns the query of the ratio of responses with a status matching
    /// `status` over the last 3 s, 0 when there are none.
    pub fn ratio(&self, status: &str) -> String {
        format!(
            "(sum(rate(keyservice_requests_total{{job=\"{job}\",status=~\"{status}\"}}[3s])) or vector(0)) / sum(rate(keyservice_requests_total{{job=\"{job}\"}}[3s]))",
            job = self.job
        )
    }

    /// Makes `rate` (0 to 1) of the protected calls fail with 500.
    pub fn set_error_rate(&self, rate: f64) {
        let response = self
            .http
            .post(format!("{}/_control/errors", self.url))
            .bearer_auth(&self.admin_token)
            .json(&serde_json::json!({ "rate": rate }))
            .send()
            .unwrap();
        assert!(response.status().is_success(), "{response:?}");
    }

    /// Returns the status (`active`, `disabled`) of every key, by id.
    pub fn key_statuses(&self) -> Vec<(String, String)> {
        let answer: serde_json::Value = self
            .http
            .get(format!("{}/v1/keys", self.url))
            .bearer_auth(&self.admin_token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        answer["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["id"].as_str().unwrap().to_string(),
                    k["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Returns the key the consumer uses now.
    pub fn consumer_key(&self) -> String {
        let text = std::fs::read_to_string(&self.env_file).unwrap();
        dotenv_value(&text, CONSUMER_VAR).expect("consumer key in app.env")
    }

    /// Calls `GET /v1/models` with `key` and returns the status.
    pub fn call_with(&self, key: &str) -> u16 {
        self.http
            .get(format!("{}/v1/models", self.url))
            .bearer_auth(key)
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for KeyService {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.target_file);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns a loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
