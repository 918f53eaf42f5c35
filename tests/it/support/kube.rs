//! A Kubernetes API for the tests to rotate into. By default it is a private
//! emulator per test, `tests/support/k8s_emulator.py`, which is not a real
//! API server (its module docstring says where it differs). Tests marked as
//! needing a cluster use the real one whose kubeconfig path
//! `KEYWHEEL_TEST_KUBECONFIG` holds. The user's default kubeconfig and
//! context are never used.
//!
//! Objects are set up and inspected through the real `kube` client in both
//! cases. Fault injection (conflicts, 403s, stalled rollouts, failures) and
//! the request log exist on the emulator only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{TestEnv, unique};

/// Variable naming the kubeconfig of a real cluster for the tests marked
/// as needing one.
pub const REAL_CLUSTER_ENV: &str = "KEYWHEEL_TEST_KUBECONFIG";

/// The variable test playbooks name in `kubeconfig_env`.
pub const PLAYBOOK_KUBECONFIG_ENV: &str = "KEYWHEEL_TEST_KUBECONFIG";

/// Image of the test workloads on a real cluster: it must start and stay
/// running. The pause image is on every node, because the kubelet uses it.
fn test_image() -> String {
    std::env::var("KEYWHEEL_TEST_IMAGE").unwrap_or_else(|_| "registry.k8s.io/pause:3.10".into())
}

/// A workload kind as the tests name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::StatefulSet => "statefulset",
            Self::DaemonSet => "daemonset",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Self::Deployment => "deployments",
            Self::StatefulSet => "statefulsets",
            Self::DaemonSet => "daemonsets",
        }
    }
}

pub struct Cluster {
    emulator: Option<Emulator>,
    kubeconfig: PathBuf,
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    /// Namespaces this cluster handle created; deleted on drop on a real
    /// cluster.
    created: Mutex<Vec<String>>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a private emulator whose simulated pods take 50 ms per step.
    pub fn emulator() -> Self {
        Self::emulator_with_step(0.05)
    }

