//! The kubernetes target through the real `kube` client, against a private
//! API emulator per test. The cases listed in `cluster_tests!` also run
//! against a real cluster, as ignored tests: set `KEYWHEEL_TEST_KUBECONFIG`
//! to its kubeconfig path and pass `-- --ignored`.
//!
//! Request bodies in the emulator's log hold Secret values: assertions
//! compare them but never print them.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::support::crash::{CrashFixture, run_matrix};
use crate::support::kube::{Cluster, Kind, rolled_out};
use crate::support::{EXIT_ATTENTION, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Run, TestEnv, unique};

const SECRET: &str = "app-secret";
const ORIGINAL: &str = "sk_live_original_key_00000000";

/// The concurrent writer's annotation the emulator sets.
const CONCURRENT_WRITER: &str = "k8s-emulator.test/concurrent-writer";

/// Cases that run on the emulator, and on a real cluster when asked for.
// NOTE: the real-cluster variants have only been compiled, never run: no
// cluster could run where they were written, so their timing (rollouts of
// real pods) and their cleanup are untested.
macro_rules! cluster_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                cases::$case(&Cluster::emulator());
            }
        )*

        mod real_cluster {
            use super::*;
            $(
                #[test]
                #[ignore = "needs a real cluster: set KEYWHEEL_TEST_KUBECONFIG to a disposable cluster's kubeconfig and pass --ignored"]
                fn $case() {
                    cases::$case(&Cluster::real());
                }
            )*
        }
    };
}

cluster_tests!(
    secret_holds_exact_bytes,
    push_keeps_other_keys_and_metadata,
    restart_waits_for_complete_rollout,
    resume_uses_journaled_namespaces,
    crash_at_every_journal_point_then_resume_or_rollback,
);

/// Builds the text of a playbook with one kubernetes target named `app`. `namespaces`
/// is the target's namespace line. `target` is appended to the target, and
/// `rest` to the playbook.
fn playbook(namespaces: &str, target: &str, rest: &str) -> String {
    format!(
        "version: 1
name: {name}
issuer:
  type: random
  prefix: sk_live_
targets:
  - name: app
    type: kubernetes
    kubeconfig_env: KEYWHEEL_TEST_KUBECONFIG
    {namespaces}
    secret_name: {SECRET}
    set:
      API_KEY: secret
{target}{rest}",
        name = unique("k8s")
    )
}

fn list(namespaces: &[String]) -> String {
    format!("namespaces: [{}]", namespaces.join(", "))
}

/// Makes a test environment pointed at `cluster`.
fn env_for(cluster: &Cluster) -> TestEnv {
    let mut env = TestEnv::new();
    cluster.configure(&mut env);
    env.secret(ORIGINAL);
    env
}

/// Creates `count` namespaces, each with the Secret holding `API_KEY` and
/// `OTHER`.
fn seeded_namespaces(cluster: &Cluster, count: usize) -> Vec<String> {
    (0..count)
        .map(|_| {
            let namespace = cluster.namespace("kw", &[]);
            seed_secret(cluster, &namespace);
            namespace
        })
        .collect()
}

/// Seeds one namespace and returns it with a playbook that rotates its
/// Secret.
fn one_namespace(cluster: &Cluster) -> (String, String) {
    let namespace = seeded_namespaces(cluster, 1).remove(0);
    let text = playbook(&format!("namespace: {namespace}"), "", "");
    (namespace, text)
}

fn seed_secret(cluster: &Cluster, namespace: &str) {
    cluster.create_secret(
        namespace,
        SECRET,
        &[("API_KEY", ORIGINAL.as_bytes()), ("OTHER", b"keep\n")],
        &[],
        &[],
    );
}

fn run(env: &TestEnv, text: &str, extra: &[&str]) -> Run {
    let path = env.playbook("k8s.yaml", text);
    let mut args = vec!["run", "--json", "--yes"];
    args.extend_from_slice(extra);
    args.push(path.to_str().unwrap());
    env.keywheel(&args)
}

fn api_key(cluster: &Cluster, namespace: &str) -> Vec<u8> {
    cluster
        .secret_value(namespace, SECRET, "API_KEY")
        .unwrap_or_else(|| panic!("{namespace}/{SECRET} has no API_KEY"))
}

fn data_keys(cluster: &Cluster, namespace: &str) -> BTreeSet<String> {
    let secret = cluster
        .secret(namespace, SECRET)
        .expect("the Secret exists");
    secret.data.unwrap_or_default().into_keys().collect()
}

