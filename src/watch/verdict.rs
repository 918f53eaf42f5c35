//! Verdicts: how the samples of a check, and the checks of a window, end.
//!
//! A check passes only with at least `min_samples` good samples and no more
//! breaches than `failure_limit`. It fails as soon as breaches pass the
//! failure limit, and becomes inconclusive as soon as errors in a row pass
//! the consecutive-error limit, because a watch that cannot see must not
//! pass. A window fails when any check fails, is inconclusive when any check
//! is, and passes when every check passes.

use serde::{Deserialize, Serialize};

use super::sample::{Sample, SampleResult, display_number, display_value};
use super::spec::Sampling;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// The verdict of one check, with the reason in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckVerdict {
    pub check: String,
    pub verdict: Verdict,
    pub reason: String,
}

/// Counts of a check's samples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub good: u32,
    pub breaches: u32,
    pub inconclusive: u32,
    pub errors: u32,
    /// Errors at the end of the list, in a row.
    pub consecutive_errors: u32,
}

impl Tally {
    pub fn of(samples: &[Sample]) -> Self {
        let mut tally = Self::default();
        for sample in samples {
            match sample.result {
                SampleResult::Good => tally.good += 1,
                SampleResult::Breach => tally.breaches += 1,
                SampleResult::Inconclusive => tally.inconclusive += 1,
                SampleResult::Error => tally.errors += 1,
            }
            if sample.result == SampleResult::Error {
                tally.consecutive_errors += 1;
            } else {
                tally.consecutive_errors = 0;
            }
        }
        tally
    }
}

/// Judges a check from its samples. Before the window ends (`ended` false)
/// it returns only a verdict that more samples cannot change.
pub fn judge_check(
    name: &str,
    sampling: &Sampling,
    samples: &[Sample],
    ended: bool,
) -> Option<CheckVerdict> {
    let tally = Tally::of(samples);
    let verdict = |verdict, reason: String| {
        Some(CheckVerdict {
            check: name.to_string(),
            verdict,
            reason,
        })
    };
    if tally.breaches > sampling.failure_limit {
        let last = samples
            .iter()
            .rev()
            .find(|s| s.result == SampleResult::Breach);
        let detail = last.map(describe_breach).unwrap_or_default();
        return verdict(
            Verdict::Fail,
            format!(
                "{name}: {} breach(es), more than the failure limit of {}{detail}",
                tally.breaches, sampling.failure_limit
            ),
        );
    }
    if tally.consecutive_errors > sampling.consecutive_error_limit {
        let last = samples.last().map(|s| s.note.as_str()).unwrap_or_default();
        return verdict(
            Verdict::Inconclusive,
            format!(
                "{name}: {} errors in a row, more than the consecutive-error limit of {}; last error: {last}",
                tally.consecutive_errors, sampling.consecutive_error_limit
            ),
        );
    }
    if !ended {
        return None;
    }
    if tally.good >= sampling.min_samples {
        return verdict(
            Verdict::Pass,
            format!(
                "{name}: {} good sample(s) of {}, {} breach(es)",
                tally.good,
                samples.len(),
                tally.breaches
            ),
        );
    }
    verdict(
        Verdict::Inconclusive,
        format!(
            "{name}: only {} good sample(s), {} needed ({} without data or NaN, {} error(s), {} breach(es))",
            tally.good, sampling.min_samples, tally.inconclusive, tally.errors, tally.breaches
        ),
    )
}

fn describe_breach(sample: &Sample) -> String {
    match (&sample.value, sample.threshold) {
        (Some(value), Some(limit)) => format!(
            "; last breach: {} > {}",
            display_value(value),
            display_number(limit)
        ),
        _ if !sample.note.is_empty() => format!("; last breach: {}", sample.note),
        _ => String::new(),
    }
}

/// The end of a window: its verdict and the checks that decided it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowVerdict {
    pub verdict: Verdict,
    /// The reasons of the checks that decided it.
    pub reason: String,
    pub checks: Vec<CheckVerdict>,
}

