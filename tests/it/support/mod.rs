//! Test support: a private keywheel environment per test, clients for the
//! real servers the dev stack starts, a fault-injecting proxy, and a scan
//! that fails a test whose output or state files contain a secret it saw
//! or that keywheel sealed in its journals.

#![allow(dead_code)]

pub mod aws;
pub mod crash;
pub mod key_service;
pub mod kube;
pub mod leaks;
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
    seal_key: [u8; 32],
    /// The test that made this environment, for the coverage figures.
    test: String,
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
            seal_key: key,
            test: test_name(),
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
            .env("KEYWHEEL_SEAL_KEY", hex(&self.seal_key))
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

    /// Fails when a secret appears in a command's output (stdout with any
    /// `--json`, and stderr) or in any file under the state directory
    /// (journals, audit logs, locks, markers, playbook copies), or when a
    /// state file can be read by group or others. The secrets are the
    /// registered ones and every value sealed in the state directory's
    /// journals: new keys and the values targets held before the run.
    pub fn assert_no_leaks(&self) {
        let sealed = leaks::sealed_secrets(&self.state_dir, self.seal_key);
        let mut secrets = self.secrets.lock().unwrap().clone();
        secrets.extend(sealed.values.iter().cloned());
        let outputs = self.outputs.lock().unwrap().clone();
        let files = files_under(&self.state_dir);
        for secret in &secrets {
            for output in &outputs {
                assert!(
                    !output.contains(secret.as_str()),
                    "a secret appeared in keywheel's output:\n{output}"
                );
            }
            for file in &files {
                let bytes = std::fs::read(file).unwrap_or_default();
                let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
                assert!(!found, "a secret appeared in {}", file.display());
            }
        }
        for file in &files {
            let mode = keywheel::fsutil::mode_of(file).unwrap_or(0);
            assert!(
                !keywheel::fsutil::is_shared_mode(mode),
                "state file {} has mode {mode:o}, not 0600",
                file.display()
            );
        }
        record_coverage(&Coverage {
            test: self.test.clone(),
            secrets: secrets.len(),
            sealed_opened: sealed.opened,
            outputs: outputs.len(),
            files: files.len(),
        });
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

/// What one leak scan covered.
#[derive(Debug, serde::Serialize)]
pub struct Coverage {
    pub test: String,
    /// Distinct secret values searched for.
    pub secrets: usize,
    /// Sealed journal values opened to find secrets.
    pub sealed_opened: usize,
    /// Outputs (stdout and stderr) of keywheel invocations.
    pub outputs: usize,
    /// State files read.
    pub files: usize,
}

/// Appends `coverage` as a JSON line to `leak-scan-PID.jsonl` in Cargo's
/// temporary directory for integration tests, where docs/robustness.md
/// takes its figures from.
fn record_coverage(coverage: &Coverage) {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("leak-scan-{}.jsonl", std::process::id()));
    let line = serde_json::to_string(coverage).unwrap() + "\n";
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()));
    if let Err(err) = appended {
        eprintln!(
            "cannot record leak-scan coverage in {}: {err}",
            path.display()
        );
    }
}

/// The name of the running test: the test harness names each test's
/// thread after it, and [`spawn_named`] passes the name on.
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed thread")
        .to_string()
}

/// Spawns a scoped thread that carries the current test's name, so that
/// the environments it makes are counted for that test.
pub fn spawn_named<'scope, 'env, T, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    f: F,
) -> std::thread::ScopedJoinHandle<'scope, T>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    std::thread::Builder::new()
        .name(test_name())
        .spawn_scoped(scope, f)
        .expect("spawn a test thread")
}

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