fn secret_path(namespace: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/secrets/{SECRET}")
}

fn resource_version(body: &Value) -> u64 {
    body["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("the write carries a resourceVersion")
}

fn steps(env: &TestEnv, run_id: &str) -> Vec<(String, String)> {
    let status = env.keywheel(&["status", run_id, "--json"]).json();
    status["runs"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Finds the sequence number of the first journal record of `run_id` that
/// `matches`.
fn record_number(env: &TestEnv, run_id: &str, matches: impl Fn(&Value) -> bool) -> u64 {
    let text = std::fs::read_to_string(env.journal(run_id)).unwrap();
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(_, json)| serde_json::from_str::<Value>(json).unwrap())
        .find(|record| matches(record))
        .and_then(|record| record["seq"].as_u64())
        .expect("a matching journal record")
}

/// Cases run against the emulator and, when asked for, a real cluster.
mod cases {
    use super::*;

    pub fn secret_holds_exact_bytes(cluster: &Cluster) {
        let namespace = &seeded_namespaces(cluster, 1)[0];
        let env = env_for(cluster);
        let text = playbook(&format!("namespace: {namespace}"), "", "")
            // A deterministic six-byte key: "s3cr3" and one "t".
            .replace(
                "  prefix: sk_live_\n",
                "  prefix: s3cr3\n  length: 1\n  characters: t\n",
            );

        run(&env, &text, &[]).assert_code(EXIT_OK);

        assert_eq!(api_key(cluster, namespace), b"s3cr3t");
        let stored = serde_json::to_value(cluster.secret(namespace, SECRET).unwrap()).unwrap();
        assert_eq!(stored["data"]["API_KEY"], "czNjcjN0");
        if let Some(emulator) = cluster.emulator_control() {
            let log = emulator.requests();
            let path = secret_path(namespace);
            let put = log
                .iter()
                .position(|r| r.method == "PUT" && r.path == path)
                .expect("an update of the Secret");
            assert_eq!(log[put].body["data"]["API_KEY"], "czNjcjN0");
            assert!(log[put].body.get("stringData").is_none(), "stringData sent");
            let read_back = log[put + 1..]
                .iter()
                .any(|r| r.method == "GET" && r.path == path);
            assert!(read_back, "no read after the write");
        }
    }

    pub fn push_keeps_other_keys_and_metadata(cluster: &Cluster) {
        let namespace = cluster.namespace("kw", &[]);
        cluster.create_secret(
            &namespace,
            SECRET,
            &[("API_KEY", ORIGINAL.as_bytes()), ("OTHER", b"\x00\xffkeep")],
            &[("team", "payments")],
            &[("owner", "ops"), ("note", "do not edit")],
        );
        let before = cluster.secret(&namespace, SECRET).unwrap().metadata;
        let env = env_for(cluster);
        // KEY_ID is missing and gets added; API_KEY is replaced.
        let text = playbook(
            &format!("namespace: {namespace}"),
            "      KEY_ID: id\n    create: true\n",
            "",
        );

        run(&env, &text, &[]).assert_code(EXIT_OK);

        let after = cluster.secret(&namespace, SECRET).unwrap();
        let keys: Vec<String> = data_keys(cluster, &namespace).into_iter().collect();
        assert_eq!(keys, ["API_KEY", "KEY_ID", "OTHER"]);
        assert_eq!(
            cluster.secret_value(&namespace, SECRET, "OTHER").unwrap(),
            b"\x00\xffkeep"
        );
        let key = cluster.secret_text(&env, &namespace, SECRET, "API_KEY");
        assert!(
            key.starts_with("sk_live_") && key != ORIGINAL,
            "not rotated"
        );
        assert_eq!(after.metadata.labels, before.labels);
        assert_eq!(after.metadata.annotations, before.annotations);
        assert_eq!(after.type_.as_deref(), Some("Opaque"));
        if let Some(emulator) = cluster.emulator_control() {
            let writes: Vec<_> = emulator
                .requests()
                .into_iter()
                .filter(|r| r.path.contains("/secrets") && r.method != "GET")
                .collect();
            assert!(!writes.is_empty());
            for write in writes {
                assert!(write.body.get("stringData").is_none(), "stringData sent");
                assert!(write.body["data"].is_object(), "no data in a write");
            }
        }
    }

    pub fn restart_waits_for_complete_rollout(cluster: &Cluster) {
        let namespace = &seeded_namespaces(cluster, 1)[0];
        let workloads = [
            (Kind::Deployment, "web", 2),
            (Kind::StatefulSet, "db", 2),
            (Kind::DaemonSet, "agent", 0),
        ];
        for (kind, name, replicas) in workloads {
            cluster.create_workload(kind, namespace, name, replicas);
            cluster.wait_rolled_out(kind, namespace, name);
        }
        let env = env_for(cluster);
        let text = playbook(
            &format!("namespace: {namespace}"),
            "    restart: [deployment/web, statefulset/db, daemonset/agent]\n    rollout_timeout: 3m\n",
            "",
        );
        let path = env.playbook("k8s.yaml", &text);

        let plan = env.keywheel(&["plan", path.to_str().unwrap()]);
        plan.assert_code(EXIT_OK);
        assert!(plan.stdout.contains("restart:app"), "{}", plan.stdout);

        let report = run(&env, &text, &[]).assert_code(EXIT_OK).json();
        let run_id = report["run_id"].as_str().unwrap();
        for (kind, name, _) in workloads {
            let marker = cluster.restart_marker(kind, namespace, name);
            assert_eq!(marker.as_deref(), Some(&*format!("{run_id}/restart:app")));
            let workload = cluster.workload(kind, namespace, name);
            assert!(
                rolled_out(kind, &workload),
                "{} {name} not rolled out when keywheel finished: {}",
                kind.name(),
                workload["status"]
            );
        }
        cluster.secret_text(&env, namespace, SECRET, "API_KEY");
        let done: Vec<(String, String)> = steps(&env, run_id);
        assert!(
            done.contains(&("restart:app".into(), "done".into())),
            "{done:?}"
        );

        if let Some(emulator) = cluster.emulator_control() {
            let log = emulator.requests();
            let last_put = log
                .iter()
                .rposition(|r| r.method == "PUT" && r.path.contains("/secrets/"))
                .unwrap();
            let first_patch = log.iter().position(|r| r.method == "PATCH").unwrap();
            assert!(
                last_put < first_patch,
                "a workload restarted before every push"
            );
            for (kind, name, _) in workloads {
                let suffix = format!("/{}s/{name}", kind.name());
                let patch = log
                    .iter()
                    .position(|r| r.method == "PATCH" && r.path.ends_with(&suffix))
                    .unwrap();
                let polled = log[patch..]
                    .iter()
                    .any(|r| r.method == "GET" && r.path.ends_with(&suffix));
                assert!(polled, "{name}: status never read after the restart");
            }
        }
    }

    pub fn resume_uses_journaled_namespaces(cluster: &Cluster) {
        let label = unique("sel").to_lowercase();
        let first = cluster.namespace("kw", &[("kw-test", &label)]);
        let second = cluster.namespace("kw", &[("kw-test", &label)]);
        let later = cluster.namespace("kw", &[]);
        for namespace in [&first, &second, &later] {
            seed_secret(cluster, namespace);
        }
        let env = env_for(cluster);
        let text = playbook(
            &format!("namespace_selector: kw-test={label}"),
            "",
            "policy:\n  concurrency: 1\n",
        );
        let path = env.playbook("k8s.yaml", &text);

        // Killed right after the preflight record.
        env.keywheel_crashing("after:2", &["run", path.to_str().unwrap()])
            .assert_killed();
        let run_id = env.last_run_id();
        let preflight = record_number(&env, &run_id, |r| r["event"] == "preflight");
        assert_eq!(preflight, 2);

        // The selector now matches another set; the run keeps its own.
        cluster.label_namespace(&later, "kw-test", Some(&label));
        cluster.label_namespace(&second, "kw-test", None);
        let report = env
            .keywheel(&["resume", &run_id, "--json"])
            .assert_code(EXIT_OK)
            .json();

        let names: Vec<&str> = report["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let mut expected = vec![format!("app/{first}"), format!("app/{second}")];
        expected.sort();
        assert_eq!(names, expected);
        let key = cluster.secret_text(&env, &first, SECRET, "API_KEY");
        assert_ne!(key, ORIGINAL);
        assert_eq!(api_key(cluster, &second), key.as_bytes());
        assert_eq!(api_key(cluster, &later), ORIGINAL.as_bytes());
    }

    /// Kills a run at every journal point, then resumes or rolls it back.
    /// The run pushes to two namespaces and restarts a Deployment in one.
    pub fn crash_at_every_journal_point_then_resume_or_rollback(cluster: &Cluster) {
        run_matrix(
            "random issuer into kubernetes with a restart",
            &["random", "kubernetes"],
            || crash_setup(cluster),
        );
    }
}

pub struct CrashSetup<'c> {
    cluster: &'c Cluster,
    pub env: TestEnv,
    /// The first one has the Deployment `web`.
    pub namespaces: Vec<String>,
    pub playbook: std::path::PathBuf,
}

pub fn crash_setup(cluster: &Cluster) -> CrashSetup<'_> {
    let namespaces = seeded_namespaces(cluster, 2);
    cluster.create_workload(Kind::Deployment, &namespaces[0], "web", 1);
    cluster.wait_rolled_out(Kind::Deployment, &namespaces[0], "web");
    let env = env_for(cluster);
    let target = format!(
        "    restart:\n      - workload: deployment/web\n        namespace: {}\n    rollout_timeout: 2m\n",
        namespaces[0]
    );
    let text = playbook(&list(&namespaces), &target, "policy:\n  concurrency: 1\n");
    let playbook = env.playbook("crash.yaml", &text);
    CrashSetup {
        cluster,
        env,
        namespaces,
        playbook,
    }
}

impl CrashSetup<'_> {
    fn assert_web_rolled_out(&self, point: &str) {
        let workload = self
            .cluster
            .workload(Kind::Deployment, &self.namespaces[0], "web");
        assert!(
            rolled_out(Kind::Deployment, &workload),
            "{point}: web not rolled out: {}",
            workload["status"]
        );
    }
}

