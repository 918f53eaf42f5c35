//! The sampling loop of one watch window.
//!
//! Each check takes one sample at the end of each of its intervals, at
//! `interval`, `2 * interval`, ... up to its `duration`, counted from the
//! window's start. A window resumed after a crash starts with the samples
//! already journaled and the time already gone: it takes only the samples
//! still due. A slot missed because a probe was slow is skipped, not made
//! up. The window ends early as soon as a check fails or its errors pass the
//! consecutive-error limit. Time is read from tokio's clock, so tests can
//! pause it.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::sample::{ProbeError, Reading, Sample, judge};
use super::spec::CheckSpec;
use super::verdict::{CheckVerdict, Verdict, WindowVerdict, judge_check, judge_window};

/// How often the observer hears that time passed, for progress bars.
const TICK: Duration = Duration::from_secs(1);

/// Reads the current value of a check.
#[async_trait]
pub trait Probe: Send + Sync {
    async fn read(&self, check: &CheckSpec) -> Result<Reading, ProbeError>;
}

/// Hears about each sample before the window goes on. An error from
/// `sample` (a journal that cannot be written) stops the window.
#[async_trait]
pub trait Observer: Send + Sync {
    type Error: Send;

    async fn sample(&self, check: &CheckSpec, sample: &Sample) -> Result<(), Self::Error>;

    /// Time since the window started; called at least every second.
    fn tick(&self, _elapsed: Duration) {}
}

/// What a window starts from.
pub struct WindowStart<'a> {
    pub checks: &'a [CheckSpec],
    /// Each check's bound, resolved against its baseline; absent for a
    /// status-only HTTP check or a missing baseline.
    pub limits: &'a BTreeMap<String, f64>,
    /// Samples journaled before a crash, by check name.
    pub prior: BTreeMap<String, Vec<Sample>>,
    /// Time between the window's journaled start and now.
    pub elapsed: Duration,
}

/// Runs a window to its verdict.
pub async fn run<O: Observer>(
    start: WindowStart<'_>,
    probe: &dyn Probe,
    observer: &O,
) -> Result<WindowVerdict, O::Error> {
    let origin = Instant::now();
    let elapsed = || start.elapsed + origin.elapsed();
    let mut samples = start.prior;
    let mut next_slot: Vec<u32> = start
        .checks
        .iter()
        .map(|c| slot_after(c, start.elapsed))
        .collect();

    loop {
        if let Some(verdict) = early_verdict(start.checks, &samples) {
            return Ok(verdict);
        }
        let now = elapsed();
        observer.tick(now);
        let due: Vec<usize> = (0..start.checks.len())
            .filter(|&i| slot_due(&start.checks[i], next_slot[i]).is_some_and(|at| at <= now))
            .collect();
        if due.is_empty() {
            let next = (0..start.checks.len())
                .filter_map(|i| slot_due(&start.checks[i], next_slot[i]))
                .min();
            let Some(next) = next else {
                break;
            };
            let wait = next.saturating_sub(now).min(TICK);
            tokio::time::sleep(wait).await;
            continue;
        }
        for index in due {
            let check = &start.checks[index];
            let reading = probe.read(check).await;
            let sampled_at = elapsed();
            let limit = start.limits.get(&check.name).copied();
            let sample = judge(check, limit, reading, millis(sampled_at));
            observer.sample(check, &sample).await?;
            samples.entry(check.name.clone()).or_default().push(sample);
            next_slot[index] = slot_after(check, sampled_at);
        }
    }
    observer.tick(elapsed());
    Ok(final_verdict(start.checks, &samples))
}

/// Returns the first slot after `elapsed`. Slot k is due at k intervals.
fn slot_after(check: &CheckSpec, elapsed: Duration) -> u32 {
    let interval = check.sampling.interval.as_millis().max(1);
    u32::try_from(elapsed.as_millis() / interval + 1).unwrap_or(u32::MAX)
}

/// When slot `slot` is due, or `None` past the check's duration.
fn slot_due(check: &CheckSpec, slot: u32) -> Option<Duration> {
    let at = check.sampling.interval.checked_mul(slot)?;
    (at <= check.sampling.duration).then_some(at)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn samples_of<'s>(samples: &'s BTreeMap<String, Vec<Sample>>, check: &CheckSpec) -> &'s [Sample] {
    samples.get(&check.name).map_or(&[], Vec::as_slice)
}

