//! The watch steps of a run: the baseline before the push, and the two
//! windows after it.
//!
//! Every sample is journaled as it is taken, so `resume` continues a window
//! with the samples it already has. Time spent while no process ran is not
//! watched time: the resumed window goes on from the offset of its last
//! journaled sample for the time that remains. A window's verdict is journaled before it is acted on, and
//! a resumed run that finds a fail verdict (or an inconclusive one under
//! `on_inconclusive: rollback`) rolls back without watching again.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

use super::EngineError;
use super::live::Live;
use super::record::{Event, Step};
use super::state::{RunState, StepStatus};
use crate::output::watch::WatchProgress;
use crate::playbook::decode::format_duration;
use crate::watch::sample::{Sample, format_value};
use crate::watch::spec::{OnInconclusive, Source, WatchSpec};
use crate::watch::verdict::Verdict;
use crate::watch::window::{self, Observer, WindowStart};
use crate::watch::{WatchWindow, Watcher};

/// The `done` or `failed` class of a window whose checks did not all pass.
const BREACH: &str = "fail";
const INCONCLUSIVE: &str = "inconclusive";

impl Live<'_> {
    /// Samples and journals the baseline of every check with a relative
    /// threshold. Returns false when the run stopped: without a baseline the
    /// run is rolled back before anything is pushed.
    pub(super) async fn watch_baseline(&self) -> Result<bool, EngineError> {
        let Some(watcher) = &self.watch else {
            return Ok(true);
        };
        let state = self.state().await;
        let pushed = self
            .targets
            .iter()
            .any(|t| state.was_attempted(&Step::Push(t.name().to_string())));
        if pushed {
            return Ok(true);
        }
        for check in &watcher.spec.checks {
            let Some(threshold) = check.threshold.filter(|t| t.needs_baseline()) else {
                continue;
            };
            if state.watch.baselines.contains_key(&check.name) {
                continue;
            }
            let spinner = self
                .engine
                .out
                .spinner(format!("Sampling the baseline of {}", check.name));
            let baseline = watcher.baseline(check, &self.engine.options.retry).await;
            drop(spinner);
            match baseline {
                Ok(value) => {
                    let limit = threshold.limit(Some(value)).unwrap_or(value);
                    self.engine.out.status(
                        "Baseline",
                        format!(
                            "{}: {} before the push; threshold {limit} ({})",
                            check.name,
                            format_value(value),
                            threshold.describe()
                        ),
                    );
                    self.record(Event::WatchBaseline {
                        check: check.name.clone(),
                        value: format_value(value),
                    })
                    .await?;
                }
                Err(message) => {
                    let reason = format!(
                        "cannot take the baseline of watch check {} before the push: {message}; fix the query, or use an absolute `max:`",
                        check.name
                    );
                    self.abort(&reason).await?;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Runs a watch window to its verdict. Returns false when the run
    /// stopped: rolled back on a breach, or rolled back or held when the
    /// window is inconclusive.
    pub(super) async fn watch_window(&self, window: WatchWindow) -> Result<bool, EngineError> {
        let Some(watcher) = &self.watch else {
            return Ok(true);
        };
        let step = Step::Watch(window);
        let state = self.state().await;
        if state.is_done(&step) {
            return Ok(true);
        }
        let policy = watcher.spec.on_inconclusive;
        if let Some(StepStatus::Failed { class, error, .. }) = state.status(&step)
            && (class != INCONCLUSIVE || policy == OnInconclusive::Rollback)
        {
            let reason = window_failure(window, class, error);
            self.abort(&reason).await?;
            return Ok(false);
        }

        let resumed = state.watch.open_round(window).is_some();
        let attempt = state.status(&step).map_or(0, |s| s.attempt()) + 1;
        self.record(Event::Intent {
            step: step.clone(),
            attempt,
        })
        .await?;
        let verdict = self.sample_window(watcher, window, resumed).await?;

        // An emergency rotation watches and reports, but never undoes: the
        // old key is leaked and must not come back.
        if self.is_emergency().await {
            if verdict.verdict != Verdict::Pass {
                self.engine.out.warn(format!(
                    "watch {window} did not pass ({}); reported only, because this is an emergency rotation",
                    verdict.reason
                ));
            }
            self.record(Event::Done {
                step,
                summary: format!("reported only (emergency): {}", verdict.reason),
                detail: serde_json::to_value(&verdict).unwrap_or_default(),
            })
            .await?;
            return Ok(true);
        }

        match verdict.verdict {
            Verdict::Pass => {
                self.engine
                    .out
                    .status("Passed", format!("watch {window} ({})", window.describe()));
                self.record(Event::Done {
                    step,
                    summary: verdict.reason.clone(),
                    detail: serde_json::to_value(&verdict).unwrap_or_default(),
                })
                .await?;
                Ok(true)
            }
            Verdict::Fail | Verdict::Inconclusive => {
                let class = if verdict.verdict == Verdict::Fail {
                    BREACH
                } else {
                    INCONCLUSIVE
                };
                self.record(Event::Failed {
                    step,
                    class: class.to_string(),
                    error: verdict.reason.clone(),
                })
                .await?;
                let reason = window_failure(window, class, &verdict.reason);
                if class == INCONCLUSIVE && policy == OnInconclusive::Hold {
                    self.engine.out.warn(format!(
                        "holding the run: {reason}; `keywheel resume {0}` watches again, `keywheel rollback {0}` undoes the rotation",
                        self.journal.run_id()
                    ));
                    self.record(Event::Held { reason }).await?;
                } else {
                    self.abort(&reason).await?;
                }
                Ok(false)
            }
        }
    }

    /// Samples the open round of `window` until its verdict, journaling
    /// each sample. `resumed` is true when an earlier process started the
    /// round.
    async fn sample_window(
        &self,
        watcher: &Watcher,
        window: WatchWindow,
        resumed: bool,
    ) -> Result<crate::watch::verdict::WindowVerdict, EngineError> {
        let state = self.state().await;
        let round = state.watch.open_round(window);
        // Time keywheel was down is not watched time: a resumed window goes
        // on from its last journaled sample, for the time that remains.
        let elapsed = round.map_or(Duration::ZERO, watched_time);
        let prior: BTreeMap<String, Vec<Sample>> = watcher
            .spec
            .checks
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    round.map(|r| r.samples_of(&c.name)).unwrap_or_default(),
                )
            })
            .collect();
        let limits = limits(&watcher.spec, &state);
        let duration = watcher.spec.duration();
        let journaled = prior.values().map(Vec::len).sum::<usize>();
        let mut message = format!(
            "{} check(s) for {} {}",
            watcher.spec.checks.len(),
            format_duration(duration),
            window.describe()
        );
        if resumed {
            message.push_str(&format!(
                ", resumed {} in with {journaled} journaled sample(s)",
                format_duration(Duration::from_secs(elapsed.as_secs()))
            ));
        }
        self.engine.out.status("Watching", message);

        let progress = self.engine.out.watch_progress(
            &format!("watch:{window}"),
            duration,
            elapsed,
            prior.clone(),
        );
        let observer = Journaling {
            live: self,
            window,
            progress: &progress,
        };
        let start = WindowStart {
            checks: &watcher.spec.checks,
            limits: &limits,
            prior,
            elapsed,
        };
        let verdict = window::run(start, watcher, &observer).await;
        progress.finish();
        verdict
    }
}

