//! The local state directory.
//!
//! ```text
//! STATE_DIR/
//!   seal.key                  default seal key (0600)
//!   runs/RUN_ID/journal       append-only journal (0600)
//!   runs/RUN_ID/playbook.yaml the playbook the run started with (0600)
//!   runs/RUN_ID/audit.jsonl   one JSON line per journal event, for people
//!   locks/PLAYBOOK.lock       lease of the run that holds the playbook
//!   active/PLAYBOOK           id of the playbook's unfinished run
//! ```
//!
//! A lock file is created with `link(2)` from a fully written temporary
//! file, so it appears atomically with its content: of any number of
//! processes that start together, exactly one creates it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{JournalRead, LeaseHolder, Liveness, RawRecord, Store, StoreError, codec};
use crate::fsutil::{self, PRIVATE_FILE_MODE};
use crate::run_id::RunId;

const JOURNAL: &str = "journal";
const PLAYBOOK_COPY: &str = "playbook.yaml";
const AUDIT_LOG: &str = "audit.jsonl";

pub struct LocalStore {
    root: PathBuf,
    /// Open journals: file, byte length and last sequence number.
    writers: Mutex<HashMap<RunId, Writer>>,
    /// Journal syncs made, for tests of the group commit.
    syncs: AtomicU64,
}

struct Writer {
    file: Arc<File>,
    /// Bytes written, durable or not.
    len: u64,
    last_seq: u64,
    sync: Arc<GroupSync>,
}

/// The group commit of one journal.
struct GroupSync {
    /// Bytes known to be durable. Callers that wait for a sync queue on
    /// this lock, and only one of them syncs at a time.
    durable: tokio::sync::Mutex<u64>,
    /// Set when a sync failed.
    failed: AtomicBool,
}

fn sync_failed(path: &Path) -> StoreError {
    StoreError::Io {
        action: "cannot append to",
        path: path.display().to_string(),
        source: io::Error::other("an earlier sync of the journal failed"),
    }
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.display().to_string(),
        source,
    }
}

impl LocalStore {
    /// Opens (and creates, mode 0700) the state directory at `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in [
            root.to_path_buf(),
            root.join("runs"),
            root.join("locks"),
            root.join("active"),
        ] {
            fsutil::create_private_dir(&dir).map_err(io_error("cannot create", &dir))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            writers: Mutex::new(HashMap::new()),
            syncs: AtomicU64::new(0),
        })
    }

    /// Returns the open journal of `run`: its file, group commit and written
    /// length.
    fn writer_parts(&self, run: &RunId) -> Option<(Arc<File>, Arc<GroupSync>, u64)> {
        let writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        let writer = writers.get(run)?;
        Some((writer.file.clone(), writer.sync.clone(), writer.len))
    }

    /// Number of journal syncs made so far.
    pub fn journal_syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn run_dir(&self, run: &RunId) -> PathBuf {
        self.root.join("runs").join(run.as_str())
    }

    fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(format!("{name}.lock"))
    }

    fn journal_label(&self, run: &RunId) -> String {
        let path = self.run_dir(run).join(JOURNAL);
        format!("journal of run {run} ({})", path.display())
    }

    /// Opens a journal for appending, cutting off a torn last record.
    fn open_writer(&self, run: &RunId) -> Result<Writer, StoreError> {
        let path = self.run_dir(run).join(JOURNAL);
        let bytes = fs::read(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => StoreError::RunNotFound(run.clone()),
            _ => io_error("cannot read", &path)(err),
        })?;
        let decoded = codec::decode(&bytes, &self.journal_label(run))?;
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_error("cannot open", &path))?;
        if decoded.torn_tail {
            tracing::info!(run = %run, "cutting off a torn last journal record");
            file.set_len(decoded.valid_len)
                .map_err(io_error("cannot truncate", &path))?;
            file.sync_all().map_err(io_error("cannot sync", &path))?;
        }
        // A process killed between its write and its sync leaves records
        // that may only be in the page cache, so the first sync here
        // covers the whole file.
        let sync = GroupSync {
            durable: tokio::sync::Mutex::new(0),
            failed: AtomicBool::new(false),
        };
        Ok(Writer {
            file: Arc::new(file),
            len: decoded.valid_len,
            last_seq: decoded.records.last().map_or(0, |r| r.seq),
            sync: Arc::new(sync),
        })
    }

    fn read_holder(path: &Path) -> Result<Option<LeaseHolder>, StoreError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|err| StoreError::Corrupt {
                        what: format!("lock file {}", path.display()),
                        line: 1,
                        reason: format!(
                            "{err}; remove it with --break-lock if no keywheel process runs"
                        ),
                    })
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("cannot read", path)(err)),
        }
    }

    fn write_holder_new(&self, path: &Path, holder: &LeaseHolder) -> Result<bool, StoreError> {
        // Unique per call, since two threads of one process may race here.
        let unique: u64 = rand::random();
        let temp = path.with_extension(format!("lock.{}-{unique:016x}.tmp", std::process::id()));
        let json = serde_json::to_vec_pretty(holder).unwrap_or_default();
        fsutil::write_atomic(&temp, &json, PRIVATE_FILE_MODE)
            .map_err(io_error("cannot write lock file", path))?;
        let linked = fs::hard_link(&temp, path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                fsutil::sync_dir(dir).map_err(io_error("cannot sync", dir))?;
                Ok(true)
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(err) => Err(io_error("cannot create", path)(err)),
        }
    }
}

