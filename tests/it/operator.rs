//! Cron and operator features: --if-due, due, the textfile, webhooks, the
//! audit log and its Markdown report, and shell completions.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::support::{EXIT_OK, TestEnv, dotenv_value};

fn playbook(env: &TestEnv, extra: &str) -> std::path::PathBuf {
    std::fs::write(env.path("app.env"), "KEY=original-value-0000\n").unwrap();
    let text = format!(
        "version: 1\nname: operator\nissuer:\n  type: random\ntargets:\n  - name: env\n    type: dotenv\n    path: app.env\n    set:\n      KEY: secret\n{extra}"
    );
    env.playbook("op.yaml", &text)
}

fn register_key(env: &TestEnv) {
    let text = std::fs::read_to_string(env.path("app.env")).unwrap();
    env.secret(&dotenv_value(&text, "KEY").unwrap());
}

#[test]
fn if_due_skips_until_max_age() {
    let env = TestEnv::new();
    let path = playbook(&env, "max_age: 2s\n");
    let path = path.to_str().unwrap();

    env.keywheel(&["run", "--if-due", path])
        .assert_code(EXIT_OK);
    register_key(&env);
    let skipped = env.keywheel(&["run", "--if-due", "--json", path]);
    skipped.assert_code(EXIT_OK);
    assert_eq!(skipped.json()["skipped"], true);
    assert!(skipped.stderr.contains("not due"), "{}", skipped.stderr);
    assert_eq!(
        env.keywheel(&["history", "--json"]).json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    std::thread::sleep(std::time::Duration::from_millis(2_100));
    env.keywheel(&["run", "--if-due", path])
        .assert_code(EXIT_OK);
    register_key(&env);
    assert_eq!(
        env.keywheel(&["history", "--json"]).json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn due_lists_each_playbook() {
    let env = TestEnv::new();
    let path = playbook(&env, "max_age: 90d\n");
    let before = env
        .keywheel(&["due", "--json", path.to_str().unwrap()])
        .json();
    assert_eq!(before["playbooks"][0]["due"], true);
    assert_eq!(before["playbooks"][0]["reason"], "never rotated");
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    register_key(&env);
    let after = env
        .keywheel(&["due", "--json", path.to_str().unwrap()])
        .json();
    assert_eq!(after["playbooks"][0]["due"], false);
    assert_eq!(after["playbooks"][0]["max_age_seconds"], 90 * 86_400);
    let reason = after["playbooks"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("due in 90d") || reason.contains("due in 89d 23h"),
        "{reason}"
    );
}

#[test]
fn textfile_has_last_outcome() {
    let mut env = TestEnv::new();
    let dir = env.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    env.env("KEYWHEEL_TEXTFILE_DIR", dir.to_str().unwrap());
    let path = playbook(&env, "");
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    register_key(&env);
    let text = std::fs::read_to_string(dir.join("keywheel.prom")).unwrap();
    assert!(
        text.contains("keywheel_last_success_timestamp_seconds{playbook=\"operator\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("keywheel_last_run_status{playbook=\"operator\",status=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("keywheel_last_run_status{playbook=\"operator\",status=\"failed\"} 0"),
        "{text}"
    );
}

#[test]
fn textfile_written_on_skip_and_dir_checked() {
    let mut env = TestEnv::new();
    let path = playbook(&env, "max_age: 90d\n");
    let path = path.to_str().unwrap();
    env.env(
        "KEYWHEEL_TEXTFILE_DIR",
        env.path("missing").to_str().unwrap(),
    );

    let rejected = env.keywheel(&["run", "--if-due", path]);

    rejected.assert_code(crate::support::EXIT_USAGE);
    assert!(
        rejected
            .stderr
            .contains("missing is not a directory; create it"),
        "{}",
        rejected.stderr
    );
    assert_eq!(
        env.keywheel(&["history", "--json"]).json()["runs"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    let dir = env.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    env.env("KEYWHEEL_TEXTFILE_DIR", dir.to_str().unwrap());
    env.keywheel(&["run", "--if-due", path])
        .assert_code(EXIT_OK);
    register_key(&env);
    std::fs::remove_file(dir.join("keywheel.prom")).unwrap();
    env.keywheel(&["run", "--if-due", path])
        .assert_code(EXIT_OK);
    let text = std::fs::read_to_string(dir.join("keywheel.prom")).unwrap();
    assert!(
        text.contains("keywheel_last_run_status{playbook=\"operator\",status=\"completed\"} 1"),
        "{text}"
    );
}

/// A one-thread HTTP listener on 127.0.0.1 that records request bodies and
/// answers every request with `status`.
struct Listener {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Listener {
    fn start(status: u16) -> Self {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/hook/T000/SECRETPART",
            socket.local_addr().unwrap()
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        std::thread::spawn(move || {
            for stream in socket.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                if let Ok(json) = serde_json::from_slice(&body) {
                    seen.lock().unwrap().push(json);
                }
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self { url, bodies }
    }
}

#[test]
fn webhook_gets_start_and_success() {
    let listener = Listener::start(200);
    let mut env = TestEnv::new();
    env.env("KEYWHEEL_TEST_WEBHOOK", &listener.url);
    let path = playbook(&env, "notify:\n  - webhook_env: KEYWHEEL_TEST_WEBHOOK\n");
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    register_key(&env);
    let bodies = listener.bodies.lock().unwrap().clone();
    let texts: Vec<&str> = bodies.iter().map(|b| b["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 2, "{texts:?}");
    assert!(
        texts[0].contains("rotation of operator started"),
        "{}",
        texts[0]
    );
    assert!(
        texts[1].contains("rotation of operator completed"),
        "{}",
        texts[1]
    );
}

#[test]
fn failed_webhook_never_breaks_a_run() {
    let listener = Listener::start(500);
    let mut env = TestEnv::new();
    env.env("KEYWHEEL_TEST_WEBHOOK", &listener.url);
    let path = playbook(
        &env,
        "notify:\n  - webhook_env: KEYWHEEL_TEST_WEBHOOK\n    events: [success]\n    format: json\n",
    );
    let run = env.keywheel(&["run", path.to_str().unwrap()]);
    run.assert_code(EXIT_OK);
    register_key(&env);
    assert!(run.stderr.contains("notification to the webhook in KEYWHEEL_TEST_WEBHOOK failed: the webhook answered status 500"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("SECRETPART"),
        "the webhook URL was printed: {}",
        run.stderr
    );
    let bodies = listener.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["event"], "success");
    assert_eq!(bodies[0]["report"]["status"], "completed");
}

#[test]
fn report_renders_audit_timeline() {
    let env = TestEnv::new();
    let path = playbook(&env, "");
    env.keywheel(&["run", path.to_str().unwrap()])
        .assert_code(EXIT_OK);
    register_key(&env);
    let run_id = env.last_run_id();

    let audit =
        std::fs::read_to_string(env.state_dir.join("runs").join(&run_id).join("audit.jsonl"))
            .unwrap();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let journal_lines = std::fs::read_to_string(env.journal(&run_id))
        .unwrap()
        .lines()
        .count();
    assert_eq!(
        lines.len(),
        journal_lines,
        "one audit line per journal record"
    );
    for line in &lines {
        for field in ["time", "run_id", "user", "host", "event", "outcome"] {
            assert!(
                line.get(field).is_some(),
                "audit line without {field}: {line}"
            );
        }
    }
    let push = lines
        .iter()
        .find(|l| l["step"] == "push:env" && l["outcome"] == "done")
        .expect("push recorded");
    assert!(push["location"].as_str().unwrap().contains("app.env"));

    let report = env.keywheel(&["report", &run_id[..15]]);
    report.assert_code(EXIT_OK);
    assert!(
        report
            .stdout
            .starts_with(&format!("# Rotation of operator: run {run_id}")),
        "{}",
        report.stdout
    );
    assert!(report.stdout.contains("## Timeline"));
    assert!(report.stdout.contains("| push:env ("), "{}", report.stdout);
    assert!(report.stdout.contains("| completed |"), "{}", report.stdout);
}

#[test]
fn completions_name_the_commands() {
    let env = TestEnv::new();
    let run = env.keywheel(&["completions", "bash"]);
    run.assert_code(EXIT_OK);
    for command in ["rollback", "resume", "validate"] {
        assert!(run.stdout.contains(command), "{command} missing");
    }
}
