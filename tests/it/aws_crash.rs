//! kill -9 at every journal point of an IAM key rotation into Secrets
//! Manager and a .env file: `resume` then finishes the run, and, from the
//! same crash, `rollback` puts back the old key, the old AWSCURRENT version
//! and the old file, leaving no extra access key behind.

use crate::aws::{Fixture, fixture};
use crate::support::{EXIT_OK, EXIT_USAGE};

const POLICY: &str = "policy:\n  concurrency: 1\n";

/// Number of journal records of an uninterrupted run.
fn records_in_full_run() -> usize {
    let f = fixture();
    let playbook = f.playbook(POLICY);
    f.run(&playbook, &["--yes"]).assert_code(EXIT_OK);
    f.assert_rotated();
    let run_id = f.run_id().unwrap();
    f.journal(&run_id).len()
}

#[derive(Clone, Copy, Debug)]
enum Recovery {
    Resume,
    Rollback,
}

fn crash_and_recover(point: &str, recovery: Recovery) {
    let f = fixture();
    let playbook = f.playbook(POLICY);
    f.env
        .keywheel_crashing(point, &["run", playbook.to_str().unwrap(), "--yes"])
        .assert_killed();

    let Some(run_id) = f.run_id() else {
        // Killed before the first record: nothing happened.
        f.assert_original();
        return;
    };
    match recovery {
        Recovery::Resume => resume(&f, point, &run_id),
        Recovery::Rollback => rollback(&f, point, &run_id),
    }
    let status = f.env.keywheel(&["status", &run_id, "--json"]).json();
    let final_status = status["runs"][0]["status"].as_str().unwrap().to_string();
    assert!(
        ["completed", "rolled_back"].contains(&final_status.as_str()),
        "{point}: ended {final_status}"
    );
}

fn resume(f: &Fixture, point: &str, run_id: &str) {
    let run = f.env.keywheel(&["resume", run_id, "--yes"]);
    let finished_already = run.code == Some(EXIT_USAGE) && run.stderr.contains("already finished");
    assert!(
        run.code == Some(EXIT_OK) || finished_already,
        "{point}: resume failed:\n{}",
        run.stderr
    );
    f.assert_rotated();
}

fn rollback(f: &Fixture, point: &str, run_id: &str) {
    let run = f.env.keywheel(&["rollback", run_id]);
    if run.code == Some(EXIT_USAGE) && run.stderr.contains("already finished (completed)") {
        f.assert_rotated();
        return;
    }
    if run.code == Some(EXIT_USAGE) && run.stderr.contains("point of no return") {
        // The old key may be deleted already: the only way on is forward.
        resume(f, point, run_id);
        return;
    }
    assert_eq!(
        run.code,
        Some(EXIT_OK),
        "{point}: rollback failed:\n{}",
        run.stderr
    );
    f.assert_original();
}

fn crash_everywhere(recovery: Recovery) {
    let records = records_in_full_run();
    assert!(records >= 15, "a run writes {records} records");
    for seq in 1..=records {
        for point in [format!("before:{seq}"), format!("after:{seq}")] {
            crash_and_recover(&point, recovery);
        }
    }
}

#[test]
fn aws_crash_at_every_journal_point_then_resume() {
    crash_everywhere(Recovery::Resume);
}

#[test]
fn aws_crash_at_every_journal_point_then_rollback() {
    crash_everywhere(Recovery::Rollback);
}