impl LocalStore {
    /// Replaces the lock `stale` (whose holder is gone) with `holder`, so
    /// that of several processes taking it over at once exactly one wins.
    /// Takeovers hold an exclusive `flock` on a companion file, which the
    /// kernel releases when its holder dies. Under it, the lock file is
    /// read again and replaced by rename only if it is still `stale`. The
    /// lock path never goes missing, so no plain acquire can slip in.
    fn replace_stale_lock(
        &self,
        name: &str,
        path: &Path,
        stale: &LeaseHolder,
        holder: &LeaseHolder,
    ) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let guard_path = path.with_extension("lock.takeover");
        let guard = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&guard_path)
            .map_err(io_error("cannot open", &guard_path))?;
        rustix::fs::flock(&guard, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|err| io_error("cannot lock", &guard_path)(err.into()))?;
        if Self::read_holder(path)?.as_ref() != Some(stale) {
            return self.lock_taken(name);
        }
        let json = serde_json::to_vec_pretty(holder).unwrap_or_default();
        fsutil::write_atomic(path, &json, PRIVATE_FILE_MODE).map_err(io_error("cannot write", path))
        // Dropping `guard` closes the file and releases the flock.
    }

    /// Reports the lock as held by whoever holds it now.
    fn lock_taken(&self, name: &str) -> Result<(), StoreError> {
        match Self::read_holder(&self.lock_path(name))? {
            Some(current) => {
                let liveness = liveness_of(&current);
                Err(StoreError::Locked {
                    lock: name.to_string(),
                    holder: current,
                    liveness,
                })
            }
            None => Err(StoreError::LockLost {
                lock: name.to_string(),
            }),
        }
    }
}

#[async_trait]
impl Store for LocalStore {
    fn describe(&self) -> String {
        format!("state directory {}", self.root.display())
    }