impl CrashFixture for CrashSetup<'_> {
    fn env(&self) -> &TestEnv {
        &self.env
    }

    fn playbook(&self) -> &std::path::Path {
        &self.playbook
    }

    fn old_value(&self) -> String {
        ORIGINAL.into()
    }

    fn target_values(&self) -> Vec<(String, String)> {
        self.namespaces
            .iter()
            .map(|namespace| {
                let value = String::from_utf8(api_key(self.cluster, namespace)).unwrap();
                (format!("app/{namespace}"), value)
            })
            .collect()
    }

    fn check_rotated(&self, point: &str, _new_value: &str) {
        for namespace in &self.namespaces {
            assert_eq!(
                self.cluster
                    .secret_value(namespace, SECRET, "OTHER")
                    .unwrap(),
                b"keep\n",
                "{point}"
            );
        }
        let marker = self
            .cluster
            .restart_marker(Kind::Deployment, &self.namespaces[0], "web")
            .unwrap_or_default();
        assert!(
            marker.ends_with(&format!("/restart:app/{}", self.namespaces[0])),
            "{point}: web was not restarted after the push: {marker:?}"
        );
        self.assert_web_rolled_out(point);
    }

    fn check_original(&self, point: &str) {
        for namespace in &self.namespaces {
            let keys: Vec<String> = data_keys(self.cluster, namespace).into_iter().collect();
            assert_eq!(keys, ["API_KEY", "OTHER"], "{point}");
        }
        // Restarted again after the restore when it was restarted at all.
        let marker = self
            .cluster
            .restart_marker(Kind::Deployment, &self.namespaces[0], "web");
        if let Some(marker) = marker {
            assert!(
                marker.contains("/restart-after-restore:"),
                "{point}: web keeps pods started with the new key: {marker}"
            );
        }
        self.assert_web_rolled_out(point);
    }
}

