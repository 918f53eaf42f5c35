//! Test support: a private keywheel environment per test, clients for the
//! real servers the dev stack starts, a fault-injecting proxy, and a scan
//! that fails a test whose output or state files contain a secret it saw.

#![allow(dead_code)]

pub mod aws;
pub mod crash;
pub mod key_service;
pub mod kube;
pub mod prometheus;
pub mod proxy;
pub mod vault;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// Exit codes, as documented.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_ATTENTION: i32 = 3;
pub const EXIT_LOCKED: i32 = 4;

/// What one keywheel invocation printed.
#[derive(Debug, Clone)]
pub struct Run {
    pub code: Option<i32>,
    /// The signal that ended the process, when a crash point killed it.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!(
                "stdout is not JSON ({err}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_killed(&self) -> &Self {
        assert_eq!(
            self.signal,
            Some(9),
            "expected SIGKILL\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A private state directory, seal key and working directory for one test.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    seal_key: String,
    extra_env: Vec<(String, String)>,
    removed_env: Vec<String>,
    outputs: Mutex<Vec<String>>,
    secrets: Mutex<BTreeSet<String>>,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state_dir = dir.path().join("state");
        let key: [u8; 32] = rand::random();
        Self {
            state_dir,
            seal_key: hex(&key),
            extra_env: Vec::new(),
            removed_env: Vec::new(),
            outputs: Mutex::new(Vec::new()),
            secrets: Mutex::new(BTreeSet::new()),
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Adds an environment variable for every keywheel invocation.
    pub fn env(&mut self, name: &str, value: &str) {
        self.extra_env.push((name.to_string(), value.to_string()));
    }

    /// Removes an inherited environment variable for every keywheel
    /// invocation.
    pub fn unset_env(&mut self, name: &str) {
        self.removed_env.push(name.to_string());
    }

    /// Writes a playbook into the test directory and returns its path.
    pub fn playbook(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).expect("write playbook");
        path
    }

    /// Registers a secret value that must not appear in any output or state
    /// file of this test.
    pub fn secret(&self, value: &str) {
        if value.len() >= 8 {
            self.secrets.lock().unwrap().insert(value.to_string());
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keywheel"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("KEYWHEEL_STATE_DIR", &self.state_dir)
            .env("KEYWHEEL_SEAL_KEY", &self.seal_key)
            .env_remove("KEYWHEEL_CRASH_AT")
            .env_remove("KEYWHEEL_SEAL_KEY_FILE")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for name in &self.removed_env {
            command.env_remove(name);
        }
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        command
    }

    /// Runs keywheel with `args` and records its output for the leak scan.
    pub fn keywheel(&self, args: &[&str]) -> Run {
        self.run_command(self.command(args))
    }

    /// Runs keywheel with a crash point set.
    pub fn keywheel_crashing(&self, crash_at: &str, args: &[&str]) -> Run {
        let mut command = self.command(args);
        command.env("KEYWHEEL_CRASH_AT", crash_at);
        self.run_command(command)
    }

    pub fn run_command(&self, mut command: Command) -> Run {
        let output: Output = command.output().expect("run keywheel");
        self.record_output(output)
    }

    pub fn record_output(&self, output: Output) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let run = Run {
            code: output.status.code(),
            signal: output.status.signal(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let mut outputs = self.outputs.lock().unwrap();
        outputs.push(run.stdout.clone());
        outputs.push(run.stderr.clone());
        run
    }

    /// Fails when any registered secret appears in a command's output or
    /// in any file under the state directory.
    pub fn assert_no_leaks(&self) {
        let secrets = self.secrets.lock().unwrap().clone();
        let outputs = self.outputs.lock().unwrap().clone();
        for secret in &secrets {
            for output in &outputs {
                assert!(
                    !output.contains(secret.as_str()),
                    "a secret appeared in keywheel's output:\n{output}"
                );
            }
            for file in files_under(&self.state_dir) {
                let bytes = std::fs::read(&file).unwrap_or_default();
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "a secret appeared in {}", file.display());
            }
        }
        LEAK_SCAN.record(
            secrets.len(),
            outputs.len(),
            files_under(&self.state_dir).len(),
        );
    }

    /// Files under the state directory with their modes.
    pub fn state_files(&self) -> Vec<PathBuf> {
        files_under(&self.state_dir)
    }

    /// The run id in `keywheel run --json` output, or from status.
    pub fn last_run_id(&self) -> String {
        let status = self.keywheel(&["history", "--json", "--limit", "1"]);
        status.json()["runs"][0]["run_id"]
            .as_str()
            .expect("a run id")
            .to_string()
    }

    /// Path of a run's journal.
    pub fn journal(&self, run_id: &str) -> PathBuf {
        self.state_dir.join("runs").join(run_id).join("journal")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.assert_no_leaks();
        }
    }
}

/// Counts of what the leak scans covered, across the test binary.
pub struct LeakScanTotals {
    inner: Mutex<(usize, usize, usize)>,
}

impl LeakScanTotals {
    fn record(&self, secrets: usize, outputs: usize, files: usize) {
        let mut totals = self.inner.lock().unwrap();
        totals.0 += secrets;
        totals.1 += outputs;
        totals.2 += files;
    }
}

pub static LEAK_SCAN: LeakScanTotals = LeakScanTotals {
    inner: Mutex::new((0, 0, 0)),
};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh name for server-side objects, unique across tests and runs.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Reads a variable the dev stack exports, with a clear message when the
/// stack is not running.
pub fn stack_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with scripts/test, or start the dev stack with `eval \"$(scripts/dev-stack up)\"`")
    })
}

/// Reads variable `name` from dotenv `text`: `NAME=value`, optionally
/// quoted, optionally followed by ` # comment`. Enough for the values
/// keywheel writes in tests, which have no blanks or quotes inside.
pub fn dotenv_value(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim().trim_start_matches("export ");
        let (key, value) = line.split_once('=')?;
        let value = value.split(" #").next().unwrap_or_default().trim();
        (key.trim() == name).then(|| value.trim_matches(['\'', '"']).to_string())
    })
}
