//! The write-ahead journal of one live run.
//!
//! [`Journal::append`] assigns the next sequence number, writes the record
//! through the [`Store`], applies it to the in-memory [`RunState`] and
//! returns once it is durable. Callers append an intent before each side
//! effect and an outcome after it.
//!
//! For crash tests, `KEYWHEEL_CRASH_AT=before:N` or `after:N` makes the
//! process kill itself with SIGKILL just before or just after record N is
//! written, the same as `kill -9` at that point.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::record::{Event, Record};
use super::state::RunState;
use crate::run_id::RunId;
use crate::store::{RawRecord, Store, StoreError};

/// The run this process is working on, for the message printed when it is
/// interrupted.
static CURRENT_RUN: std::sync::Mutex<Option<RunId>> = std::sync::Mutex::new(None);

/// Whether the current run has journaled its outcome.
static CURRENT_RUN_FINISHED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Returns the run this process last opened a journal for, and whether
/// that run has journaled its outcome (a signal after that leaves nothing
/// unfinished).
pub fn current_run() -> Option<(RunId, bool)> {
    let run = CURRENT_RUN
        .lock()
        .ok()
        .and_then(|current| current.clone())?;
    Some((
        run,
        CURRENT_RUN_FINISHED.load(std::sync::atomic::Ordering::SeqCst),
    ))
}

/// Environment variable that selects a crash point, for tests.
pub const CRASH_ENV: &str = "KEYWHEEL_CRASH_AT";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CrashPoint {
    Before(u64),
    After(u64),
}

fn crash_point() -> Option<CrashPoint> {
    let text = std::env::var(CRASH_ENV).ok()?;
    let (when, seq) = text.split_once(':')?;
    let seq = seq.parse().ok()?;
    match when {
        "before" => Some(CrashPoint::Before(seq)),
        "after" => Some(CrashPoint::After(seq)),
        _ => None,
    }
}

fn crash_now(seq: u64, when: &str) {
    tracing::debug!(seq, when, "crash point reached");
    let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
    // SIGKILL cannot be caught; if it could not be sent, abort instead.
    std::process::abort();
}

pub struct Journal {
    store: Arc<dyn Store>,
    run_id: RunId,
    state: Mutex<RunState>,
    crash: Option<CrashPoint>,
}

impl Journal {
    /// Wraps the journal of `run_id`, whose records replay into `state`,
    /// and makes it the process's [`current_run`].
    pub fn new(store: Arc<dyn Store>, state: RunState) -> Self {
        if let Ok(mut current) = CURRENT_RUN.lock() {
            *current = Some(state.run_id.clone());
        }
        CURRENT_RUN_FINISHED.store(state.is_finished(), std::sync::atomic::Ordering::SeqCst);
        Self {
            store,
            run_id: state.run_id.clone(),
            state: Mutex::new(state),
            crash: crash_point(),
        }
    }

    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    /// Creates the run's journal with `event` as its first record, keeping
    /// `playbook_text` with it.
    pub async fn create(&self, playbook_text: &str, event: Event) -> Result<Record, StoreError> {
        let mut state = self.state.lock().await;
        let (record, raw) = self.next_record(&state, event)?;
        self.store
            .create_run(&self.run_id, playbook_text, &raw)
            .await?;
        self.audit(&state, &record).await;
        self.crash_after(record.seq);
        state.apply(&record);
        Ok(record)
    }

    /// Makes `event` durable and applies it to the state.
    ///
    /// The record is written and applied under the state lock, so records
    /// keep their order, but the wait until it is durable happens outside
    /// the lock, so that concurrent callers (the pushes of many targets)
    /// share one sync. For that short time the state contains a record that
    /// is not durable yet. Each caller acts only once its append returned,
    /// and when a sync fails, every append waiting on it fails and the run
    /// stops.
    pub async fn append(&self, event: Event) -> Result<Record, StoreError> {
        let (record, position) = {
            let mut state = self.state.lock().await;
            let (record, raw) = self.next_record(&state, event)?;
            let position = self.store.write(&self.run_id, &raw).await?;
            self.audit(&state, &record).await;
            state.apply(&record);
            (record, position)
        };
        self.store.wait_durable(&self.run_id, position).await?;
        if matches!(record.event, Event::Finished { .. }) {
            CURRENT_RUN_FINISHED.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.crash_after(record.seq);
        tracing::debug!(run = %self.run_id, seq = record.seq, event = record.event.name(), "journaled");
        Ok(record)
    }

    /// Copies the record to the audit log. A failure there is logged and
    /// does not stop the run: `resume` reads the journal, not this log.
    async fn audit(&self, state: &RunState, record: &Record) {
        let line = super::audit::line(state, record).to_string();
        if let Err(err) = self.store.append_audit(&self.run_id, &line).await {
            tracing::warn!(run = %self.run_id, %err, "cannot write the audit log");
        }
    }

    /// Numbers and encodes the next record. A `before` crash point for it
    /// kills the process here.
    fn next_record(
        &self,
        state: &RunState,
        event: Event,
    ) -> Result<(Record, RawRecord), StoreError> {
        let record = Record {
            seq: state.last_seq + 1,
            at: now_rfc3339(),
            event,
        };
        let json = serde_json::to_string(&record).map_err(|err| StoreError::Io {
            action: "cannot encode a record for",
            path: format!("run {}", self.run_id),
            source: std::io::Error::other(err),
        })?;
        if self.crash == Some(CrashPoint::Before(record.seq)) {
            crash_now(record.seq, "before");
        }
        let raw = RawRecord {
            seq: record.seq,
            json,
        };
        Ok((record, raw))
    }

    /// Kills the process when record `seq`, now durable, is the `after`
    /// crash point.
    fn crash_after(&self, seq: u64) {
        if self.crash == Some(CrashPoint::After(seq)) {
            crash_now(seq, "after");
        }
    }

    /// Returns a copy of the current state.
    pub async fn state(&self) -> RunState {
        self.state.lock().await.clone()
    }
}

/// Formats the current time as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::record::{Step, run_started_for_test};
    use crate::store::local::LocalStore;

    #[tokio::test]
    async fn concurrent_appends_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path()).unwrap());
        let run_id: RunId = "20261204-120000-abcdef".parse().unwrap();
        let journal = Journal::new(store.clone(), RunState::new(run_id.clone()));
        journal
            .create("", run_started_for_test(&run_id, "demo"))
            .await
            .unwrap();

        let appends = (0..50).map(|index| {
            journal.append(Event::Intent {
                step: Step::Push(format!("t{index}")),
                attempt: 1,
            })
        });
        for result in futures_util::future::join_all(appends).await {
            result.unwrap();
        }

        let read = store.read(&run_id).await.unwrap();
        let records: Vec<Record> = read
            .records
            .iter()
            .map(|raw| serde_json::from_str(&raw.json).unwrap())
            .collect();
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=51).collect::<Vec<_>>());
        let replayed = RunState::replay(run_id, &records);
        let state = journal.state().await;
        assert_eq!(state.last_seq, 51);
        assert_eq!(replayed.order, state.order);
        assert!(
            store.journal_syncs() < 50,
            "{} syncs for 50 concurrent appends",
            store.journal_syncs()
        );
    }
}
