//! The watch part of a run's state, rebuilt from the journal.
//!
//! A window's first intent opens a round and gives its start time. An
//! intent written by a resumed process joins the open round, so the window
//! keeps its samples and its clock. The window's `done` or `failed` record
//! closes the round. A window held as inconclusive and then resumed opens a
//! new round: it is watched again from the start.

use std::collections::BTreeMap;

use serde::Serialize;

use super::record::{Event, Record, Step};
use crate::watch::WatchWindow;
use crate::watch::sample::Sample;

#[derive(Clone, Debug, Default, Serialize)]
pub struct WatchLog {
    /// Values before the push, by check name, as Prometheus writes values.
    pub baselines: BTreeMap<String, String>,
    /// Every round of every window, in journal order.
    pub rounds: Vec<Round>,
}

/// One watch of one window.
#[derive(Clone, Debug, Serialize)]
pub struct Round {
    pub window: WatchWindow,
    /// Time of the round's first intent: the window's start.
    pub started_at: String,
    pub samples: Vec<CheckSample>,
    /// `pass`, `fail` or `inconclusive`; none while the round is open.
    pub verdict: Option<String>,
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CheckSample {
    pub check: String,
    pub at: String,
    #[serde(flatten)]
    pub sample: Sample,
}

impl Round {
    /// Returns the samples of one check, in order.
    pub fn samples_of(&self, check: &str) -> Vec<Sample> {
        self.samples
            .iter()
            .filter(|s| s.check == check)
            .map(|s| s.sample.clone())
            .collect()
    }
}

impl WatchLog {
    /// Applies one record; records about other steps are ignored.
    pub fn apply(&mut self, record: &Record) {
        match &record.event {
            Event::Intent {
                step: Step::Watch(window),
                ..
            } => {
                self.open_or_start(*window, &record.at);
            }
            Event::WatchSample {
                window,
                check,
                sample,
            } => {
                self.open_or_start(*window, &record.at)
                    .samples
                    .push(CheckSample {
                        check: check.clone(),
                        at: record.at.clone(),
                        sample: sample.clone(),
                    });
            }
            Event::Done {
                step: Step::Watch(window),
                summary,
                ..
            } => self.close(*window, "pass", summary),
            Event::Failed {
                step: Step::Watch(window),
                class,
                error,
            } => self.close(*window, class, error),
            Event::WatchBaseline { check, value } => {
                self.baselines.insert(check.clone(), value.clone());
            }
            _ => {}
        }
    }

    /// Returns the round of `window` still being watched, if any.
    pub fn open_round(&self, window: WatchWindow) -> Option<&Round> {
        self.rounds
            .iter()
            .rev()
            .find(|r| r.window == window && r.verdict.is_none())
    }

    fn open_or_start(&mut self, window: WatchWindow, at: &str) -> &mut Round {
        let open = self
            .rounds
            .iter()
            .rposition(|r| r.window == window && r.verdict.is_none());
        let index = match open {
            Some(index) => index,
            None => {
                self.rounds.push(Round {
                    window,
                    started_at: at.to_string(),
                    samples: Vec::new(),
                    verdict: None,
                    reason: None,
                });
                self.rounds.len() - 1
            }
        };
        &mut self.rounds[index]
    }

    fn close(&mut self, window: WatchWindow, verdict: &str, reason: &str) {
        if let Some(round) = self
            .rounds
            .iter_mut()
            .rev()
            .find(|r| r.window == window && r.verdict.is_none())
        {
            round.verdict = Some(verdict.to_string());
            round.reason = Some(reason.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::sample::SampleResult;

    fn record(seq: u64, event: Event) -> Record {
        Record {
            seq,
            at: format!("2026-12-04T00:00:0{seq}.000Z"),
            event,
        }
    }

    fn intent() -> Event {
        Event::Intent {
            step: Step::Watch(WatchWindow::Overlap),
            attempt: 1,
        }
    }

    fn sample() -> Event {
        Event::WatchSample {
            window: WatchWindow::Overlap,
            check: "errors".into(),
            sample: Sample {
                elapsed_ms: 1000,
                result: SampleResult::Good,
                value: Some("0".into()),
                threshold: Some(0.1),
                note: String::new(),
            },
        }
    }

    #[test]
    fn resumed_intent_keeps_the_round_and_its_start() {
        let mut log = WatchLog::default();
        for (seq, event) in [(1, intent()), (2, sample()), (3, intent()), (4, sample())] {
            log.apply(&record(seq, event));
        }
        assert_eq!(log.rounds.len(), 1);
        let round = log.open_round(WatchWindow::Overlap).unwrap();
        assert_eq!(round.started_at, "2026-12-04T00:00:01.000Z");
        assert_eq!(round.samples_of("errors").len(), 2);
    }

    #[test]
    fn intent_after_a_verdict_starts_a_new_round() {
        let mut log = WatchLog::default();
        let failed = Event::Failed {
            step: Step::Watch(WatchWindow::Overlap),
            class: "inconclusive".into(),
            error: "no data".into(),
        };
        for (seq, event) in [(1, intent()), (2, sample()), (3, failed), (4, intent())] {
            log.apply(&record(seq, event));
        }
        assert_eq!(log.rounds.len(), 2);
        assert_eq!(log.rounds[0].verdict.as_deref(), Some("inconclusive"));
        let round = log.open_round(WatchWindow::Overlap).unwrap();
        assert!(round.samples.is_empty());
        assert_eq!(round.started_at, "2026-12-04T00:00:04.000Z");
    }
}