// ---------------------------------------------------------------- emulator
// Cases that need fault injection or the request log.

#[test]
fn conflict_mid_run_is_retried_with_resource_version() {
    let cluster = Cluster::emulator();
    let (namespace, text) = one_namespace(&cluster);
    let namespace = &namespace;
    let emulator = cluster.control();
    emulator.conflict(namespace, SECRET, 2, None);
    let env = env_for(&cluster);

    let run = run(&env, &text, &[]);

    run.assert_code(EXIT_OK);
    assert!(run.stderr.contains("409 Conflict"), "{}", run.stderr);
    let puts = emulator.requests_to("PUT", &secret_path(namespace));
    let statuses: Vec<u16> = puts.iter().map(|p| p.status).collect();
    assert_eq!(statuses, [409, 409, 200]);
    let versions: Vec<u64> = puts.iter().map(|p| resource_version(&p.body)).collect();
    assert!(
        versions.windows(2).all(|pair| pair[0] < pair[1]),
        "each retry must carry the resourceVersion just read: {versions:?}"
    );
    let secret = cluster.secret(namespace, SECRET).unwrap();
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert!(
        annotations.contains_key(CONCURRENT_WRITER),
        "the other write was lost"
    );
    let key = cluster.secret_text(&env, namespace, SECRET, "API_KEY");
    assert_ne!(key, ORIGINAL);
}