    async fn create_run(
        &self,
        run: &RunId,
        playbook_text: &str,
        first: &RawRecord,
    ) -> Result<(), StoreError> {
        let dir = self.run_dir(run);
        match fs::DirBuilder::new().mode_private().create(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(StoreError::RunExists(run.clone()));
            }
            Err(err) => return Err(io_error("cannot create", &dir)(err)),
        }
        let copy = dir.join(PLAYBOOK_COPY);
        fsutil::write_atomic(&copy, playbook_text.as_bytes(), PRIVATE_FILE_MODE)
            .map_err(io_error("cannot write", &copy))?;
        // The journal appears by rename, already holding its first record.
        let journal = dir.join(JOURNAL);
        fsutil::write_atomic(&journal, &codec::encode(first), PRIVATE_FILE_MODE)
            .map_err(io_error("cannot create", &journal))?;
        let runs = self.root.join("runs");
        fsutil::sync_dir(&runs).map_err(io_error("cannot sync", &runs))?;
        Ok(())
    }

    async fn write(&self, run: &RunId, record: &RawRecord) -> Result<u64, StoreError> {
        let path = self.run_dir(run).join(JOURNAL);
        let mut writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        if !writers.contains_key(run) {
            let writer = self.open_writer(run)?;
            writers.insert(run.clone(), writer);
        }
        let Some(writer) = writers.get_mut(run) else {
            return Err(StoreError::RunNotFound(run.clone()));
        };
        if writer.sync.failed.load(Ordering::SeqCst) {
            return Err(sync_failed(&path));
        }

        // Another process appending to the same journal shows up as a
        // length this writer did not produce.
        let metadata = writer
            .file
            .metadata()
            .map_err(io_error("cannot stat", &path))?;
        // Records written to a deleted file would be lost with it.
        if std::os::unix::fs::MetadataExt::nlink(&metadata) == 0 {
            writers.remove(run);
            return Err(StoreError::JournalDeleted {
                run: run.clone(),
                path: path.display().to_string(),
            });
        }
        let on_disk = metadata.len();
        if on_disk != writer.len || record.seq != writer.last_seq + 1 {
            let found = writer.last_seq;
            writers.remove(run);
            return Err(StoreError::SequenceConflict {
                run: run.clone(),
                expected: record.seq,
                found: found + 1,
            });
        }

        let bytes = codec::encode(record);
        if let Err(err) = writer.file.write_all_at(&bytes, writer.len) {
            // Cut off whatever part of the record reached the disk, so the
            // next append starts on a record boundary.
            let _ = writer.file.set_len(writer.len);
            let _ = writer.file.sync_data();
            return Err(io_error("cannot append to", &path)(err));
        }
        writer.len += bytes.len() as u64;
        writer.last_seq = record.seq;
        Ok(writer.len)
    }

    async fn wait_durable(&self, run: &RunId, position: u64) -> Result<(), StoreError> {
        let path = self.run_dir(run).join(JOURNAL);
        let Some((file, sync, _)) = self.writer_parts(run) else {
            return Err(StoreError::RunNotFound(run.clone()));
        };
        // Callers queue here while a sync runs. When a caller's turn comes,
        // that sync may already have covered its record.
        let mut durable = sync.durable.lock().await;
        if sync.failed.load(Ordering::SeqCst) {
            return Err(sync_failed(&path));
        }
        if *durable >= position {
            return Ok(());
        }

        // The sync covers everything written before it starts.
        let written = self.writer_parts(run).map_or(position, |(_, _, len)| len);
        // On a worker thread, so that the calls of other targets go on
        // while the disk syncs.
        let synced = tokio::task::spawn_blocking(move || {
            crate::timings::JOURNAL_SYNCS.time(|| file.sync_data())
        })
        .await
        .unwrap_or_else(|err| Err(io::Error::other(err)));
        match synced {
            Ok(()) => {
                *durable = written.max(position);
                self.syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                // What reached the disk is unknown now, so nothing more is
                // written through this store.
                sync.failed.store(true, Ordering::SeqCst);
                Err(io_error("cannot sync", &path)(err))
            }
        }
    }

    async fn read(&self, run: &RunId) -> Result<JournalRead, StoreError> {
        let path = self.run_dir(run).join(JOURNAL);
        let bytes = fs::read(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => StoreError::RunNotFound(run.clone()),
            _ => io_error("cannot read", &path)(err),
        })?;
        let decoded = codec::decode(&bytes, &self.journal_label(run))?;
        Ok(JournalRead {
            records: decoded.records,
            torn_tail: decoded.torn_tail,
        })
    }

    async fn playbook_text(&self, run: &RunId) -> Result<String, StoreError> {
        let path = self.run_dir(run).join(PLAYBOOK_COPY);
        fs::read_to_string(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => StoreError::MissingFile {
                run: run.clone(),
                what: "playbook copy",
                path: path.display().to_string(),
                hint: "restore it from a backup to resume or roll back the run; `keywheel status` still shows the run",
            },
            _ => io_error("cannot read", &path)(err),
        })
    }

    async fn list_runs(&self) -> Result<Vec<RunId>, StoreError> {
        let dir = self.root.join("runs");
        // A directory without a journal is a run creation cut short by a
        // crash: no record was written, so there is no run.
        let mut runs: Vec<RunId> = fs::read_dir(&dir)
            .map_err(io_error("cannot list", &dir))?
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok()?.parse().ok())
            .filter(|run: &RunId| self.run_dir(run).join(JOURNAL).exists())
            .collect();
        runs.sort();
        Ok(runs)
    }

    async fn acquire(
        &self,
        name: &str,
        holder: &LeaseHolder,
        take_over: Option<&RunId>,
    ) -> Result<(), StoreError> {
        let path = self.lock_path(name);
        if self.write_holder_new(&path, holder)? {
            return Ok(());
        }
        let Some((current, liveness)) = self.inspect_lock(name).await? else {
            // Released between our attempt and the read: try once more.
            if self.write_holder_new(&path, holder)? {
                return Ok(());
            }
            return Err(StoreError::LockLost {
                lock: name.to_string(),
            });
        };
        let may_take_over = take_over == Some(&current.run_id)
            && matches!(liveness, Liveness::Dead | Liveness::Expired);
        if !may_take_over {
            return Err(StoreError::Locked {
                lock: name.to_string(),
                holder: current,
                liveness,
            });
        }
        tracing::info!(lock = name, run = %current.run_id, pid = current.pid, "taking over the lock of a run whose process is gone");
        self.replace_stale_lock(name, &path, &current, holder)
    }

    async fn renew(&self, name: &str, holder: &LeaseHolder) -> Result<(), StoreError> {
        let path = self.lock_path(name);
        match Self::read_holder(&path)? {
            Some(current) if current.run_id == holder.run_id && current.pid == holder.pid => {
                let json = serde_json::to_vec_pretty(holder).unwrap_or_default();
                fsutil::write_atomic(&path, &json, PRIVATE_FILE_MODE)
                    .map_err(io_error("cannot write", &path))
            }
            _ => Err(StoreError::LockLost {
                lock: name.to_string(),
            }),
        }
    }

    async fn release(&self, name: &str, holder: &LeaseHolder) -> Result<(), StoreError> {
        let path = self.lock_path(name);
        match Self::read_holder(&path)? {
            Some(current) if current.run_id == holder.run_id && current.pid == holder.pid => {
                fsutil::remove_durably(&path).map_err(io_error("cannot remove", &path))
            }
            _ => Ok(()),
        }
    }

    async fn inspect_lock(
        &self,
        name: &str,
    ) -> Result<Option<(LeaseHolder, Liveness)>, StoreError> {
        let path = self.lock_path(name);
        Ok(Self::read_holder(&path)?.map(|holder| {
            let liveness = liveness_of(&holder);
            (holder, liveness)
        }))
    }

    async fn break_lock(&self, name: &str) -> Result<Option<LeaseHolder>, StoreError> {
        let path = self.lock_path(name);
        let holder = match Self::read_holder(&path) {
            Ok(holder) => holder,
            Err(StoreError::Corrupt { .. }) => None,
            Err(err) => return Err(err),
        };
        fsutil::remove_durably(&path).map_err(io_error("cannot remove", &path))?;
        Ok(holder)
    }

    async fn append_audit(&self, run: &RunId, line: &str) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.run_dir(run).join(AUDIT_LOG);
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(PRIVATE_FILE_MODE)
            .open(&path)
            .map_err(io_error("cannot open", &path))?;
        // A line cut short by a full disk or a crash gets its own line
        // ended first, so that the next event is not glued to it.
        let torn = match file.metadata() {
            Ok(metadata) if metadata.len() > 0 => {
                use std::os::unix::fs::FileExt;
                let mut last = [0u8; 1];
                file.read_exact_at(&mut last, metadata.len() - 1).is_ok() && last[0] != b'\n'
            }
            _ => false,
        };
        let mut bytes = Vec::with_capacity(line.len() + 2);
        if torn {
            bytes.push(b'\n');
        }
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        file.write_all(&bytes)
            .map_err(io_error("cannot append to", &path))
    }

    async fn read_audit(&self, run: &RunId) -> Result<String, StoreError> {
        let path = self.run_dir(run).join(AUDIT_LOG);
        fs::read_to_string(&path).map_err(|err| match err.kind() {
            io::ErrorKind::NotFound => StoreError::MissingFile {
                run: run.clone(),
                what: "audit log",
                path: path.display().to_string(),
                hint: "the journal is the record of truth, so `keywheel status` still shows the run",
            },
            _ => io_error("cannot read", &path)(err),
        })
    }

    async fn active_run(&self, playbook: &str) -> Result<Option<RunId>, StoreError> {
        let path = self.root.join("active").join(playbook);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.trim().parse().ok()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(io_error("cannot read", &path)(err)),
        }
    }

    async fn set_active_run(&self, playbook: &str, run: Option<&RunId>) -> Result<(), StoreError> {
        let path = self.root.join("active").join(playbook);
        match run {
            Some(run) => {
                fsutil::write_atomic(&path, format!("{run}\n").as_bytes(), PRIVATE_FILE_MODE)
                    .map_err(io_error("cannot write", &path))
            }
            None => fsutil::remove_durably(&path).map_err(io_error("cannot remove", &path)),
        }
    }
}

