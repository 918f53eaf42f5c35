//! Reading runs back: finding a run by id prefix, replaying its journal,
//! and listing history.

use super::record::Record;
use super::report::RunReport;
use super::state::RunState;
use super::{Engine, EngineError};
use crate::run_id::RunId;
use crate::store::StoreError;

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
        let journal = self.store.read(run_id).await?;
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
        Ok(RunState::replay(run_id.clone(), &records))
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

    /// The unfinished runs, oldest first.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunState>, EngineError> {
        let mut unfinished = Vec::new();
        for run in self.store.list_runs().await? {
            let state = self.load_state(&run).await?;
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
                match runs.last() {
                    Some(latest) => {
                        Ok(vec![RunReport::from_state(&self.load_state(latest).await?)])
                    }
                    None => Ok(Vec::new()),
                }
            }
        }
    }

    /// Reports of past runs, newest first, optionally of one playbook.
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
            let state = self.load_state(run).await?;
            if playbook.is_none_or(|name| state.playbook() == name) {
                reports.push(RunReport::from_state(&state));
            }
        }
        Ok(reports)
    }
}
