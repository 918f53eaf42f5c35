//! Durable storage of journals and locks.
//!
//! The engine keeps everything that must survive a crash behind [`Store`]:
//! each run's append-only journal, a copy of the playbook the run started
//! with, the lock of each playbook, and which run of a playbook is still
//! unfinished. The contract is one that a shared database can keep when many
//! hosts run keywheel:
//!
//! - [`Store::append`] adds a record only if its sequence number follows the
//!   run's last one, and returns only once the record is durable. The same
//!   append can be split in two, [`Store::write`] and
//!   [`Store::wait_durable`], so that records written by concurrent callers
//!   share one sync (group commit).
//! - A lock is a lease: it names its holder (run, host, process) and an
//!   expiry that the holder renews while the run lives.
//!
//! [`local::LocalStore`], a state directory on local disk, is the first
//! implementation.

pub mod codec;
pub mod local;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::run_id::RunId;

/// One journal record: its sequence number and its JSON body (which repeats
/// the sequence number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub seq: u64,
    pub json: String,
}

/// A journal as read back.
#[derive(Debug)]
pub struct JournalRead {
    pub records: Vec<RawRecord>,
    /// Whether a torn last record was found and ignored.
    pub torn_tail: bool,
}

/// The holder of a lock and the expiry of its lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub run_id: RunId,
    pub host: String,
    pub pid: u32,
    /// Start time of the process, to tell a reused pid from the holder.
    #[serde(default)]
    pub pid_start: Option<u64>,
    pub acquired_at: String,
    /// RFC 3339 time after which the lease lapses unless renewed.
    pub expires_at: String,
}

/// Whether the holder of a lock is still there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// The holder's process runs on this host.
    Alive,
    /// The holder ran on this host and its process is gone.
    Dead,
    /// The lease expired without renewal.
    Expired,
    /// The holder is on another host and its lease is current.
    Unknown,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{what} is corrupt at line {line}: {reason}; keywheel will not guess, so inspect the file (it holds no plaintext secrets) and contact the operator who ran it"
    )]
    Corrupt {
        what: String,
        line: usize,
        reason: String,
    },
    #[error("run {0} not found")]
    RunNotFound(RunId),
    #[error("the {what} of run {run} is missing: {path}; {hint}")]
    MissingFile {
        run: RunId,
        what: &'static str,
        path: String,
        /// What the operator can do next.
        hint: &'static str,
    },
    #[error(
        "journal {path} of run {run} was deleted while the run was going on, so the run stopped before its next change; `keywheel resume` and `rollback` cannot see this run, so check every target by hand against the steps above"
    )]
    JournalDeleted { run: RunId, path: String },
    #[error("run {0} already exists")]
    RunExists(RunId),
    #[error(
        "journal of run {run} was appended to by another process (expected sequence {expected}, found {found}); stop the other keywheel process"
    )]
    SequenceConflict {
        run: RunId,
        expected: u64,
        found: u64,
    },
    #[error("lock {lock} is held by run {} (pid {} on {})", holder.run_id, holder.pid, holder.host)]
    Locked {
        lock: String,
        holder: LeaseHolder,
        liveness: Liveness,
    },
    #[error("lock {lock} is no longer held by this run; another process broke or took it")]
    LockLost { lock: String },
}

/// Storage for journals and locks. See the module documentation for the
/// contract.
#[async_trait]
pub trait Store: Send + Sync {
    /// Describes where the data lives, for messages.
    fn describe(&self) -> String;

    /// Creates the journal of `run` holding its first record, and keeps
    /// `playbook_text` with it. The run appears with its first record or
    /// not at all.
    async fn create_run(
        &self,
        run: &RunId,
        playbook_text: &str,
        first: &RawRecord,
    ) -> Result<(), StoreError>;

    /// Appends a record whose sequence number must follow the last one, and
    /// returns once it is durable.
    async fn append(&self, run: &RunId, record: &RawRecord) -> Result<(), StoreError> {
        let position = self.write(run, record).await?;
        self.wait_durable(run, position).await
    }

    /// Appends a record whose sequence number must follow the last one,
    /// without waiting until it is durable. Returns its position, for
    /// [`Store::wait_durable`]. Records are written in the order of the
    /// calls.
    async fn write(&self, run: &RunId, record: &RawRecord) -> Result<u64, StoreError>;

    /// Returns once every record of `run` up to `position` is durable. One
    /// sync covers every record written before it starts, so concurrent
    /// callers share syncs. After a failed sync, every later call fails.
    async fn wait_durable(&self, run: &RunId, position: u64) -> Result<(), StoreError>;

    /// Reads a run's journal.
    async fn read(&self, run: &RunId) -> Result<JournalRead, StoreError>;

    /// Returns the playbook text the run started with.
    async fn playbook_text(&self, run: &RunId) -> Result<String, StoreError>;

    /// Lists every run, oldest first.
    async fn list_runs(&self) -> Result<Vec<RunId>, StoreError>;

    /// Takes the lock `name` for `holder`. When the lock is held, fails with
    /// [`StoreError::Locked`], unless `take_over` names the run that holds it
    /// and its holder is dead or expired.
    async fn acquire(
        &self,
        name: &str,
        holder: &LeaseHolder,
        take_over: Option<&RunId>,
    ) -> Result<(), StoreError>;

    /// Extends the lease of `holder`.
    async fn renew(&self, name: &str, holder: &LeaseHolder) -> Result<(), StoreError>;

    /// Releases the lock if `holder` still holds it.
    async fn release(&self, name: &str, holder: &LeaseHolder) -> Result<(), StoreError>;

    /// Who holds the lock, if anyone.
    async fn inspect_lock(&self, name: &str)
    -> Result<Option<(LeaseHolder, Liveness)>, StoreError>;

    /// Removes the lock, whatever run holds it, and returns that holder.
    async fn break_lock(&self, name: &str) -> Result<Option<LeaseHolder>, StoreError>;

    /// Returns the unfinished run of a playbook, if any.
    async fn active_run(&self, playbook: &str) -> Result<Option<RunId>, StoreError>;

    /// Appends one line to the run's audit log. The journal stays the
    /// record of truth; the audit log is its readable copy for people.
    async fn append_audit(&self, run: &RunId, line: &str) -> Result<(), StoreError>;

    /// Returns the run's audit log, one JSON object per line.
    async fn read_audit(&self, run: &RunId) -> Result<String, StoreError>;

    /// Records `run` as the unfinished run of `playbook`, or clears it.
    async fn set_active_run(&self, playbook: &str, run: Option<&RunId>) -> Result<(), StoreError>;
}