#[test]
fn endless_conflicts_fail_without_dropping_resource_version() {
    let cluster = Cluster::emulator();
    let (namespace, text) = one_namespace(&cluster);
    let namespace = &namespace;
    let emulator = cluster.control();
    emulator.conflict(namespace, SECRET, 50, None);
    let env = env_for(&cluster);

    let run = run(&env, &text, &[]);

    run.assert_code(EXIT_FAILED);
    assert!(run.stderr.contains("kept changing"), "{}", run.stderr);
    let puts = emulator.requests_to("PUT", &secret_path(namespace));
    assert_eq!(
        puts.len(),
        5,
        "writes are retried a bounded number of times"
    );
    for put in &puts {
        assert_eq!(put.status, 409);
        resource_version(&put.body);
    }
    assert_eq!(api_key(&cluster, namespace), ORIGINAL.as_bytes());
}

#[test]
fn concurrent_write_to_managed_key_is_kept() {
    let cluster = Cluster::emulator();
    let (namespace, text) = one_namespace(&cluster);
    let namespace = &namespace;
    let emulator = cluster.control();
    emulator.conflict(namespace, SECRET, 1, Some("API_KEY"));
    let env = env_for(&cluster);

    let run = run(&env, &text, &[]);

    run.assert_code(EXIT_ATTENTION);
    assert!(
        run.stderr.contains("changed after preflight"),
        "{}",
        run.stderr
    );
    let value = String::from_utf8(api_key(&cluster, namespace)).unwrap();
    assert!(
        value.starts_with("written by a concurrent writer"),
        "the other writer's value was overwritten"
    );
    let puts = emulator.requests_to("PUT", &secret_path(namespace));
    assert_eq!(puts.len(), 1, "keywheel wrote over the other writer");
}

#[test]
fn create_answered_already_exists_reads_then_updates() {
    let cluster = Cluster::emulator();
    let namespace = cluster.namespace("kw", &[]);
    cluster.create_secret(&namespace, SECRET, &[("OTHER", b"theirs")], &[], &[]);
    let emulator = cluster.control();
    // Preflight and the push's first read see no Secret, as if another
    // writer created it just before keywheel's create.
    let path = format!("{}$", secret_path(&namespace));
    emulator.fail("GET", &path, 404, "NotFound", 2);
    emulator.clear_requests();
    let env = env_for(&cluster);
    let text = playbook(&format!("namespace: {namespace}"), "    create: true\n", "");

    run(&env, &text, &[]).assert_code(EXIT_OK);

    let collection = format!("/api/v1/namespaces/{namespace}/secrets");
    let creates = emulator.requests_to("POST", &collection);
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].status, 409);
    let puts = emulator.requests_to("PUT", &secret_path(&namespace));
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].status, 200);
    resource_version(&puts[0].body);
    assert_eq!(
        cluster.secret_value(&namespace, SECRET, "OTHER").unwrap(),
        b"theirs"
    );
    cluster.secret_text(&env, &namespace, SECRET, "API_KEY");
}

#[test]
fn forbidden_namespace_rolls_back_the_others() {
    let cluster = Cluster::emulator();
    let namespaces = seeded_namespaces(&cluster, 3);
    cluster
        .control()
        .forbid(&namespaces[1], &["update"], "secrets");
    let env = env_for(&cluster);

    let run = run(&env, &playbook(&list(&namespaces), "", ""), &[]);

    run.assert_code(EXIT_FAILED);
    let expected = format!("cannot update secrets in namespace {}", namespaces[1]);
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "rolled_back");
    for namespace in &namespaces {
        assert_eq!(
            api_key(&cluster, namespace),
            ORIGINAL.as_bytes(),
            "{namespace}"
        );
    }
    let run_id = report["run_id"].as_str().unwrap();
    let steps = steps(&env, run_id);
    let failed = (format!("push:app/{}", namespaces[1]), "failed".to_string());
    assert!(steps.contains(&failed), "{steps:?}");
    for namespace in [&namespaces[0], &namespaces[2]] {
        let restored = (format!("restore:app/{namespace}"), "done".to_string());
        assert!(steps.contains(&restored), "{steps:?}");
    }
}

