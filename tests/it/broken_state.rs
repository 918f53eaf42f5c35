//! A damaged state directory, a full or read-only disk and a bad seal key
//! each stop keywheel with a clear error before it changes anything. A
//! journal write that fails mid-run stops the run before its next change,
//! and `resume` finishes it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{
    EXIT_ATTENTION, EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_USAGE, Run, TestEnv, dotenv_value,
};

const ORIGINAL: &str = "KEY=original-value-0000\n";

/// Builds a test environment with two .env targets that contain the
/// original key, and its playbook.
fn two_targets() -> (TestEnv, PathBuf) {
    let env = TestEnv::new();
    for name in ["a.env", "b.env"] {
        std::fs::write(env.path(name), ORIGINAL).unwrap();
    }
    let playbook = env.playbook(
        "two.yaml",
        "version: 1
name: two-targets
issuer:
  type: random
targets:
  - name: a
    type: dotenv
    path: a.env
    set:
      KEY: secret
  - name: b
    type: dotenv
    path: b.env
    set:
      KEY: secret
policy:
  concurrency: 1
",
    );
    (env, playbook)
}

fn target(env: &TestEnv, name: &str) -> String {
    std::fs::read_to_string(env.path(name)).unwrap()
}

#[track_caller]
fn assert_untouched(env: &TestEnv) {
    for name in ["a.env", "b.env"] {
        assert_eq!(target(env, name), ORIGINAL, "{name} changed");
    }
}

/// Checks that both targets hold the same new key.
#[track_caller]
fn assert_rotated(env: &TestEnv) {
    let a = dotenv_value(&target(env, "a.env"), "KEY").unwrap();
    let b = dotenv_value(&target(env, "b.env"), "KEY").unwrap();
    env.secret(&a);
    env.secret(&b);
    assert_ne!(a, "original-value-0000");
    assert_eq!(a, b, "targets disagree");
}

fn run(env: &TestEnv, playbook: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["run", playbook.to_str().unwrap()];
    args.extend_from_slice(extra);
    env.keywheel(&args)
}

#[track_caller]
fn assert_stderr(run: &Run, expected: &str) {
    assert!(
        run.stderr.contains(expected),
        "missing {expected:?} in:\n{}",
        run.stderr
    );
}

// ------------------------------------------------------------ seal key

/// Points the environment at a seal key file instead of the variable.
fn with_key_file(env: &mut TestEnv, path: &Path) {
    env.unset_env("KEYWHEEL_SEAL_KEY");
    env.env("KEYWHEEL_SEAL_KEY_FILE", path.to_str().unwrap());
}

#[test]
fn group_readable_seal_key_is_rejected() {
    let (mut env, playbook) = two_targets();
    let key = env.path("seal.key");
    std::fs::write(&key, [7u8; 32]).unwrap();
    for mode in [0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        with_key_file(&mut env, &key);

        let run = run(&env, &playbook, &[]);

        run.assert_code(EXIT_FAILED);
        assert_stderr(&run, &format!("seal key file {}", key.display()));
        assert_stderr(&run, &format!("mode {mode:o}"));
        assert_stderr(&run, &format!("chmod 600 {}", key.display()));
        assert_untouched(&env);
        assert!(!env.state_dir.join("runs").read_dir().unwrap().any(|_| true));
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    run(&env, &playbook, &[]).assert_code(EXIT_OK);
    assert_rotated(&env);
}

#[test]
fn unreadable_seal_key_is_named() {
    let (mut env, playbook) = two_targets();
    // A directory where the key file should be: even root cannot read it
    // as a file, where a mode of 000 would not stop root.
    let key = env.path("seal.key");
    std::fs::create_dir(&key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o700)).unwrap();
    with_key_file(&mut env, &key);

    let run = run(&env, &playbook, &[]);

    run.assert_code(EXIT_FAILED);
    assert_stderr(
        &run,
        &format!("cannot read seal key file {}", key.display()),
    );
    assert_untouched(&env);
}

