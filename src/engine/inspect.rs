//! Reading runs back: finding a run by id prefix, replaying its journal,
//! and listing history.

use super::record::Record;
use super::report::RunReport;
use super::state::RunState;
use super::{Engine, EngineError};
use crate::run_id::RunId;
use crate::store::{JournalRead, Store, StoreError};

/// Replays the journal of `run_id` from `store`.
pub async fn replay_run(store: &dyn Store, run_id: &RunId) -> Result<RunState, StoreError> {
    replay_read(run_id, store.read(run_id).await?)
}

/// Replays a journal already read.
fn replay_read(run_id: &RunId, journal: JournalRead) -> Result<RunState, StoreError> {
    if journal.torn_tail {
        tracing::info!(run = %run_id, "ignoring a torn last journal record");
    }
    let mut records = Vec::with_capacity(journal.records.len());
    for raw in &journal.records {
        let record: Record =
            serde_json::from_str(&raw.json).map_err(|err| StoreError::Corrupt {
                what: format!("journal of run {run_id}"),
                line: raw.seq as usize,
                reason: format!("record is not a keywheel event: {err}"),
            })?;
        records.push(record);
    }
    if !matches!(
        records.first().map(|record| &record.event),
        Some(super::record::Event::RunStarted { .. })
    ) {
        return Err(StoreError::Corrupt {
            what: format!("journal of run {run_id}"),
            line: 1,
            reason: "it does not start with the run's first record (run_started)".to_string(),
        });
    }
    Ok(RunState::replay(run_id.clone(), &records))
}

/// The text of a revoke step in a journal record, as `serde_json` writes it.
const REVOKE_STEP: &str = "\"step\":\"revoke\"";

/// Ids of old keys that runs of `playbook` other than `except` disabled and
/// did not enable again. An issuer may delete such a key to free a slot.
/// A journal that cannot be read is skipped with a warning: the list only
/// ever allows a deletion, so a missing entry errs on the safe side.
pub async fn keys_disabled_by_runs(
    store: &dyn Store,
    playbook: &str,
    except: Option<&RunId>,
) -> Result<Vec<String>, StoreError> {
    let mut keys = Vec::new();
    for run in store.list_runs().await? {
        if Some(&run) == except {
            continue;
        }
        let state = match store.read(&run).await {
            // Only a run that journaled a revoke can have left a key
            // disabled. Most runs never do (random keys, issuers that only
            // replace), and a text search skips them without decoding their
            // records: a state directory keeps every run, so decoding them
            // all would make each run slower than the one before.
            Ok(journal)
                if !journal
                    .records
                    .iter()
                    .any(|raw| raw.json.contains(REVOKE_STEP)) =>
            {
                continue;
            }
            Ok(journal) => replay_read(&run, journal),
            Err(err) => Err(err),
        };
        let state = match state {
            Ok(state) => state,
            Err(err) => {
                tracing::warn!(run = %run, %err, "skipping an unreadable journal while looking for disabled keys");
                continue;
            }
        };
        if state.playbook() != playbook {
            continue;
        }
        if let Some(key) = state.key_left_disabled()
            && !keys.iter().any(|k| k == key)
        {
            keys.push(key.to_string());
        }
    }
    Ok(keys)
}

/// Which runs `status` shows.
#[derive(Clone, Debug)]
pub enum RunSelector {
    /// A run id or a unique prefix of one.
    Id(String),
    /// Every unfinished run, or the latest run when none is unfinished.
    Current,
}

impl Engine {
    /// Replays the journal of `run_id`.
    pub async fn load_state(&self, run_id: &RunId) -> Result<RunState, EngineError> {
        replay_run(self.store.as_ref(), run_id)
            .await
            .map_err(EngineError::from)
    }

    /// Finds the run whose id is `selector` or starts with it.
    pub async fn resolve_run(&self, selector: &str) -> Result<RunId, EngineError> {
        if !RunId::is_valid_prefix(selector) {
            return Err(EngineError::RunNotFound(selector.to_string()));
        }
        let matches: Vec<RunId> = self
            .store
            .list_runs()
            .await?
            .into_iter()
            .filter(|run| run.as_str().starts_with(selector))
            .collect();
        match matches.as_slice() {
            [] => Err(EngineError::RunNotFound(selector.to_string())),
            [one] => Ok(one.clone()),
            many => Err(EngineError::AmbiguousRun {
                selector: selector.to_string(),
                candidates: many.iter().map(ToString::to_string).collect(),
            }),
        }
    }

