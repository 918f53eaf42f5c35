//! Progress of a watch window.
//!
//! On a terminal: a bar over the window's duration with the time spent and
//! left, and for each check its latest value against the threshold and a
//! sparkline of its samples. Without a terminal (cron, CI): one status line
//! per sample on stderr, so a log shows every value.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use super::Output;
use crate::watch::sample::{Sample, SampleResult, display_number, display_value};

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Samples shown in a sparkline; older ones scroll off.
const SPARK_WIDTH: usize = 30;

/// The display of one running window.
pub struct WatchProgress<'o> {
    out: &'o Output,
    bar: Option<ProgressBar>,
    /// Samples so far, by check, for the sparklines.
    samples: Mutex<BTreeMap<String, Vec<Sample>>>,
}

impl Output {
    /// Starts the display of a window of `duration` that began `elapsed`
    /// ago. `prior` contains samples journaled before a crash.
    pub fn watch_progress(
        &self,
        title: &str,
        duration: Duration,
        elapsed: Duration,
        prior: BTreeMap<String, Vec<Sample>>,
    ) -> WatchProgress<'_> {
        let bar = (!self.options.quiet && self.stderr_tty).then(|| {
            let bar = ProgressBar::new(millis(duration));
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:24}] {spent} spent, {left} left  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key(
                "spent",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{}", seconds(state.pos()));
                },
            )
            .with_key(
                "left",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    // Rounded up, so that spent and left add up to the window.
                    let left = state.len().unwrap_or(0).saturating_sub(state.pos());
                    let _ = write!(w, "{}", seconds(left.saturating_add(999)));
                },
            )
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(title.to_string());
            bar.set_position(millis(elapsed).min(millis(duration)));
            bar
        });
        let progress = WatchProgress {
            out: self,
            bar,
            samples: Mutex::new(prior),
        };
        progress.refresh_message();
        progress
    }
}

impl WatchProgress<'_> {
    pub fn tick(&self, elapsed: Duration) {
        if let Some(bar) = &self.bar {
            let length = bar.length().unwrap_or(0);
            bar.set_position(millis(elapsed).min(length));
        }
    }

    /// Shows a new sample of `check`.
    pub fn sample(&self, check: &str, sample: &Sample) {
        if let Ok(mut samples) = self.samples.lock() {
            samples
                .entry(check.to_string())
                .or_default()
                .push(sample.clone());
        }
        match &self.bar {
            Some(_) => self.refresh_message(),
            None => self.out.status(
                "Sampled",
                format!(
                    "{check} at {}: {}",
                    seconds(sample.elapsed_ms),
                    describe(sample)
                ),
            ),
        }
    }

    /// Removes the bar and prints one line per check with its samples.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let Ok(samples) = self.samples.lock() else {
            return;
        };
        for (check, samples) in samples.iter() {
            self.out.status("Watched", summarize(check, samples));
        }
    }

    fn refresh_message(&self) {
        let (Some(bar), Ok(samples)) = (&self.bar, self.samples.lock()) else {
            return;
        };
        let parts: Vec<String> = samples
            .iter()
            .map(|(check, samples)| match samples.last() {
                Some(last) => format!("{check} {} {}", describe(last), sparkline(samples)),
                None => format!("{check} waiting"),
            })
            .collect();
        bar.set_message(parts.join("  |  "));
    }
}

/// Describes one sample in words: `0.012 <= 0.05 good`, `no data (inconclusive)`.
pub fn describe(sample: &Sample) -> String {
    let result = sample.result.as_str();
    match (&sample.value, sample.threshold, sample.result) {
        (_, _, SampleResult::Error) => format!("error: {}", sample.note),
        (Some(value), Some(limit), SampleResult::Good | SampleResult::Breach)
            if sample.note.is_empty() || sample.note.ends_with("series") =>
        {
            let sign = if sample.result == SampleResult::Good {
                "<="
            } else {
                ">"
            };
            let series = if sample.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", sample.note)
            };
            format!(
                "{} {sign} {} {result}{series}",
                display_value(value),
                display_number(limit)
            )
        }
        _ => format!("{} ({result})", sample.note),
    }
}

