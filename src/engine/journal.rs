//! The write-ahead journal of one live run.
//!
//! [`Journal::append`] assigns the next sequence number, writes the record
//! through the [`Store`] (which makes it durable before returning), and only
//! then applies it to the in-memory [`RunState`]. Callers append an intent
//! before each side effect and an outcome after it.
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

/// Returns the run this process last opened a journal for.
pub fn current_run() -> Option<RunId> {
    CURRENT_RUN.lock().ok().and_then(|current| current.clone())
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
        Ok(self.after_write(&mut state, record))
    }

    /// Makes `event` durable, then applies it to the state.
    pub async fn append(&self, event: Event) -> Result<Record, StoreError> {
        let mut state = self.state.lock().await;
        let (record, raw) = self.next_record(&state, event)?;
        self.store.append(&self.run_id, &raw).await?;
        self.audit(&state, &record).await;
        Ok(self.after_write(&mut state, record))
    }

    /// Copies the record to the audit log. A failure there is logged and
    /// does not stop the run: the journal is already durable.
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

    /// Applies a record that is now durable. An `after` crash point for it
    /// kills the process here.
    fn after_write(&self, state: &mut RunState, record: Record) -> Record {
        if self.crash == Some(CrashPoint::After(record.seq)) {
            crash_now(record.seq, "after");
        }
        tracing::debug!(run = %self.run_id, seq = record.seq, event = record.event.name(), "journaled");
        state.apply(&record);
        record
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