/// Journals each sample, then shows it.
struct Journaling<'l, 'e> {
    live: &'l Live<'e>,
    window: WatchWindow,
    progress: &'l WatchProgress<'l>,
}

#[async_trait]
impl Observer for Journaling<'_, '_> {
    type Error = EngineError;

    async fn sample(
        &self,
        check: &crate::watch::spec::CheckSpec,
        sample: &Sample,
    ) -> Result<(), EngineError> {
        self.live
            .record(Event::WatchSample {
                window: self.window,
                check: check.name.clone(),
                sample: sample.clone(),
            })
            .await?;
        self.progress.sample(&check.name, sample);
        Ok(())
    }

    fn tick(&self, elapsed: Duration) {
        self.progress.tick(elapsed);
    }
}

/// Returns each check's bound: its `max`, or its relative threshold
/// applied to the journaled baseline.
fn limits(spec: &WatchSpec, state: &RunState) -> BTreeMap<String, f64> {
    spec.checks
        .iter()
        .filter_map(|check| {
            let baseline = state
                .watch
                .baselines
                .get(&check.name)
                .and_then(|v| crate::watch::sample::parse_value(v).ok());
            let limit = check.threshold?.limit(baseline)?;
            Some((check.name.clone(), limit))
        })
        .collect()
}

/// Returns how much of a round's window was watched: the offset of its
/// last journaled sample.
fn watched_time(round: &crate::engine::watch_log::Round) -> Duration {
    let millis = round
        .samples
        .iter()
        .map(|s| s.sample.elapsed_ms)
        .max()
        .unwrap_or(0);
    Duration::from_millis(millis)
}

fn window_failure(window: WatchWindow, class: &str, reason: &str) -> String {
    let what = if class == INCONCLUSIVE {
        "was inconclusive"
    } else {
        "failed"
    };
    format!("watch {window} {what}: {reason}")
}

/// Describes in one line for `plan` what a window samples and for how
/// long.
pub(super) fn describe(spec: &WatchSpec, window: WatchWindow) -> String {
    let checks: Vec<String> = spec
        .checks
        .iter()
        .map(|check| {
            let kind = match &check.source {
                Source::Query { .. } => "query",
                Source::Http { .. } => "http",
            };
            let threshold = check
                .threshold
                .map_or("status 2xx".to_string(), |t| t.describe());
            format!(
                "{} ({kind}, {threshold}, every {})",
                check.name,
                format_duration(check.sampling.interval)
            )
        })
        .collect();
    let baseline = if window == WatchWindow::Overlap
        && spec
            .checks
            .iter()
            .any(|c| c.threshold.is_some_and(|t| t.needs_baseline()))
    {
        "; baselines are sampled before the push"
    } else {
        ""
    };
    format!(
        "sample {} for {} {}; a breach rolls back{baseline}",
        checks.join(", "),
        format_duration(spec.duration()),
        window.describe()
    )
}
