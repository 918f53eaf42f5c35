//! The crash matrix: a run killed with SIGKILL at every journal point, then
//! `resume`, and from a second identical crash `rollback`, followed by one
//! invariant check that every crash test shares:
//!
//! - every target contains exactly the old value or exactly the new one,
//!   and all of them contain the same one.
//! - The run ended completed (new value) or rolled back (old value).
//! - The issuer has no orphan key: only the old key after a rollback, only
//!   the run's new key after a completed run.
//! - The old key is still accepted unless the run passed the point of no
//!   return (the retire step), and rejected once it did.
//!
//! A scenario provides a fixture per crash ([`CrashFixture`]): its own
//! state directory and server-side objects, so that points run in parallel
//! threads.

use std::path::Path;

use serde_json::Value;

use super::{EXIT_OK, EXIT_USAGE, TestEnv, spawn_named};

/// Threads that crash points run on at once. Each keywheel process spends
/// most of its time waiting on servers, so more threads than cores help.
const THREADS: usize = 4;

/// How a crashed run is finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    Resume,
    Rollback,
}

/// The value a credential settled on after a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Every target contains the old value.
    Old,
    /// Every target contains the run's new value.
    New,
}

/// One crash scenario's objects, fresh for each crash.
pub trait CrashFixture {
    fn env(&self) -> &TestEnv;

    fn playbook(&self) -> &Path;

    /// Returns the value every target contains before the run.
    fn old_value(&self) -> String;

    /// Returns the rotated value as each target contains it, by target
    /// name.
    fn target_values(&self) -> Vec<(String, String)>;

    /// Returns the issuer's keys for this credential as (id, active), or
    /// `None` for an issuer that keeps no keys (the random issuer).
    fn issuer_keys(&self) -> Option<Vec<(String, bool)>> {
        None
    }

    /// Returns the old key's id at the issuer, when the issuer keeps keys.
    fn old_key_id(&self) -> Option<String> {
        None
    }

    /// Returns whether the services that use the old key accept it, or
    /// `None` when nothing can check it.
    fn old_key_accepted(&self) -> Option<bool> {
        None
    }

    /// Checks a rotated credential beyond the shared invariants, such as
    /// the bytes around the key or restarted consumers.
    fn check_rotated(&self, _point: &str, _new_value: &str) {}

    /// Checks an untouched or restored credential beyond the shared
    /// invariants.
    fn check_original(&self, _point: &str) {}
}

/// What one matrix exercised, for the report.
#[derive(Clone, Debug)]
pub struct Figures {
    pub scenario: String,
    pub kinds: Vec<String>,
    /// Records an uninterrupted run writes.
    pub records: usize,
    /// Crash points: before and after each record.
    pub points: usize,
    /// Crashed runs: each point once per recovery.
    pub crashes: usize,
}

/// Runs the matrix of `scenario`: a reference run counts the journal
/// records, then every point is crashed and recovered both ways.
/// `kinds` names the issuer and target kinds the scenario covers.
pub fn run_matrix<F: CrashFixture>(
    scenario: &str,
    kinds: &[&str],
    setup: impl Fn() -> F + Sync,
) -> Figures {
    let records = records_in_full_run(&setup());
    assert!(
        records >= 10,
        "{scenario}: a run writes only {records} records"
    );
    let points: Vec<String> = (1..=records)
        .flat_map(|seq| [format!("before:{seq}"), format!("after:{seq}")])
        .collect();
    std::thread::scope(|scope| {
        for chunk in points.chunks(points.len().div_ceil(THREADS)) {
            let setup = &setup;
            spawn_named(scope, move || {
                for point in chunk {
                    for recovery in [Recovery::Resume, Recovery::Rollback] {
                        crash_and_recover(&setup(), point, recovery);
                    }
                }
            });
        }
    });
    let figures = Figures {
        scenario: scenario.to_string(),
        kinds: kinds.iter().map(ToString::to_string).collect(),
        records,
        points: points.len(),
        crashes: points.len() * 2,
    };
    // The figure in docs/robustness.md. `-- --nocapture` shows it.
    println!(
        "crash matrix {}: {} records, {} points x 2 recoveries = {} crashes; kinds: {}",
        figures.scenario,
        figures.records,
        figures.points,
        figures.crashes,
        figures.kinds.join(", ")
    );
    figures
}

fn run_args<'a>(command: &'a str, target: &'a str) -> Vec<&'a str> {
    vec![command, target, "--yes"]
}

/// Runs the scenario once without a crash and returns how many records
/// its journal has.
fn records_in_full_run(fixture: &impl CrashFixture) -> usize {
    let playbook = fixture.playbook().to_str().unwrap();
    fixture
        .env()
        .keywheel(&run_args("run", playbook))
        .assert_code(EXIT_OK);
    let run_id = last_run_id(fixture.env()).expect("the reference run is in the history");
    assert_eq!(check(fixture, "reference run", Some(&run_id)), Settled::New);
    std::fs::read_to_string(fixture.env().journal(&run_id))
        .unwrap()
        .lines()
        .count()
}

/// Returns the newest run in the history, if any.
pub fn last_run_id(env: &TestEnv) -> Option<String> {
    let history = env.keywheel(&["history", "--json"]).json();
    history["runs"][0]["run_id"].as_str().map(str::to_string)
}