/// Returns a verdict reached before the end, when some check failed or its
/// errors passed the consecutive-error limit.
fn early_verdict(
    checks: &[CheckSpec],
    samples: &BTreeMap<String, Vec<Sample>>,
) -> Option<WindowVerdict> {
    let decided: Vec<CheckVerdict> = checks
        .iter()
        .filter_map(|c| judge_check(&c.name, &c.sampling, samples_of(samples, c), false))
        .filter(|v| v.verdict != Verdict::Pass)
        .collect();
    (!decided.is_empty()).then(|| judge_window(decided))
}

/// Judges a window whose time is over, from the samples it has.
pub fn final_verdict(
    checks: &[CheckSpec],
    samples: &BTreeMap<String, Vec<Sample>>,
) -> WindowVerdict {
    let verdicts = checks
        .iter()
        .filter_map(|c| judge_check(&c.name, &c.sampling, samples_of(samples, c), true))
        .collect();
    judge_window(verdicts)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use crate::watch::sample::{SampleResult, SeriesValue};
    use crate::watch::spec::{NoValue, Sampling, SeriesRule, Source, Threshold};

    fn check(name: &str, interval: u64, duration: u64, min_samples: u32) -> CheckSpec {
        CheckSpec {
            name: name.into(),
            path: format!("watch.queries.{name}"),
            source: Source::Query {
                promql: "up".into(),
                series: SeriesRule::All,
            },
            threshold: Some(Threshold::Max(0.1)),
            sampling: Sampling {
                interval: Duration::from_secs(interval),
                duration: Duration::from_secs(duration),
                min_samples,
                failure_limit: 0,
                consecutive_error_limit: 2,
                on_empty: NoValue::Inconclusive,
                on_nan: NoValue::Inconclusive,
            },
        }
    }

    /// Returns scripted readings, one entry per read, then 0 once the
    /// script is used up.
    struct Scripted {
        answers: Mutex<VecDeque<Result<Reading, ProbeError>>>,
    }

    impl Scripted {
        fn new(values: &[Option<f64>]) -> Self {
            let answers = values
                .iter()
                .map(|v| match v {
                    Some(value) => Ok(Reading::Series(vec![SeriesValue {
                        labels: "{}".into(),
                        value: *value,
                    }])),
                    None => Err(ProbeError::retryable("connection refused")),
                })
                .collect();
            Self {
                answers: Mutex::new(answers),
            }
        }
    }

    #[async_trait]
    impl Probe for Scripted {
        async fn read(&self, _check: &CheckSpec) -> Result<Reading, ProbeError> {
            let next = self.answers.lock().unwrap().pop_front();
            next.unwrap_or(Ok(Reading::Series(vec![SeriesValue {
                labels: "{}".into(),
                value: 0.0,
            }])))
        }
    }

    #[derive(Default)]
    struct Recorder {
        samples: Mutex<Vec<(String, Sample)>>,
    }

    impl Recorder {
        /// Returns when each sample was taken, in milliseconds.
        fn sampled_at(&self) -> Vec<u64> {
            let samples = self.samples.lock().unwrap();
            samples.iter().map(|(_, s)| s.elapsed_ms).collect()
        }
    }

    #[async_trait]
    impl Observer for Recorder {
        type Error = ();

        async fn sample(&self, check: &CheckSpec, sample: &Sample) -> Result<(), ()> {
            self.samples
                .lock()
                .unwrap()
                .push((check.name.clone(), sample.clone()));
            Ok(())
        }
    }

    fn limits(checks: &[CheckSpec]) -> BTreeMap<String, f64> {
        checks.iter().map(|c| (c.name.clone(), 0.1)).collect()
    }

    fn fresh<'a>(checks: &'a [CheckSpec], limits: &'a BTreeMap<String, f64>) -> WindowStart<'a> {
        WindowStart {
            checks,
            limits,
            prior: BTreeMap::new(),
            elapsed: Duration::ZERO,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn healthy_window_passes_after_its_duration() {
        let checks = [check("errors", 2, 10, 5)];
        let limits = limits(&checks);
        let recorder = Recorder::default();
        let started = Instant::now();
        let verdict = run(fresh(&checks, &limits), &Scripted::new(&[]), &recorder)
            .await
            .unwrap();
        assert_eq!(verdict.verdict, Verdict::Pass);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(recorder.sampled_at(), vec![2000, 4000, 6000, 8000, 10000]);
    }

    #[tokio::test(start_paused = true)]
    async fn breach_ends_the_window_at_once() {
        let checks = [check("errors", 1, 60, 5)];
        let limits = limits(&checks);
        let recorder = Recorder::default();
        let started = Instant::now();
        let probe = Scripted::new(&[Some(0.0), Some(0.5)]);
        let verdict = run(fresh(&checks, &limits), &probe, &recorder)
            .await
            .unwrap();
        assert_eq!(verdict.verdict, Verdict::Fail);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(verdict.reason.contains("0.5 > 0.1"), "{}", verdict.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_probe_is_inconclusive_never_a_pass() {
        let checks = [check("errors", 1, 60, 1)];
        let limits = limits(&checks);
        let recorder = Recorder::default();
        let probe = Scripted::new(&[None, None, None, None]);
        let verdict = run(fresh(&checks, &limits), &probe, &recorder)
            .await
            .unwrap();
        assert_eq!(verdict.verdict, Verdict::Inconclusive);
        assert!(
            verdict.reason.contains("3 errors in a row"),
            "{}",
            verdict.reason
        );
        let results: Vec<SampleResult> = recorder
            .samples
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.result)
            .collect();
        assert_eq!(results, vec![SampleResult::Error; 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn resumed_window_keeps_prior_samples_and_remaining_time() {
        let checks = [check("errors", 2, 10, 5)];
        let limits = limits(&checks);
        let prior_sample = |ms| Sample {
            elapsed_ms: ms,
            result: SampleResult::Good,
            value: Some("0".into()),
            threshold: Some(0.1),
            note: String::new(),
        };
        let start = WindowStart {
            checks: &checks,
            limits: &limits,
            prior: BTreeMap::from([(
                "errors".to_string(),
                vec![prior_sample(2000), prior_sample(4000)],
            )]),
            elapsed: Duration::from_millis(5500),
        };
        let recorder = Recorder::default();
        let started = Instant::now();
        let verdict = run(start, &Scripted::new(&[]), &recorder).await.unwrap();
        assert_eq!(verdict.verdict, Verdict::Pass);
        assert_eq!(started.elapsed(), Duration::from_millis(4500));
        assert_eq!(recorder.sampled_at(), vec![6000, 8000, 10000]);
    }

    #[tokio::test(start_paused = true)]
    async fn expired_window_uses_journaled_samples() {
        let checks = [check("errors", 2, 10, 5)];
        let limits = limits(&checks);
        let start = WindowStart {
            checks: &checks,
            limits: &limits,
            prior: BTreeMap::new(),
            elapsed: Duration::from_secs(30),
        };
        let recorder = Recorder::default();
        let verdict = run(start, &Scripted::new(&[]), &recorder).await.unwrap();
        assert_eq!(verdict.verdict, Verdict::Inconclusive);
        assert!(recorder.samples.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn checks_keep_their_own_intervals() {
        let checks = [check("fast", 1, 4, 4), check("slow", 2, 4, 2)];
        let limits = limits(&checks);
        let recorder = Recorder::default();
        let verdict = run(fresh(&checks, &limits), &Scripted::new(&[]), &recorder)
            .await
            .unwrap();
        assert_eq!(verdict.verdict, Verdict::Pass);
        let taken: Vec<(String, u64)> = recorder
            .samples
            .lock()
            .unwrap()
            .iter()
            .map(|(c, s)| (c.clone(), s.elapsed_ms))
            .collect();
        let names = |name: &str| {
            taken
                .iter()
                .filter(|(c, _)| c == name)
                .map(|(_, ms)| *ms)
                .collect::<Vec<_>>()
        };
        assert_eq!(names("fast"), vec![1000, 2000, 3000, 4000]);
        assert_eq!(names("slow"), vec![2000, 4000]);
    }
}
