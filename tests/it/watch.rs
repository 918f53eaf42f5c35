//! The watch against a real Prometheus scraping the example key service:
//! healthy windows complete, breaches roll back and leave the old key
//! working, no data and NaN follow their rules, and a Prometheus that cannot
//! be reached never passes.
//!
//! Most runs here use the random issuer, which has no revoke step, so they
//! have only the overlap window; the http issuer runs both windows.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::prometheus::{CONSUMER_VAR, KeyService, Prometheus, closed_port};
use crate::support::{EXIT_ATTENTION, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Run, TestEnv};

pub struct Setup {
    pub env: TestEnv,
    pub service: KeyService,
    pub old_key: String,
}

pub fn setup() -> Setup {
    let prometheus = Prometheus::from_env();
    let mut env = TestEnv::new();
    let service = KeyService::start(&mut env, &prometheus);
    let old_key = service.consumer_key();
    Setup {
        env,
        service,
        old_key,
    }
}

/// Writes a playbook that writes a random key into the consumer's .env file and
/// watches `checks` (YAML list items under `queries:`), with `extra` lines
/// appended to the `watch:` mapping.
pub fn playbook(setup: &Setup, checks: &str, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "version: 1
name: {name}
issuer:
  type: random
  prefix: sk_live_
targets:
  - name: app-env
    type: dotenv
    path: app.env
    set:
      {CONSUMER_VAR}: secret
watch:
{extra}  queries:
{checks}",
        name = setup.service.job,
    );
    setup.env.playbook("watch.yaml", &text)
}

/// Returns one query check of `query` with `threshold`, with short
/// windows.
pub fn check(query: &str, threshold: &str, more: &str) -> String {
    format!(
        "    - name: errors
      query: '{query}'
      {threshold}
      interval: 1s
      duration: 4s
      min_samples: 3
{more}"
    )
}

impl Setup {
    fn run(&self, playbook: &std::path::Path) -> Run {
        self.env
            .keywheel(&["run", "--json", playbook.to_str().unwrap()])
    }

    /// Checks that the target contains the original key again and that the
    /// service accepts it.
    fn assert_old_key_works(&self) {
        assert_eq!(self.service.consumer_key(), self.old_key);
        self.service.set_error_rate(0.0);
        assert_eq!(self.service.call_with(&self.old_key), 200);
    }
}