/// Kills a run at `point`, finishes it with `recovery`, and checks the
/// invariants. Returns where the credential settled.
pub fn crash_and_recover(
    fixture: &(impl CrashFixture + ?Sized),
    point: &str,
    recovery: Recovery,
) -> Settled {
    let env = fixture.env();
    let playbook = fixture.playbook().to_str().unwrap();
    env.keywheel_crashing(point, &run_args("run", playbook))
        .assert_killed();

    let Some(run_id) = last_run_id(env) else {
        // Killed before the run's first record, so nothing happened.
        let resumed = env.keywheel(&["resume"]);
        resumed.assert_code(EXIT_USAGE);
        assert!(
            resumed.stderr.contains("no unfinished run"),
            "{point}: {}",
            resumed.stderr
        );
        let settled = check(fixture, point, None);
        assert_eq!(settled, Settled::Old, "{point}: changed without a record");
        return settled;
    };
    let expected = match recovery {
        Recovery::Resume => {
            resume(env, point, &run_id);
            Settled::New
        }
        Recovery::Rollback => roll_back(env, point, &run_id),
    };
    let settled = check(fixture, point, Some(&run_id));
    assert_eq!(settled, expected, "{point}: {recovery:?} settled wrongly");
    settled
}

fn resume(env: &TestEnv, point: &str, run_id: &str) {
    let run = env.keywheel(&run_args("resume", run_id));
    let finished_already = run.code == Some(EXIT_USAGE) && run.stderr.contains("already finished");
    assert!(
        run.code == Some(EXIT_OK) || finished_already,
        "{point}: resume failed:\n{}",
        run.stderr
    );
}

/// Rolls back a run. A run that completed or passed the point of no
/// return can only go forward, so it is resumed instead. Returns where the
/// credential must settle.
fn roll_back(env: &TestEnv, point: &str, run_id: &str) -> Settled {
    let run = env.keywheel(&["rollback", run_id]);
    if run.code == Some(EXIT_USAGE) && run.stderr.contains("already finished (completed)") {
        return Settled::New;
    }
    if run.code == Some(EXIT_USAGE) && run.stderr.contains("passed the point of no return") {
        resume(env, point, run_id);
        return Settled::New;
    }
    assert_eq!(
        run.code,
        Some(EXIT_OK),
        "{point}: rollback failed:\n{}",
        run.stderr
    );
    Settled::Old
}

/// Checks the shared invariants of the module documentation. `run_id` is
/// the run to check, `None` when the crash came before its first record.
pub fn check(fixture: &(impl CrashFixture + ?Sized), point: &str, run_id: Option<&str>) -> Settled {
    let env = fixture.env();
    let values = fixture.target_values();
    let (first_target, value) = values.first().cloned().expect("at least one target");
    for (target, other) in &values {
        env.secret(other);
        assert!(
            *other == value,
            "{point}: targets disagree: {target} differs from {first_target}"
        );
    }
    let old = fixture.old_value();
    let settled = if value == old {
        Settled::Old
    } else {
        Settled::New
    };

    let report = run_id.map(|run_id| {
        let status = env.keywheel(&["status", run_id, "--json"]).json();
        status["runs"][0].clone()
    });
    let status = report
        .as_ref()
        .map(|r| r["status"].as_str().unwrap_or_default());
    let retired = report.as_ref().is_some_and(|r| step_attempted(r, "retire"));
    match settled {
        Settled::Old => {
            assert!(
                matches!(status, None | Some("rolled_back") | Some("failed")),
                "{point}: targets hold the old value but the run is {status:?}"
            );
            assert!(
                !retired,
                "{point}: old value back after the old key was retired"
            );
            fixture.check_original(point);
        }
        Settled::New => {
            assert_eq!(
                status,
                Some("completed"),
                "{point}: targets hold a new value but the run is not completed"
            );
            fixture.check_rotated(point, &value);
        }
    }

    let new_key_id = report
        .as_ref()
        .and_then(|r| r["new_key_id"].as_str().map(str::to_string));
    check_issuer(fixture, point, settled, new_key_id.as_deref(), retired);
    settled
}

/// Returns whether `report` shows `step` as started, done or failed.
fn step_attempted(report: &Value, step: &str) -> bool {
    report["steps"]
        .as_array()
        .is_some_and(|steps| steps.iter().any(|s| s["step"] == step))
}

/// Checks that the issuer has no orphan key, and that the old key is
/// accepted exactly while the run has not retired it.
fn check_issuer(
    fixture: &(impl CrashFixture + ?Sized),
    point: &str,
    settled: Settled,
    new_key_id: Option<&str>,
    retired: bool,
) {
    if let Some(keys) = fixture.issuer_keys() {
        let old_id = fixture
            .old_key_id()
            .expect("an issuer with keys has an old key");
        let expected = match settled {
            Settled::Old => vec![(old_id, true)],
            Settled::New => {
                let new_id = new_key_id.expect("a completed run has a new key");
                vec![(new_id.to_string(), true)]
            }
        };
        assert_eq!(keys, expected, "{point}: the issuer holds other keys");
    }
    if let Some(accepted) = fixture.old_key_accepted() {
        assert_eq!(
            accepted,
            !retired,
            "{point}: old key accepted is {accepted}, but the run {} the point of no return",
            if retired { "passed" } else { "did not pass" }
        );
    }
}