#[test]
fn invalid_seal_key_file_is_named() {
    let (mut env, playbook) = two_targets();
    let key = env.path("seal.key");
    std::fs::write(&key, "not a key\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    with_key_file(&mut env, &key);

    let run = run(&env, &playbook, &[]);

    run.assert_code(EXIT_FAILED);
    assert_stderr(&run, &format!("seal key file {} is invalid", key.display()));
    assert_untouched(&env);
}

// ------------------------------------------------------ state directory

#[test]
fn garbage_lock_file_is_reported_and_breakable() {
    let (env, playbook) = two_targets();
    let locks = env.state_dir.join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = locks.join("two-targets.lock");
    std::fs::write(&lock, b"\x00\x01 not json").unwrap();

    let refused = run(&env, &playbook, &[]);

    refused.assert_code(EXIT_ATTENTION);
    assert_stderr(
        &refused,
        &format!("lock file {} is corrupt", lock.display()),
    );
    assert_stderr(&refused, "--break-lock");
    assert_untouched(&env);

    let broke = run(&env, &playbook, &["--break-lock"]);

    broke.assert_code(EXIT_OK);
    assert_stderr(&broke, "cannot be read");
    assert_rotated(&env);
    assert!(!lock.exists(), "the lock outlived the run");
}

#[test]
fn active_marker_of_missing_run_is_cleared() {
    let (env, playbook) = two_targets();
    let active = env.state_dir.join("active");
    std::fs::create_dir_all(&active).unwrap();
    std::fs::write(active.join("two-targets"), "20261204-120000-abcdef\n").unwrap();

    run(&env, &playbook, &[]).assert_code(EXIT_OK);

    assert_rotated(&env);
    assert!(!active.join("two-targets").exists(), "marker left behind");
}

#[test]
fn garbage_active_marker_is_cleared() {
    let (env, playbook) = two_targets();
    let active = env.state_dir.join("active");
    std::fs::create_dir_all(&active).unwrap();
    std::fs::write(active.join("two-targets"), "\u{0}garbage").unwrap();

    run(&env, &playbook, &[]).assert_code(EXIT_OK);

    assert_rotated(&env);
    assert!(!active.join("two-targets").exists(), "marker left behind");
}

/// Crashes a run after record `seq` and returns its id.
fn crashed(env: &TestEnv, playbook: &Path, seq: u32) -> String {
    let point = format!("after:{seq}");
    env.keywheel_crashing(&point, &["run", playbook.to_str().unwrap()])
        .assert_killed();
    env.last_run_id()
}

/// The number of the journal record announcing the push to `a`: after
/// run_started, preflight, generate (intent, key_created, done) and
/// verify (intent, done).
const INTENT_PUSH_A: u32 = 8;

#[test]
fn journal_cut_mid_record_is_resumed() {
    let (env, playbook) = two_targets();
    let run_id = crashed(&env, &playbook, INTENT_PUSH_A + 1);
    let journal = env.journal(&run_id);
    let text = std::fs::read_to_string(&journal).unwrap();
    let last_start = text.trim_end().rfind('\n').unwrap() + 1;
    let cut = last_start + (text.len() - last_start) / 2;
    std::fs::write(&journal, &text.as_bytes()[..cut]).unwrap();

    let status = env.keywheel(&["status", &run_id, "--json"]);
    status.assert_code(EXIT_OK);
    let resumed = env.keywheel(&["resume", &run_id]);

    resumed.assert_code(EXIT_OK);
    assert_rotated(&env);
    let after = std::fs::read_to_string(&journal).unwrap();
    assert!(
        after.starts_with(&text[..last_start]),
        "intact records changed"
    );
    assert!(after.ends_with('\n'));
}

#[test]
fn empty_journal_is_an_error_that_changes_nothing() {
    let (env, playbook) = two_targets();
    let run_id = crashed(&env, &playbook, 3);
    std::fs::write(env.journal(&run_id), b"").unwrap();

    let resumed = env.keywheel(&["resume", &run_id]);

    resumed.assert_code(EXIT_ATTENTION);
    assert_stderr(&resumed, &format!("journal of run {run_id}"));
    assert_untouched(&env);
}

#[test]
fn corrupt_old_journal_is_skipped_in_listings() {
    let (env, playbook) = two_targets();
    run(&env, &playbook, &[]).assert_code(EXIT_OK);
    let damaged = env.last_run_id();
    let journal = env.journal(&damaged);
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, text.replacen("\"seq\":2", "\"seq\":7", 1)).unwrap();
    run(&env, &playbook, &[]).assert_code(EXIT_OK);
    let latest = env.last_run_id();
    let warning = format!(
        "skipping run {damaged}: journal of run {damaged} ({}) is corrupt at line 2",
        journal.display()
    );

    let history = env.keywheel(&["history"]);
    history.assert_code(EXIT_OK);
    assert_stderr(&history, &warning);
    assert!(history.stdout.contains(&latest), "{}", history.stdout);
    let status = env.keywheel(&["status"]);
    status.assert_code(EXIT_OK);
    assert!(status.stdout.contains(&latest), "{}", status.stdout);
    let due = env.keywheel(&["due", playbook.to_str().unwrap()]);
    due.assert_code(EXIT_OK);
    let resumed = env.keywheel(&["resume"]);
    resumed.assert_code(EXIT_USAGE);
    assert_stderr(&resumed, &warning);
    assert_stderr(&resumed, "no unfinished run");
    // Asked for by id, the damaged run is still an error.
    env.keywheel(&["status", &damaged])
        .assert_code(EXIT_ATTENTION);
}