/// Combines check verdicts: any fail fails, then any inconclusive.
pub fn judge_window(checks: Vec<CheckVerdict>) -> WindowVerdict {
    let worst = [Verdict::Fail, Verdict::Inconclusive]
        .into_iter()
        .find(|v| checks.iter().any(|c| c.verdict == *v))
        .unwrap_or(Verdict::Pass);
    let reason = checks
        .iter()
        .filter(|c| c.verdict == worst)
        .map(|c| c.reason.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    WindowVerdict {
        verdict: worst,
        reason,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::watch::spec::NoValue;

    fn sampling() -> Sampling {
        Sampling {
            interval: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            min_samples: 3,
            failure_limit: 1,
            consecutive_error_limit: 2,
            on_empty: NoValue::Inconclusive,
            on_nan: NoValue::Inconclusive,
        }
    }

    fn samples(results: &[SampleResult]) -> Vec<Sample> {
        results
            .iter()
            .map(|result| Sample {
                elapsed_ms: 0,
                result: *result,
                value: Some("0.5".into()),
                threshold: Some(0.1),
                note: String::new(),
            })
            .collect()
    }

    use SampleResult::{Breach, Error, Good, Inconclusive};

    #[test]
    fn enough_good_samples_pass() {
        let verdict = judge_check(
            "c",
            &sampling(),
            &samples(&[Good, Good, Breach, Good]),
            true,
        );
        assert_eq!(verdict.unwrap().verdict, Verdict::Pass);
    }

    #[test]
    fn breaches_past_the_limit_fail_before_the_end() {
        let verdict = judge_check("c", &sampling(), &samples(&[Breach, Good, Breach]), false);
        let verdict = verdict.unwrap();
        assert_eq!(verdict.verdict, Verdict::Fail);
        assert!(verdict.reason.contains("0.5 > 0.1"), "{}", verdict.reason);
    }

    #[test]
    fn errors_never_pass() {
        let verdict = judge_check("c", &sampling(), &samples(&[Error, Error, Error]), false);
        assert_eq!(verdict.unwrap().verdict, Verdict::Inconclusive);
        let verdict = judge_check("c", &sampling(), &samples(&[Error, Good, Error]), true);
        assert_eq!(verdict.unwrap().verdict, Verdict::Inconclusive);
    }

    #[test]
    fn good_sample_resets_the_error_run() {
        let tally = Tally::of(&samples(&[Error, Error, Good, Error]));
        assert_eq!(tally.consecutive_errors, 1);
        assert_eq!(tally.errors, 3);
    }

    #[test]
    fn too_few_good_samples_are_inconclusive() {
        let verdict = judge_check(
            "c",
            &sampling(),
            &samples(&[Good, Inconclusive, Inconclusive, Good]),
            true,
        );
        let verdict = verdict.unwrap();
        assert_eq!(verdict.verdict, Verdict::Inconclusive);
        assert!(verdict.reason.contains("only 2 good"), "{}", verdict.reason);
    }

    #[test]
    fn open_window_has_no_verdict_yet() {
        assert_eq!(
            judge_check("c", &sampling(), &samples(&[Good]), false),
            None
        );
    }

    #[test]
    fn window_takes_the_worst_check() {
        let check = |verdict| CheckVerdict {
            check: "c".into(),
            verdict,
            reason: format!("{verdict:?}"),
        };
        let window = judge_window(vec![check(Verdict::Pass), check(Verdict::Inconclusive)]);
        assert_eq!(window.verdict, Verdict::Inconclusive);
        let window = judge_window(vec![
            check(Verdict::Inconclusive),
            check(Verdict::Fail),
            check(Verdict::Pass),
        ]);
        assert_eq!(window.verdict, Verdict::Fail);
        assert_eq!(window.reason, "Fail");
        assert_eq!(
            judge_window(vec![check(Verdict::Pass)]).verdict,
            Verdict::Pass
        );
    }
}