trait DirBuilderPrivate {
    fn mode_private(&mut self) -> &mut Self;
}

impl DirBuilderPrivate for fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(fsutil::PRIVATE_DIR_MODE)
    }
}

/// Decides whether a lock's holder still runs.
pub fn liveness_of(holder: &LeaseHolder) -> Liveness {
    if holder.host == crate::host::hostname() {
        return match crate::host::process_start(holder.pid) {
            Some(start) if holder.pid_start.is_none_or(|s| s == start) => Liveness::Alive,
            _ => Liveness::Dead,
        };
    }
    let expired = holder
        .expires_at
        .parse::<jiff::Timestamp>()
        .is_ok_and(|expiry| expiry < jiff::Timestamp::now());
    if expired {
        Liveness::Expired
    } else {
        Liveness::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(run: &str, pid: u32) -> LeaseHolder {
        LeaseHolder {
            run_id: run.parse().unwrap(),
            host: crate::host::hostname(),
            pid,
            pid_start: crate::host::process_start(pid),
            acquired_at: "2026-12-04T00:00:00Z".into(),
            expires_at: "2099-01-01T00:00:00Z".into(),
        }
    }

    fn run_id() -> RunId {
        "20261204-120000-abcdef".parse().unwrap()
    }

    /// Opens a store in `dir` with run `run_id()` holding record 1.
    async fn store_with_run(dir: &Path) -> LocalStore {
        let store = LocalStore::open(dir).unwrap();
        let first = RawRecord {
            seq: 1,
            json: "{\"seq\":1}".into(),
        };
        store.create_run(&run_id(), "", &first).await.unwrap();
        store
    }

    #[tokio::test]
    async fn append_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let first = RawRecord {
            seq: 1,
            json: "{\"seq\":1}".into(),
        };
        store
            .create_run(&run_id(), "version: 1\n", &first)
            .await
            .unwrap();
        for seq in 2..=3 {
            let record = RawRecord {
                seq,
                json: format!("{{\"seq\":{seq}}}"),
            };
            store.append(&run_id(), &record).await.unwrap();
        }
        let read = store.read(&run_id()).await.unwrap();
        assert_eq!(read.records.len(), 3);
        let mode = fsutil::mode_of(
            &dir.path()
                .join("runs")
                .join(run_id().as_str())
                .join(JOURNAL),
        )
        .unwrap();
        assert_eq!(mode, 0o600);
    }

    #[tokio::test]
    async fn audit_line_after_torn_line_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_run(dir.path()).await;
        let path = store.run_dir(&run_id()).join(AUDIT_LOG);
        fs::write(&path, "{\"event\":\"one\"}\n{\"event\":\"tw").unwrap();

        store
            .append_audit(&run_id(), "{\"event\":\"three\"}")
            .await
            .unwrap();

        let text = store.read_audit(&run_id()).await.unwrap();
        assert_eq!(
            text,
            "{\"event\":\"one\"}\n{\"event\":\"tw\n{\"event\":\"three\"}\n"
        );
    }

    #[tokio::test]
    async fn concurrent_waits_share_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_run(dir.path()).await;
        let mut positions = Vec::new();
        for seq in 2..=21 {
            let record = RawRecord {
                seq,
                json: format!("{{\"seq\":{seq}}}"),
            };
            positions.push(store.write(&run_id(), &record).await.unwrap());
        }
        assert!(positions.is_sorted(), "{positions:?}");

        let run = run_id();
        let waits = positions
            .iter()
            .map(|position| store.wait_durable(&run, *position));
        for result in futures_util::future::join_all(waits).await {
            result.unwrap();
        }
        assert_eq!(store.journal_syncs(), 1, "one sync covers all 20 records");
        store.wait_durable(&run_id(), positions[5]).await.unwrap();
        assert_eq!(store.journal_syncs(), 1, "a durable record needs no sync");

        let read = store.read(&run_id()).await.unwrap();
        let seqs: Vec<u64> = read.records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=21).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn reopened_journal_is_synced_again() {
        let dir = tempfile::tempdir().unwrap();
        let first = RawRecord {
            seq: 1,
            json: "{\"seq\":1}".into(),
        };
        let second = RawRecord {
            seq: 2,
            json: "{\"seq\":2}".into(),
        };
        let written = LocalStore::open(dir.path()).unwrap();
        written.create_run(&run_id(), "", &first).await.unwrap();
        // A process killed here leaves record 2 written but not synced.
        let position = written.write(&run_id(), &second).await.unwrap();

        let reopened = LocalStore::open(dir.path()).unwrap();
        let third = RawRecord {
            seq: 3,
            json: "{\"seq\":3}".into(),
        };
        reopened.write(&run_id(), &third).await.unwrap();
        reopened.wait_durable(&run_id(), position).await.unwrap();
        assert_eq!(reopened.journal_syncs(), 1, "record 2 is synced");
    }

    #[tokio::test]
    async fn write_to_deleted_journal_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let record = |seq: u64| RawRecord {
            seq,
            json: format!("{{\"seq\":{seq}}}"),
        };
        store.create_run(&run_id(), "", &record(1)).await.unwrap();
        store.write(&run_id(), &record(2)).await.unwrap();
        fs::remove_dir_all(store.run_dir(&run_id())).unwrap();

        let err = store.write(&run_id(), &record(3)).await.unwrap_err();

        assert!(matches!(err, StoreError::JournalDeleted { .. }), "{err}");
    }

    #[tokio::test]
    async fn append_rejects_sequence_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_run(dir.path()).await;
        let record = RawRecord {
            seq: 3,
            json: "{\"seq\":3}".into(),
        };
        let err = store.append(&run_id(), &record).await.unwrap_err();
        assert!(matches!(err, StoreError::SequenceConflict { .. }), "{err}");
    }

    #[tokio::test]
    async fn second_acquire_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        let me = holder("20261204-120000-aaaaaa", std::process::id());
        store.acquire("pb", &me, None).await.unwrap();
        let other = holder("20261204-120001-bbbbbb", std::process::id());
        let err = store.acquire("pb", &other, None).await.unwrap_err();
        match err {
            StoreError::Locked {
                holder, liveness, ..
            } => {
                assert_eq!(holder.run_id, me.run_id);
                assert_eq!(liveness, Liveness::Alive);
            }
            other => panic!("{other}"),
        }
        store.release("pb", &me).await.unwrap();
        store.acquire("pb", &other, None).await.unwrap();
    }

    #[test]
    fn racing_takeovers_have_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let run = "20261204-120000-aaaaaa";
        let dead = LeaseHolder {
            pid: 4_000_000_000,
            pid_start: Some(1),
            ..holder(run, 1)
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        runtime.block_on(store.acquire("pb", &dead, None)).unwrap();

        let wins: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let root = dir.path();
                    scope.spawn(move || {
                        let runtime = tokio::runtime::Builder::new_current_thread()
                            .build()
                            .unwrap();
                        let store = LocalStore::open(root).unwrap();
                        // A live pid, so the winner's lock is never stale;
                        // distinct acquisition times tell the takers apart.
                        let me = LeaseHolder {
                            acquired_at: format!("taker-{i}"),
                            ..holder(run, std::process::id())
                        };
                        let run_id = me.run_id.clone();
                        runtime
                            .block_on(store.acquire("pb", &me, Some(&run_id)))
                            .is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(wins, 1);
    }

    #[tokio::test]
    async fn dead_holder_taken_over_by_same_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        // A pid far above any default pid_max cannot be running.
        let dead = LeaseHolder {
            pid: 4_000_000_000,
            pid_start: Some(1),
            ..holder("20261204-120000-aaaaaa", 1)
        };
        store.acquire("pb", &dead, None).await.unwrap();
        let (_, liveness) = store.inspect_lock("pb").await.unwrap().unwrap();
        assert_eq!(liveness, Liveness::Dead);
        let other = holder("20261204-120001-bbbbbb", std::process::id());
        assert!(
            store
                .acquire("pb", &other, Some(&other.run_id))
                .await
                .is_err()
        );
        let same_run = holder("20261204-120000-aaaaaa", std::process::id());
        store
            .acquire("pb", &same_run, Some(&same_run.run_id))
            .await
            .unwrap();
    }
}