#[test]
fn held_partial_failure_resumes_only_failed_namespace() {
    let cluster = Cluster::emulator();
    let namespaces = seeded_namespaces(&cluster, 3);
    let emulator = cluster.control();
    emulator.forbid(&namespaces[1], &["update"], "secrets");
    let env = env_for(&cluster);
    let text = playbook(
        &list(&namespaces),
        "",
        "policy:\n  on_partial_failure: hold\n",
    );

    let held = run(&env, &text, &[]);

    held.assert_code(EXIT_ATTENTION);
    let report = held.json();
    assert_eq!(report["status"], "held");
    let key_id = report["new_key_id"].as_str().unwrap().to_string();
    let run_id = report["run_id"].as_str().unwrap().to_string();
    let key = cluster.secret_text(&env, &namespaces[0], SECRET, "API_KEY");
    assert_ne!(key, ORIGINAL);
    assert_eq!(api_key(&cluster, &namespaces[2]), key.as_bytes());
    assert_eq!(api_key(&cluster, &namespaces[1]), ORIGINAL.as_bytes());

    emulator.clear_forbid();
    emulator.clear_requests();
    let resumed = env.keywheel(&["resume", &run_id, "--json"]);

    resumed.assert_code(EXIT_OK);
    assert_eq!(resumed.json()["new_key_id"], key_id.as_str());
    let writes: Vec<String> = emulator
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.path)
        .collect();
    assert_eq!(
        writes,
        [secret_path(&namespaces[1])],
        "resume wrote elsewhere"
    );
    for namespace in &namespaces {
        assert_eq!(api_key(&cluster, namespace), key.as_bytes(), "{namespace}");
    }
}

#[test]
fn forbidden_read_fails_before_any_change() {
    let cluster = Cluster::emulator();
    let namespaces = seeded_namespaces(&cluster, 2);
    cluster
        .control()
        .forbid(&namespaces[0], &["get"], "secrets");
    cluster.control().clear_requests();
    let env = env_for(&cluster);

    let run = run(&env, &playbook(&list(&namespaces), "", ""), &[]);

    run.assert_code(EXIT_FAILED);
    let expected = format!("cannot get secrets in namespace {}", namespaces[0]);
    assert!(run.stderr.contains(&expected), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "failed");
    assert!(report["new_key_id"].is_null(), "a key was generated");
    let writes = cluster
        .control()
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(writes, 0);
}