fn samples(run: &Run) -> Vec<serde_json::Value> {
    run.json()["watch"]["rounds"][0]["samples"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn results(run: &Run) -> Vec<String> {
    samples(run)
        .iter()
        .map(|s| s["result"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn healthy_window_completes() {
    let setup = setup();
    let query = setup.service.server_error_ratio();
    let path = playbook(&setup, &check(&query, "max_increase: 0.05", ""), "");

    let run = setup.run(&path);

    run.assert_code(EXIT_OK);
    let report = run.json();
    assert_eq!(report["status"], "completed");
    assert_eq!(report["watch"]["baselines"]["errors"], "0");
    let round = &report["watch"]["rounds"][0];
    assert_eq!(round["window"], "overlap");
    assert_eq!(round["verdict"], "pass");
    assert_eq!(results(&run), vec!["good"; 4]);
    assert_eq!(samples(&run)[0]["threshold"], 0.05);
    let new_key = setup.service.consumer_key();
    setup.env.secret(&new_key);
    assert_ne!(new_key, setup.old_key);
    assert!(run.stderr.contains("Sampled"), "{}", run.stderr);
}

#[test]
fn breach_in_overlap_rolls_back() {
    let setup = setup();
    let query = setup.service.server_error_ratio();
    let path = playbook(
        &setup,
        &check(&query, "max: 0.05", "      duration: 30s\n").replace("      duration: 4s\n", ""),
        "",
    );
    let mut command = setup
        .env
        .command(&["run", "--json", path.to_str().unwrap()]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn().unwrap();

    wait_for_journal(&setup.env, "watch_sample");
    setup.service.set_error_rate(1.0);
    let run = setup.env.record_output(child.wait_with_output().unwrap());

    run.assert_code(EXIT_FAILED);
    let report = run.json();
    assert_eq!(report["status"], "rolled_back");
    let round = &report["watch"]["rounds"][0];
    assert_eq!(round["verdict"], "fail");
    assert!(
        results(&run).iter().any(|r| r == "breach"),
        "{:?}",
        results(&run)
    );
    assert!(
        run.stderr.contains("watch overlap failed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("> 0.05 breach"), "{}", run.stderr);
    assert!(run.stderr.contains("Watched"), "{}", run.stderr);
    setup.assert_old_key_works();
}

#[test]
fn rejected_new_key_rolls_back() {
    // The service does not know a random key, so the consumer gets 401
    // once the new key is pushed, and a query of every non-2xx status
    // measures that.
    let setup = setup();
    let query = setup.service.ratio("[^2]..");
    let path = playbook(&setup, &check(&query, "max: 0.1", ""), "");

    let run = setup.run(&path);

    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["status"], "rolled_back");
    assert!(run.stderr.contains("breach"), "{}", run.stderr);
    setup.assert_old_key_works();
}

#[test]
fn empty_result_is_inconclusive_by_default() {
    let setup = setup();
    let query = format!("keyservice_absent_metric{{job=\"{}\"}}", setup.service.job);
    let path = playbook(&setup, &check(&query, "max: 1", ""), "");

    let run = setup.run(&path);

    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["status"], "rolled_back");
    assert_eq!(results(&run), vec!["inconclusive"; 4]);
    assert!(run.stderr.contains("no data"), "{}", run.stderr);
    assert!(run.stderr.contains("was inconclusive"), "{}", run.stderr);
    setup.assert_old_key_works();
}

#[test]
fn empty_result_passes_when_the_playbook_says_so() {
    let setup = setup();
    let query = format!("keyservice_absent_metric{{job=\"{}\"}}", setup.service.job);
    let path = playbook(
        &setup,
        &check(&query, "max: 1", "      on_empty: pass\n"),
        "",
    );

    let run = setup.run(&path);

    run.assert_code(EXIT_OK);
    assert_eq!(results(&run), vec!["good"; 4]);
    setup.env.secret(&setup.service.consumer_key());
}

#[test]
fn nan_holds_and_resume_watches_again() {
    let setup = setup();
    let path = playbook(
        &setup,
        &check("0/0", "max: 1", ""),
        "  on_inconclusive: hold\n",
    );

    let run = setup.run(&path);

    run.assert_code(EXIT_ATTENTION);
    let report = run.json();
    assert_eq!(report["status"], "held");
    assert_eq!(results(&run), vec!["inconclusive"; 4]);
    assert_eq!(samples(&run)[0]["value"], "NaN");
    let new_key = setup.service.consumer_key();
    setup.env.secret(&new_key);
    assert_ne!(new_key, setup.old_key, "a held run keeps the new key");

    let run_id = report["run_id"].as_str().unwrap();
    let resumed = setup.env.keywheel(&["resume", "--json", run_id]);
    resumed.assert_code(EXIT_ATTENTION);
    let rounds = resumed.json()["watch"]["rounds"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rounds.len(), 2, "resume watches a held window again");
    assert_eq!(rounds[0]["verdict"], "inconclusive");
    assert_eq!(rounds[1]["verdict"], "inconclusive");
    assert_eq!(rounds[1]["samples"].as_array().unwrap().len(), 4);

    let rollback = setup.env.keywheel(&["rollback", run_id]);
    rollback.assert_code(EXIT_OK);
    setup.assert_old_key_works();
}

#[test]
fn nan_fails_when_on_nan_is_fail() {
    let setup = setup();
    let path = playbook(&setup, &check("0/0", "max: 1", "      on_nan: fail\n"), "");

    let run = setup.run(&path);

    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["watch"]["rounds"][0]["verdict"], "fail");
    assert_eq!(results(&run), vec!["breach"]);
    setup.assert_old_key_works();
}

#[test]
fn infinite_ratio_is_a_breach() {
    let setup = setup();
    let path = playbook(&setup, &check("1/0", "max: 1000", ""), "");

    let run = setup.run(&path);

    run.assert_code(EXIT_FAILED);
    assert_eq!(samples(&run)[0]["value"], "+Inf");
    assert_eq!(results(&run), vec!["breach"]);
    setup.assert_old_key_works();
}

#[test]
fn unreachable_prometheus_never_passes() {
    let mut setup = setup();
    setup.env.env(
        "WATCH_PROMETHEUS",
        &format!("http://127.0.0.1:{}", closed_port()),
    );
    let query = setup.service.server_error_ratio();
    let path = playbook(
        &setup,
        &check(&query, "max: 0.05", "      consecutive_error_limit: 2\n"),
        "  prometheus:\n    address_env: WATCH_PROMETHEUS\n    timeout: 2s\n",
    );

    let run = setup.run(&path);

    run.assert_code(EXIT_FAILED);
    assert_eq!(run.json()["watch"]["rounds"][0]["verdict"], "inconclusive");
    assert_eq!(results(&run), vec!["error"; 3]);
    assert!(run.stderr.contains("3 errors in a row"), "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
    setup.assert_old_key_works();
}

#[test]
fn http_checks_read_status_and_json_values() {
    let setup = setup();
    let prometheus = Prometheus::from_env();
    let text = format!(
        "version: 1
name: {name}
issuer:
  type: random
targets:
  - name: app-env
    type: dotenv
    path: app.env
    set:
      {CONSUMER_VAR}: secret
watch:
  http:
    - name: metrics-page
      url: {service}/metrics
      interval: 1s
      duration: 2s
    - name: json-value
      url: '{prometheus}/api/v1/query?query=vector(0.01)'
      json_pointer: /data/result/0/value/1
      max: 0.05
      interval: 1s
      duration: 2s
",
        name = setup.service.job,
        service = setup.service.url,
        prometheus = prometheus.url,
    );
    let path = setup.env.playbook("http.yaml", &text);

    let run = setup.run(&path);

    run.assert_code(EXIT_OK);
    let samples = samples(&run);
    assert_eq!(samples.len(), 4);
    let notes: Vec<&str> = samples
        .iter()
        .map(|s| s["note"].as_str().unwrap())
        .collect();
    assert!(notes.contains(&"HTTP 200"), "{notes:?}");
    let values: Vec<&str> = samples.iter().filter_map(|s| s["value"].as_str()).collect();
    assert_eq!(values, vec!["0.01", "0.01"]);
    setup.env.secret(&setup.service.consumer_key());
}

#[test]
fn resume_after_crash_keeps_journaled_samples() {
    let setup = setup();
    let query = setup.service.server_error_ratio();
    let path = playbook(
        &setup,
        &check(&query, "max: 0.05", "      duration: 6s\n").replace("      duration: 4s\n", ""),
        "",
    );

    // Records: run_started, preflight, generate intent, key_created, done,
    // verify intent, done, push intent, done, watch intent, then samples.
    let crashed = setup
        .env
        .keywheel_crashing("after:12", &["run", path.to_str().unwrap()]);
    crashed.assert_killed();
    let run_id = setup.env.last_run_id();
    let journal = std::fs::read_to_string(setup.env.journal(&run_id)).unwrap();
    let last = journal.lines().last().unwrap();
    assert!(last.contains("\"event\":\"watch_sample\""), "{last}");
    let journaled: Vec<u64> = journal
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(_, json)| serde_json::from_str::<serde_json::Value>(json).unwrap())
        .filter(|record| record["event"] == "watch_sample")
        .map(|record| record["sample"]["elapsed_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(journaled.len(), 2);

    let resumed = setup.env.keywheel(&["resume", "--json", &run_id]);

    resumed.assert_code(EXIT_OK);
    let report = resumed.json();
    let rounds = report["watch"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "the resumed window is the same round");
    let elapsed: Vec<u64> = samples(&resumed)
        .iter()
        .map(|s| s["elapsed_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(&elapsed[..2], &journaled[..], "journaled samples kept");
    assert!(elapsed.len() <= 6, "{elapsed:?}");
    assert!(elapsed.windows(2).all(|w| w[0] < w[1]), "{elapsed:?}");
    assert!(*elapsed.last().unwrap() <= 6000 + 500, "{elapsed:?}");
    assert!(
        resumed.stderr.contains("2 journaled sample(s)"),
        "{}",
        resumed.stderr
    );
    setup.env.secret(&setup.service.consumer_key());
}

/// Waits until a journal under the state directory has an `event`.
fn wait_for_journal(env: &TestEnv, event: &str) {
    let needle = format!("\"event\":\"{event}\"");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = env.state_files().iter().any(|file| {
            file.ends_with("journal")
                && std::fs::read_to_string(file).is_ok_and(|text| text.contains(&needle))
        });
        if found {
            return;
        }
        assert!(Instant::now() < deadline, "no {event} record within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn demo_playbook_is_valid() {
    let env = TestEnv::new();
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks/watch-demo.yaml");

    env.keywheel(&["validate", demo]).assert_code(EXIT_OK);
}

#[test]
fn watch_errors_name_line_and_field() {
    let env = TestEnv::new();
    let path = env.playbook(
        "bad.yaml",
        "version: 1
name: bad-watch
issuer:
  type: random
targets:
  - name: env
    type: dotenv
    path: app.env
    set:
      API_KEY: secret
watch:
  on_inconclusive: wait
  prometheus:
    address: http://127.0.0.1:9090
  queries:
    - name: errors
      query: up
      max: 0.1
      max_ratio: 2
      interval: 10s
      duration: 5s
      min_samples: 0
      on_empty: ignore
",
    );

    let run = env.keywheel(&["validate", path.to_str().unwrap()]);

    run.assert_code(EXIT_USAGE);
    let file = path.display().to_string();
    for expected in [
        format!("{file}:12:20: watch.on_inconclusive: invalid value \"wait\""),
        format!("{file}:14:14: watch.prometheus.address: `address` cannot be written"),
        format!("{file}:19:18: watch.queries[0].max_ratio: more than one threshold"),
        format!("{file}:21:17: watch.queries[0].duration: duration 5s is shorter"),
        format!("{file}:22:20: watch.queries[0].min_samples: min_samples is 0"),
        format!("{file}:23:17: watch.queries[0].on_empty: invalid value \"ignore\""),
    ] {
        assert!(
            run.stderr.contains(&expected),
            "{expected}\nin:\n{}",
            run.stderr
        );
    }
}

/// A playbook that rotates the consumer's key through the service's admin
/// API, so the old key can be disabled and the window after revoke runs.
fn issuer_playbook(setup: &Setup, query: &str) -> std::path::PathBuf {
    let text = format!(
        "version: 1
name: {name}
issuer:
  type: http
  base_url_env: KEYSERVICE_URL
  auth:
    token_env: KEYSERVICE_ADMIN_TOKEN
  idempotency_header: Idempotency-Key
  old_key:
    match: {{field: secret, pointer: /prefix, prefix_length: 12}}
  operations:
    get:
      url: \"/v1/keys/{{{{ key.id }}}}\"
    list:
      url: /v1/keys
      items: /data
    create:
      url: /v1/keys
      body:
        name: \"{{{{ old.name }}}}\"
        scopes: \"{{{{ old.scopes }}}}\"
      expect_status: 201
      pick: {{id: /id, secret: /secret}}
    disable:
      url: \"/v1/keys/{{{{ key.id }}}}/disable\"
    enable:
      url: \"/v1/keys/{{{{ key.id }}}}/enable\"
    delete:
      url: \"/v1/keys/{{{{ key.id }}}}\"
      expect_status: 204
targets:
  - name: app-env
    type: dotenv
    path: app.env
    set:
      {CONSUMER_VAR}: secret
watch:
  queries:
{checks}",
        name = setup.service.job,
        checks = check(query, "max: 0.05", ""),
    );
    setup.env.playbook("revoke.yaml", &text)
}

#[test]
fn breach_after_revoke_reenables_old_key() {
    let mut setup = setup();
    let url = setup.service.url.clone();
    setup.env.env("KEYSERVICE_URL", &url);
    let query = setup.service.server_error_ratio();
    let path = issuer_playbook(&setup, &query);
    let old_id = setup
        .service
        .key_statuses()
        .into_iter()
        .map(|(id, _)| id)
        .next()
        .unwrap();

    let child = setup
        .env
        .command(&["run", "--json", "--yes", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Errors start only once the old key is disabled, so the overlap
    // window passes and the window after revoke sees the breach.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let disabled = setup
            .service
            .key_statuses()
            .iter()
            .any(|(id, status)| *id == old_id && status == "disabled");
        if disabled {
            setup.service.set_error_rate(1.0);
            break;
        }
        assert!(Instant::now() < deadline, "the old key was never disabled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = setup.env.record_output(child.wait_with_output().unwrap());

    run.assert_code(EXIT_FAILED);
    let report = run.json();
    assert_eq!(report["status"], "rolled_back");
    let rounds = report["watch"]["rounds"].as_array().unwrap();
    assert_eq!(rounds[0]["window"], "overlap");
    assert_eq!(rounds[0]["verdict"], "pass");
    assert_eq!(rounds[1]["window"], "after_revoke");
    assert_eq!(rounds[1]["verdict"], "fail");
    let steps: Vec<String> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{}={}",
                s["step"].as_str().unwrap(),
                s["status"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "revoke=done",
        "reenable=done",
        "restore:app-env=done",
        "delete-new=done",
    ] {
        assert!(
            steps.contains(&expected.to_string()),
            "{expected} missing: {steps:?}"
        );
    }
    assert!(
        !steps.iter().any(|s| s.starts_with("retire")),
        "retired after a breach: {steps:?}"
    );
    let statuses = setup.service.key_statuses();
    assert_eq!(
        statuses,
        vec![(old_id, "active".to_string())],
        "the new key must be gone"
    );
    setup.assert_old_key_works();
}

#[test]
fn resume_after_long_pause_finishes_window() {
    let setup = setup();
    let query = setup.service.server_error_ratio();
    let path = playbook(
        &setup,
        &check(
            &query,
            "max: 0.05",
            "      duration: 5s\n      min_samples: 4\n",
        )
        .replace("      duration: 4s\n", "")
        .replace("      min_samples: 3\n", ""),
        "",
    );
    // Killed after the first sample, then down for longer than the window.
    setup
        .env
        .keywheel_crashing("after:11", &["run", path.to_str().unwrap()])
        .assert_killed();
    std::thread::sleep(Duration::from_secs(6));

    let run_id = setup.env.last_run_id();
    let resumed = setup.env.keywheel(&["resume", "--json", &run_id]);

    resumed.assert_code(EXIT_OK);
    assert_eq!(resumed.json()["status"], "completed");
    let good = results(&resumed).iter().filter(|r| *r == "good").count();
    assert!(
        good >= 4,
        "the resumed window took too few samples: {:?}",
        results(&resumed)
    );
    setup.env.secret(&setup.service.consumer_key());
}