    pub fn emulator_with_step(rollout_step: f64) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let emulator = Emulator::start(dir.path(), rollout_step);
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, emulator_kubeconfig(&emulator.url)).expect("write kubeconfig");
        Self::connect(Some(emulator), kubeconfig, dir)
    }

    /// Connects to the real cluster of `KEYWHEEL_TEST_KUBECONFIG`.
    pub fn real() -> Self {
        let path = std::env::var(REAL_CLUSTER_ENV).unwrap_or_else(|_| {
            panic!("{REAL_CLUSTER_ENV} is not set: point it at the kubeconfig of a disposable cluster (kind or k3d) to run the tests marked as needing one")
        });
        let dir = tempfile::tempdir().expect("temporary directory");
        Self::connect(None, PathBuf::from(path), dir)
    }

    fn connect(emulator: Option<Emulator>, kubeconfig: PathBuf, dir: tempfile::TempDir) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let client = runtime.block_on(async {
            let text = std::fs::read_to_string(&kubeconfig).expect("read kubeconfig");
            let config = kube::config::Kubeconfig::from_yaml(&text).expect("valid kubeconfig");
            let options = kube::config::KubeConfigOptions::default();
            let config = kube::Config::from_custom_kubeconfig(config, &options)
                .await
                .expect("usable kubeconfig");
            kube::Client::try_from(config).expect("kube client")
        });
        Self {
            emulator,
            kubeconfig,
            runtime,
            client,
            created: Mutex::new(Vec::new()),
            _dir: dir,
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Returns the emulator's control API, when this is the emulator.
    pub fn emulator_control(&self) -> Option<&Emulator> {
        self.emulator.as_ref()
    }

    /// Returns the emulator, for tests that only make sense there.
    pub fn control(&self) -> &Emulator {
        self.emulator
            .as_ref()
            .expect("this test needs the emulator's control API")
    }

    /// Points keywheel at this cluster through the variable test
    /// playbooks name in `kubeconfig_env`.
    pub fn configure(&self, env: &mut TestEnv) {
        env.env(PLAYBOOK_KUBECONFIG_ENV, self.kubeconfig.to_str().unwrap());
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn api<K>(&self, namespace: &str) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        kube::Api::namespaced(self.client.clone(), namespace)
    }

    /// Creates a namespace with a unique name starting with `prefix`.
    pub fn namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> String {
        let name = unique(prefix).to_lowercase();
        let namespace: Namespace = from_json(json!({
            "metadata": {"name": name, "labels": to_map(labels)}
        }));
        let api: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        self.block_on(api.create(&PostParams::default(), &namespace))
            .unwrap_or_else(|err| panic!("create namespace {name}: {err}"));
        self.created.lock().unwrap().push(name.clone());
        name
    }

    /// Sets label `key` of a namespace, or removes it with `None`.
    pub fn label_namespace(&self, name: &str, key: &str, value: Option<&str>) {
        let api: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        let patch = json!({"metadata": {"labels": {key: value}}});
        self.block_on(api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)))
            .unwrap_or_else(|err| panic!("label namespace {name}: {err}"));
    }

    pub fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        data: &[(&str, &[u8])],
        labels: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) {
        use base64::Engine as _;
        let encoded: BTreeMap<&str, String> = data
            .iter()
            .map(|(key, value)| {
                let text = base64::engine::general_purpose::STANDARD.encode(value);
                (*key, text)
            })
            .collect();
        let secret: Secret = from_json(json!({
            "metadata": {
                "name": name,
                "labels": to_map(labels),
                "annotations": to_map(annotations),
            },
            "type": "Opaque",
            "data": encoded,
        }));
        self.block_on(
            self.api::<Secret>(namespace)
                .create(&PostParams::default(), &secret),
        )
        .unwrap_or_else(|err| panic!("create secret {namespace}/{name}: {err}"));
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        self.block_on(self.api::<Secret>(namespace).get_opt(name))
            .unwrap_or_else(|err| panic!("get secret {namespace}/{name}: {err}"))
    }

    /// Reads the bytes of one key of a Secret; `None` when either is
    /// missing.
    pub fn secret_value(&self, namespace: &str, name: &str, key: &str) -> Option<Vec<u8>> {
        let secret = self.secret(namespace, name)?;
        secret.data?.get(key).map(|value| value.0.clone())
    }

    /// Reads a Secret value as text and registers it with `env` as a secret.
    pub fn secret_text(&self, env: &TestEnv, namespace: &str, name: &str, key: &str) -> String {
        let bytes = self
            .secret_value(namespace, name, key)
            .unwrap_or_else(|| panic!("secret {namespace}/{name} has no key {key}"));
        let text = String::from_utf8(bytes).expect("UTF-8 value");
        env.secret(&text);
        text
    }

    /// Creates a workload of `kind` whose pods run the test image.
    pub fn create_workload(&self, kind: Kind, namespace: &str, name: &str, replicas: i32) {
        let mut spec = json!({
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "app", "image": test_image()}]
                }
            }
        });
        if kind != Kind::DaemonSet {
            spec["replicas"] = json!(replicas);
        }
        if kind == Kind::StatefulSet {
            spec["serviceName"] = json!(name);
        }
        let object = json!({"metadata": {"name": name}, "spec": spec});
        let params = PostParams::default();
        let result = match kind {
            Kind::Deployment => self
                .block_on(
                    self.api::<Deployment>(namespace)
                        .create(&params, &from_json(object)),
                )
                .map(drop),
            Kind::StatefulSet => self
                .block_on(
                    self.api::<StatefulSet>(namespace)
                        .create(&params, &from_json(object)),
                )
                .map(drop),
            Kind::DaemonSet => self
                .block_on(
                    self.api::<DaemonSet>(namespace)
                        .create(&params, &from_json(object)),
                )
                .map(drop),
        };
        result.unwrap_or_else(|err| panic!("create {} {namespace}/{name}: {err}", kind.name()));
    }

    /// Reads a workload as JSON.
    pub fn workload(&self, kind: Kind, namespace: &str, name: &str) -> Value {
        let result = match kind {
            Kind::Deployment => self.get_json::<Deployment>(namespace, name),
            Kind::StatefulSet => self.get_json::<StatefulSet>(namespace, name),
            Kind::DaemonSet => self.get_json::<DaemonSet>(namespace, name),
        };
        result.unwrap_or_else(|err| panic!("get {} {namespace}/{name}: {err}", kind.name()))
    }

    fn get_json<K>(&self, namespace: &str, name: &str) -> Result<Value, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned
            + serde::Serialize,
    {
        let object = self.block_on(self.api::<K>(namespace).get(name))?;
        Ok(serde_json::to_value(object).expect("workload as JSON"))
    }

    /// Reads the restart marker on a workload's pod template.
    pub fn restart_marker(&self, kind: Kind, namespace: &str, name: &str) -> Option<String> {
        let workload = self.workload(kind, namespace, name);
        workload["spec"]["template"]["metadata"]["annotations"]["keywheel.io/restart"]
            .as_str()
            .map(str::to_string)
    }

    /// Waits until a workload's rollout is complete: every desired pod
    /// updated, ready and available, for the generation that is current.
    pub fn wait_rolled_out(&self, kind: Kind, namespace: &str, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let workload = self.workload(kind, namespace, name);
            if rolled_out(kind, &workload) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} {namespace}/{name} did not roll out: {}",
                kind.name(),
                workload["status"]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.emulator.is_some() {
            return;
        }
        let api: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        for name in self.created.lock().unwrap().drain(..) {
            let _ = self
                .runtime
                .block_on(api.delete(&name, &Default::default()));
        }
    }
}