    /// Replays `run` for a listing. A journal that cannot be read is
    /// reported as a warning and skipped, so that one damaged run does not
    /// hide every other run from `status`, `history`, `resume` and `due`.
    async fn load_listed(&self, run: &RunId) -> Result<Option<RunState>, EngineError> {
        match replay_run(self.store.as_ref(), run).await {
            Ok(state) => Ok(Some(state)),
            Err(
                err @ (StoreError::Corrupt { .. }
                | StoreError::Io { .. }
                | StoreError::MissingFile { .. }),
            ) => {
                self.out.warn(format!("skipping run {run}: {err}"));
                Ok(None)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// The unfinished runs, oldest first. Runs whose journal cannot be
    /// read are skipped with a warning.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunState>, EngineError> {
        let mut unfinished = Vec::new();
        for run in self.store.list_runs().await? {
            let Some(state) = self.load_listed(&run).await? else {
                continue;
            };
            if !state.is_finished() {
                unfinished.push(state);
            }
        }
        Ok(unfinished)
    }

    pub(super) async fn only_unfinished_run(&self) -> Result<RunId, EngineError> {
        let unfinished = self.unfinished_runs().await?;
        match unfinished.as_slice() {
            [] => Err(EngineError::NothingToResume),
            [one] => Ok(one.run_id.clone()),
            many => Err(EngineError::SeveralUnfinished(
                many.iter()
                    .map(|s| format!("{} ({})", s.run_id, s.playbook()))
                    .collect(),
            )),
        }
    }

    /// Reports for `status`.
    pub async fn status(&self, selector: RunSelector) -> Result<Vec<RunReport>, EngineError> {
        match selector {
            RunSelector::Id(id) => {
                let run = self.resolve_run(&id).await?;
                Ok(vec![RunReport::from_state(&self.load_state(&run).await?)])
            }
            RunSelector::Current => {
                let unfinished = self.unfinished_runs().await?;
                if !unfinished.is_empty() {
                    return Ok(unfinished.iter().map(RunReport::from_state).collect());
                }
                let runs = self.store.list_runs().await?;
                for run in runs.iter().rev() {
                    if let Some(state) = self.load_listed(run).await? {
                        return Ok(vec![RunReport::from_state(&state)]);
                    }
                }
                Ok(Vec::new())
            }
        }
    }

    /// Reports of past runs, newest first, optionally of one playbook.
    /// Runs whose journal cannot be read are skipped with a warning.
    pub async fn history(
        &self,
        playbook: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RunReport>, EngineError> {
        let mut reports = Vec::new();
        for run in self.store.list_runs().await?.iter().rev() {
            if reports.len() >= limit {
                break;
            }
            let Some(state) = self.load_listed(run).await? else {
                continue;
            };
            if playbook.is_none_or(|name| state.playbook() == name) {
                reports.push(RunReport::from_state(&state));
            }
        }
        Ok(reports)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::journal::Journal;
    use crate::engine::record::{Event, IssuerRecord, Step, run_started_for_test};
    use crate::store::local::LocalStore;

    /// Journals a run of `playbook` whose old key is `old`, with a done
    /// revoke when `revoked`.
    async fn journal_run(
        store: &Arc<LocalStore>,
        run: &str,
        playbook: &str,
        old: &str,
        revoked: bool,
    ) {
        let run_id: RunId = run.parse().unwrap();
        let journal = Journal::new(store.clone(), RunState::new(run_id.clone()));
        journal
            .create("", run_started_for_test(&run_id, playbook))
            .await
            .unwrap();
        let issuer = IssuerRecord {
            old_key_id: Some(old.into()),
            ..IssuerRecord::default()
        };
        journal
            .append(Event::Preflight {
                issuer,
                targets: Vec::new(),
            })
            .await
            .unwrap();
        if revoked {
            journal
                .append(Event::Done {
                    step: Step::Revoke,
                    summary: format!("disabled {old}"),
                    detail: serde_json::Value::Null,
                })
                .await
                .unwrap();
        }
    }

    #[test]
    fn revoke_step_text_matches_journal_records() {
        let record = Record {
            seq: 4,
            at: "2026-12-04T00:00:00.000Z".into(),
            event: Event::Intent {
                step: Step::Revoke,
                attempt: 1,
            },
        };
        let json = serde_json::to_string(&record).unwrap();
        assert!(json.contains(REVOKE_STEP), "{json}");
    }

    #[tokio::test]
    async fn disabled_keys_need_a_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalStore::open(dir.path()).unwrap());
        journal_run(&store, "20261204-120000-aaaaaa", "app", "OLD-1", true).await;
        journal_run(&store, "20261204-120001-bbbbbb", "app", "OLD-2", false).await;
        journal_run(&store, "20261204-120002-cccccc", "other", "OLD-3", true).await;
        journal_run(&store, "20261204-120003-dddddd", "app", "OLD-4", true).await;

        let except: RunId = "20261204-120003-dddddd".parse().unwrap();
        let keys = keys_disabled_by_runs(store.as_ref(), "app", Some(&except))
            .await
            .unwrap();
        assert_eq!(keys, ["OLD-1"]);
    }
}