/// Summarizes a check's samples in one line: the verdict counts, a sparkline and the
/// latest values.
pub fn summarize(check: &str, samples: &[Sample]) -> String {
    let count = |wanted: SampleResult| samples.iter().filter(|s| s.result == wanted).count();
    let threshold = samples
        .iter()
        .rev()
        .find_map(|s| s.threshold)
        .map(|t| format!(", threshold {}", display_number(t)))
        .unwrap_or_default();
    let recent: Vec<String> = samples
        .iter()
        .rev()
        .take(SPARK_WIDTH)
        .rev()
        .map(|s| match (&s.value, s.result) {
            (_, SampleResult::Error) => "error".to_string(),
            (Some(value), _) => display_value(value),
            (None, _) if s.note.starts_with("HTTP") => s.note.clone(),
            (None, _) => "no-data".to_string(),
        })
        .collect();
    format!(
        "{check}: {} sample(s): {} good, {} breach, {} inconclusive, {} error{threshold}  {}  [{}]",
        samples.len(),
        count(SampleResult::Good),
        count(SampleResult::Breach),
        count(SampleResult::Inconclusive),
        count(SampleResult::Error),
        sparkline(samples),
        recent.join(" ")
    )
}

/// Draws a sparkline of the latest samples, scaled from 0 (or the lowest value)
/// to the highest of the values and the threshold, so a bar at the top is
/// at or over the threshold. `·` marks a sample without a value, `×` an
/// error, and `!` a breach without a value.
pub fn sparkline(samples: &[Sample]) -> String {
    let recent = &samples[samples.len().saturating_sub(SPARK_WIDTH)..];
    let values: Vec<f64> = recent
        .iter()
        .filter_map(Sample::number)
        .filter(|v| v.is_finite())
        .collect();
    let threshold = recent.iter().rev().find_map(|s| s.threshold);
    let low = values.iter().copied().fold(0.0_f64, f64::min);
    let high = values
        .iter()
        .copied()
        .chain(threshold.filter(|t| t.is_finite()))
        .fold(low, f64::max);
    let mut line = String::new();
    for sample in recent {
        let spark = match (sample.number(), sample.result) {
            (_, SampleResult::Error) => '×',
            (Some(value), _) if value == f64::INFINITY => SPARKS[SPARKS.len() - 1],
            (Some(value), _) if value.is_finite() => {
                let span = high - low;
                let level = if span > 0.0 {
                    ((value - low) / span * (SPARKS.len() - 1) as f64).round() as usize
                } else {
                    0
                };
                SPARKS[level.min(SPARKS.len() - 1)]
            }
            (_, SampleResult::Breach) => '!',
            _ => '·',
        };
        line.push(spark);
    }
    line
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds as whole seconds, such as `12s`.
fn seconds(millis: u64) -> String {
    let mut text = String::new();
    let _ = write!(text, "{}s", millis / 1000);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: Option<&str>, result: SampleResult) -> Sample {
        Sample {
            elapsed_ms: 1000,
            result,
            value: value.map(str::to_string),
            threshold: Some(1.0),
            note: if value.is_none() {
                "no data".into()
            } else {
                String::new()
            },
        }
    }

    #[test]
    fn sparkline_scales_to_the_threshold() {
        let samples = [
            sample(Some("0"), SampleResult::Good),
            sample(Some("0.5"), SampleResult::Good),
            sample(Some("1"), SampleResult::Good),
            sample(None, SampleResult::Inconclusive),
            sample(None, SampleResult::Error),
            sample(Some("+Inf"), SampleResult::Breach),
        ];
        assert_eq!(sparkline(&samples), "▁▅█·×█");
    }

    #[test]
    fn describe_shows_value_against_threshold() {
        assert_eq!(
            describe(&sample(Some("0.5"), SampleResult::Good)),
            "0.5 <= 1 good"
        );
        assert_eq!(
            describe(&sample(None, SampleResult::Inconclusive)),
            "no data (inconclusive)"
        );
    }
}