#[test]
fn damaged_unfinished_run_can_be_abandoned() {
    let (env, playbook) = two_targets();
    let damaged = crashed(&env, &playbook, INTENT_PUSH_A);
    let journal = env.journal(&damaged);
    let text = std::fs::read_to_string(&journal).unwrap();
    std::fs::write(&journal, text.replacen("\"seq\":5", "\"seq\":9", 1)).unwrap();

    let locked = run(&env, &playbook, &[]);
    locked.assert_code(EXIT_LOCKED);
    assert_stderr(&locked, "cannot be resumed or rolled back");
    assert_stderr(&locked, &journal.display().to_string());
    assert_stderr(&locked, "pass --break-lock to start a new run");
    assert_untouched(&env);

    let started = run(&env, &playbook, &["--break-lock"]);
    started.assert_code(EXIT_OK);
    assert_stderr(&started, &format!("abandoning run {damaged}"));
    assert_rotated(&env);
}

#[test]
fn missing_playbook_copy_is_named() {
    let (env, playbook) = two_targets();
    let run_id = crashed(&env, &playbook, INTENT_PUSH_A);
    let copy = env
        .state_dir
        .join("runs")
        .join(&run_id)
        .join("playbook.yaml");
    std::fs::remove_file(&copy).unwrap();

    let resumed = env.keywheel(&["resume", &run_id]);

    resumed.assert_code(EXIT_ATTENTION);
    assert_stderr(&resumed, &copy.display().to_string());
    assert_untouched(&env);
    let rolled_back = env.keywheel(&["rollback", &run_id]);
    rolled_back.assert_code(EXIT_ATTENTION);
    assert_untouched(&env);
}

#[test]
fn missing_journal_is_named() {
    let (env, playbook) = two_targets();
    let run_id = crashed(&env, &playbook, INTENT_PUSH_A);
    std::fs::remove_file(env.journal(&run_id)).unwrap();

    let resumed = env.keywheel(&["resume", &run_id]);

    resumed.assert_code(EXIT_USAGE);
    assert_stderr(&resumed, &format!("no run matches \"{run_id}\""));
    // The marker still names the run, so a new run is refused rather than
    // started next to a run whose journal is gone.
    let refused = run(&env, &playbook, &[]);
    assert!(
        refused.code == Some(EXIT_LOCKED) || refused.code == Some(EXIT_ATTENTION),
        "{refused:?}"
    );
    assert_untouched(&env);
}

#[test]
fn state_subdirectory_that_is_a_file_is_named() {
    let (env, playbook) = two_targets();
    std::fs::create_dir_all(&env.state_dir).unwrap();
    let runs = env.state_dir.join("runs");
    std::fs::write(&runs, "not a directory").unwrap();

    let refused = run(&env, &playbook, &[]);

    refused.assert_code(EXIT_FAILED);
    assert_stderr(&refused, &format!("cannot create {}", runs.display()));
    assert_untouched(&env);
    std::fs::remove_file(&runs).unwrap();
}

// ------------------------------------------------------------ disk space

/// Runs keywheel with files limited to `limit` bytes (RLIMIT_FSIZE,
/// rounded down to 512-byte blocks by the shell), so that a write past
/// the limit fails with EFBIG as a full disk fails with ENOSPC. SIGXFSZ,
/// which the limit would send, is ignored first.
fn keywheel_with_file_limit(env: &TestEnv, limit: u64, args: &[&str]) -> Run {
    let keywheel = env.command(args);
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
            limit / 512
        ))
        .arg(keywheel.get_program())
        .args(keywheel.get_args())
        .current_dir(env.path(""))
        .stdin(std::process::Stdio::null());
    for (name, value) in keywheel.get_envs() {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    env.run_command(command)
}