/// Checks whether the status of `workload` shows a complete rollout, with
/// code independent of keywheel's own check.
pub fn rolled_out(kind: Kind, workload: &Value) -> bool {
    let number = |field: &str| workload["status"][field].as_i64().unwrap_or(0);
    let generation = workload["metadata"]["generation"].as_i64().unwrap_or(0);
    if number("observedGeneration") < generation {
        return false;
    }
    match kind {
        Kind::Deployment | Kind::StatefulSet => {
            let want = workload["spec"]["replicas"].as_i64().unwrap_or(1);
            let revisions_match = kind == Kind::Deployment
                || workload["status"]["currentRevision"] == workload["status"]["updateRevision"];
            number("replicas") == want
                && number("updatedReplicas") == want
                && number("readyReplicas") == want
                && number("availableReplicas") == want
                && number("unavailableReplicas") == 0
                && revisions_match
        }
        Kind::DaemonSet => {
            let want = number("desiredNumberScheduled");
            number("updatedNumberScheduled") == want
                && number("numberReady") == want
                && number("numberAvailable") == want
                && number("numberUnavailable") == 0
        }
    }
}

/// One request from the emulator's log.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The request body; it may hold Secret values, so never print it.
    pub body: Value,
}

/// A private emulator process, stopped when dropped.
pub struct Emulator {
    child: Child,
    pub url: String,
    http: reqwest::blocking::Client,
}

impl Emulator {
    fn start(dir: &Path, rollout_step: f64) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/k8s_emulator.py");
        let port_file = dir.join("port");
        let log = std::fs::File::create(dir.join("emulator.log")).expect("emulator log");
        let child = Command::new("python3")
            .arg(&script)
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .args(["--rollout-step", &rollout_step.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start python3 tests/support/k8s_emulator.py");
        let mut emulator = Self {
            child,
            url: String::new(),
            http: reqwest::blocking::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse::<u16>()
            {
                break port;
            }
            if let Ok(Some(status)) = emulator.child.try_wait() {
                panic!(
                    "the emulator exited with {status}: {}",
                    std::fs::read_to_string(dir.join("emulator.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the emulator did not start in 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        emulator.url = format!("http://127.0.0.1:{port}");
        emulator
    }

    /// Calls the control API under `/_emulator/`.
    pub fn control(&self, method: &str, action: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_emulator/{action}", self.url);
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("emulator control API answers");
        let status = response.status();
        let answer: Value = response.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "control {action}: {status} {answer}");
        answer
    }

    pub fn requests(&self) -> Vec<Logged> {
        let answer = self.control("GET", "requests", None);
        answer["requests"]
            .as_array()
            .expect("request list")
            .iter()
            .map(|entry| Logged {
                method: entry["method"].as_str().unwrap_or_default().to_string(),
                path: entry["path"].as_str().unwrap_or_default().to_string(),
                status: entry["status"].as_u64().unwrap_or(0) as u16,
                body: entry["body"].clone(),
            })
            .collect()
    }

    /// Requests with `method` whose path ends with `suffix`.
    pub fn requests_to(&self, method: &str, suffix: &str) -> Vec<Logged> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.ends_with(suffix))
            .collect()
    }

    pub fn clear_requests(&self) {
        self.control("DELETE", "requests", None);
    }

    /// Makes the emulator reject `verbs` on `resource` in `namespace` with
    /// 403 Forbidden.
    pub fn forbid(&self, namespace: &str, verbs: &[&str], resource: &str) {
        self.control(
            "POST",
            "forbid",
            Some(json!({"namespace": namespace, "verbs": verbs, "resource": resource})),
        );
    }

    pub fn clear_forbid(&self) {
        self.control("DELETE", "forbid", None);
    }

    /// Lets another writer change the Secret before each of its next
    /// `count` writes, setting `data_key` too when given.
    pub fn conflict(&self, namespace: &str, name: &str, count: u32, data_key: Option<&str>) {
        let mut body = json!({
            "namespace": namespace, "name": name, "resource": "secrets", "count": count
        });
        if let Some(key) = data_key {
            body["data_key"] = json!(key);
        }
        self.control("POST", "conflict", Some(body));
    }

    /// Makes the next `count` matching requests fail with a Status.
    pub fn fail(&self, method: &str, path_regex: &str, status: u16, reason: &str, count: u32) {
        self.control(
            "POST",
            "fail",
            Some(json!({
                "method": method, "path_regex": path_regex, "status": status,
                "reason": reason, "count": count
            })),
        );
    }

    /// Stalls every rollout of a workload until `clear_stalls`.
    pub fn stall(&self, kind: Kind, namespace: &str, name: &str) {
        self.control(
            "POST",
            "stall",
            Some(json!({"namespace": namespace, "kind": kind.plural(), "name": name})),
        );
    }

    pub fn clear_stalls(&self) {
        self.control("DELETE", "stall", None);
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn emulator_kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: emulator
  cluster:
    server: {url}
users:
- name: emulator
  user: {{}}
contexts:
- name: emulator
  context:
    cluster: emulator
    user: emulator
    namespace: default
current-context: emulator
"
    )
}

fn to_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn from_json<T: DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("object from JSON")
}