#[test]
fn stalled_rollout_restores_and_restarts_again() {
    let cluster = Cluster::emulator();
    let namespaces = seeded_namespaces(&cluster, 2);
    let web = &namespaces[0];
    cluster.create_workload(Kind::Deployment, web, "web", 1);
    cluster.wait_rolled_out(Kind::Deployment, web, "web");
    let emulator = cluster.control();
    emulator.stall(Kind::Deployment, web, "web");
    let env = env_for(&cluster);
    let target = format!(
        "    restart:\n      - workload: deployment/web\n        namespace: {web}\n    rollout_timeout: 1s\n"
    );
    let text = playbook(&list(&namespaces), &target, "");

    // The rollout after the restore stalls too, so the rollback stops
    // with the Secrets restored and the restart to retry.
    let stuck = run(&env, &text, &[]);

    stuck.assert_code(EXIT_ATTENTION);
    assert!(
        stuck.stderr.contains("did not complete within 1s"),
        "{}",
        stuck.stderr
    );
    let report = stuck.json();
    assert_eq!(report["status"], "needs_attention");
    let run_id = report["run_id"].as_str().unwrap().to_string();
    for namespace in &namespaces {
        assert_eq!(
            api_key(&cluster, namespace),
            ORIGINAL.as_bytes(),
            "{namespace}"
        );
    }
    let marker = cluster
        .restart_marker(Kind::Deployment, web, "web")
        .unwrap();
    assert_eq!(marker, format!("{run_id}/restart-after-restore:app/{web}"));

    emulator.clear_stalls();
    let finished = env.keywheel(&["rollback", &run_id, "--json"]);

    finished.assert_code(EXIT_OK);
    assert_eq!(finished.json()["status"], "rolled_back");
    assert!(rolled_out(
        Kind::Deployment,
        &cluster.workload(Kind::Deployment, web, "web")
    ));
    let markers: BTreeSet<String> = emulator
        .requests_to("PATCH", "/deployments/web")
        .iter()
        .map(|p| {
            p.body["spec"]["template"]["metadata"]["annotations"]["keywheel.io/restart"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        markers.len(),
        2,
        "one restart forward and one after the restore"
    );
}

#[test]
fn resume_skips_a_finished_restart() {
    let cluster = Cluster::emulator();
    let namespace = &seeded_namespaces(&cluster, 1)[0];
    cluster.create_workload(Kind::Deployment, namespace, "web", 1);
    cluster.wait_rolled_out(Kind::Deployment, namespace, "web");
    let env = env_for(&cluster);
    let text = playbook(
        &format!("namespace: {namespace}"),
        "    restart: [deployment/web]\n",
        "",
    );
    let path = env.playbook("k8s.yaml", &text);

    // A reference run finds the record that marks the restart done.
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    let reference = env.last_run_id();
    let done = record_number(&env, &reference, |r| {
        r["event"] == "done" && r["step"] == "restart:app"
    });
    let emulator = cluster.control();
    emulator.clear_requests();

    env.keywheel_crashing(&format!("after:{done}"), &["run", path.to_str().unwrap()])
        .assert_killed();
    // Without a run id, resume takes the one unfinished run: the history
    // cannot tell two runs started in the same second apart.
    env.keywheel(&["resume"]).assert_code(EXIT_OK);

    let patches = emulator.requests_to("PATCH", "/deployments/web");
    assert_eq!(patches.len(), 1, "the restart was repeated on resume");
    cluster.secret_text(&env, namespace, SECRET, "API_KEY");
}

#[test]
fn selector_matching_nothing_is_a_setup_error() {
    let cluster = Cluster::emulator();
    let env = env_for(&cluster);
    let label = unique("none").to_lowercase();
    let text = playbook(&format!("namespace_selector: kw-test={label}"), "", "");

    let run = run(&env, &text, &[]);

    run.assert_code(EXIT_USAGE);
    assert!(run.stderr.contains("no namespace at"), "{}", run.stderr);
    assert!(
        run.stderr.contains("targets[0].namespace_selector"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_kubeconfig_variable_names_the_field() {
    let env = TestEnv::new();
    let text = playbook("namespace: default", "", "")
        .replace("KEYWHEEL_TEST_KUBECONFIG", "KEYWHEEL_TEST_UNSET_KUBECONFIG");

    let run = run(&env, &text, &[]);

    run.assert_code(EXIT_USAGE);
    assert!(
        run.stderr
            .contains("targets[0].kubeconfig_env: environment variable KEYWHEEL_TEST_UNSET_KUBECONFIG is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn rollback_of_created_secret_keeps_other_keys() {
    let cluster = Cluster::emulator();
    let namespace = cluster.namespace("kw", &[]);
    let env = env_for(&cluster);
    let text = playbook(&format!("namespace: {namespace}"), "    create: true\n", "");
    let path = env.playbook("k8s.yaml", &text);
    // Killed once the push is journaled as done.
    env.keywheel_crashing("after:9", &["run", "--yes", path.to_str().unwrap()])
        .assert_killed();
    cluster.secret_text(&env, &namespace, SECRET, "API_KEY");

    // Another team adds its own key to the Secret keywheel created.
    let emulator = cluster.control();
    let patch = serde_json::json!({"data": {"OTHER_TEAM": "dGhlaXJz"}});
    let response = reqwest::blocking::Client::new()
        .patch(format!("{}{}", emulator.url, secret_path(&namespace)))
        .header("content-type", "application/merge-patch+json")
        .body(patch.to_string())
        .send()
        .unwrap();
    assert!(response.status().is_success(), "{response:?}");

    env.keywheel(&["rollback", &env.last_run_id()])
        .assert_code(EXIT_OK);

    assert_eq!(
        cluster
            .secret_value(&namespace, SECRET, "OTHER_TEAM")
            .unwrap(),
        b"theirs"
    );
    assert!(
        cluster
            .secret_value(&namespace, SECRET, "API_KEY")
            .is_none(),
        "the new key stayed"
    );
}