/// Byte offsets at which each record of a journal ends.
fn record_ends(journal: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(journal).unwrap();
    let mut end = 0;
    text.lines()
        .map(|line| {
            end += line.len() as u64 + 1;
            end
        })
        .collect()
}

#[test]
fn full_disk_stops_run_then_resume_finishes() {
    let reference = {
        let (env, playbook) = two_targets();
        run(&env, &playbook, &[]).assert_code(EXIT_OK);
        assert_rotated(&env);
        record_ends(&env.journal(&env.last_run_id()))
    };
    let total = *reference.last().unwrap();
    let mut failed_at = Vec::new();
    for limit in (512..total).step_by(512) {
        let (env, playbook) = two_targets();
        // The first record that ends past the limit cannot be written.
        let failing = reference.iter().position(|end| *end > limit).unwrap() + 1;
        failed_at.push(failing);

        let stopped = keywheel_with_file_limit(&env, limit, &["run", playbook.to_str().unwrap()]);

        assert!(failing > 1, "limit {limit}: the first record does not fit");
        stopped.assert_code(EXIT_ATTENTION);
        assert_stderr(&stopped, "cannot write its journal, so keywheel stopped");
        assert_stderr(&stopped, "File too large");
        let run_id = env.last_run_id();
        let journal = env.journal(&run_id);
        let written = record_ends(&journal);
        assert_eq!(
            written.len(),
            failing - 1,
            "limit {limit}: the journal does not end at the last record that fit"
        );
        check_no_change_after(&env, &journal, limit);

        let resumed = env.keywheel(&["resume", &run_id]);
        resumed.assert_code(EXIT_OK);
        assert_rotated(&env);
    }
    assert!(failed_at.len() >= 4, "only {failed_at:?} below {total}");
    // The figure in docs/robustness.md. `-- --nocapture` shows it.
    println!(
        "full disk: {} limits, failing at records {failed_at:?} of {}",
        failed_at.len(),
        reference.len()
    );
}

/// Checks that a target whose push the journal does not announce still
/// contains the original key, so nothing happened after the failed write.
fn check_no_change_after(env: &TestEnv, journal: &Path, limit: u64) {
    let text = std::fs::read_to_string(journal).unwrap();
    for (name, file) in [("a", "a.env"), ("b", "b.env")] {
        let announced = text.contains(&format!("\"step\":\"push:{name}\""));
        if !announced {
            assert_eq!(
                target(env, file),
                ORIGINAL,
                "limit {limit}: {name} changed without its intent in the journal"
            );
        }
    }
}

/// A tmpfs mounted over a test directory, so that it can be made
/// read-only even for root, because file modes do not stop root from
/// writing. Unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs at `path`, or returns `None` where this process may
    /// not mount file systems.
    fn mount(path: &Path) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        mounted.then(|| Self {
            path: path.to_path_buf(),
        })
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {mode} {}", self.path.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

#[test]
fn read_only_state_dir_fails_before_any_change() {
    let (env, playbook) = two_targets();
    let Some(tmpfs) = Tmpfs::mount(&env.state_dir) else {
        // NOTE: without the right to mount (not root, or a container
        // without CAP_SYS_ADMIN) this test checks nothing.
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    };
    run(&env, &playbook, &[]).assert_code(EXIT_OK);
    assert_rotated(&env);
    let run_id = env.last_run_id();
    let before = (target(&env, "a.env"), target(&env, "b.env"));
    tmpfs.remount("ro");

    let refused = run(&env, &playbook, &[]);

    refused.assert_code(EXIT_FAILED);
    assert_stderr(&refused, "Read-only file system");
    assert_stderr(&refused, &env.state_dir.display().to_string());
    assert_eq!((target(&env, "a.env"), target(&env, "b.env")), before);
    // Reading still works.
    let status = env.keywheel(&["status", &run_id, "--json"]);
    status.assert_code(EXIT_OK);
    assert_eq!(status.json()["runs"][0]["status"], "completed");

    tmpfs.remount("rw");
    env.assert_no_leaks();
    drop(tmpfs);
}
