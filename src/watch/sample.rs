//! One sample: what a probe read, and how it compares with the threshold.
//!
//! Prometheus writes sample values as strings, with the special values
//! `NaN`, `+Inf` and `-Inf` (see
//! <https://prometheus.io/docs/prometheus/latest/querying/api/#expression-query-result-formats>).
//! They are matched by their exact text here; Rust's own float parser is
//! only given plain decimal numbers, because it would also accept `inf`,
//! `infinity` or `nan` in any case. NaN is never compared with a threshold:
//! the check's `on_nan` rule decides what it counts as. `+Inf` is above
//! every threshold, so an infinite error ratio is a breach; `-Inf` is below
//! every threshold.

use serde::{Deserialize, Serialize};

use super::spec::{CheckSpec, NoValue, SeriesRule, Source};

/// The result of one probe read.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// The series of a query response, or the one value of an HTTP check.
    /// It is empty when nothing matched.
    Series(Vec<SeriesValue>),
    /// The status of an HTTP check that reads no value.
    Status(u16),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SeriesValue {
    /// The series' labels, for messages, such as `{job="api"}`.
    pub labels: String,
    pub value: f64,
}

/// A failed probe read. It counts toward the consecutive-error limit and
/// never as a pass.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProbeError {
    pub message: String,
    /// Whether asking again may help (a connection failure, a 5xx).
    pub retryable: bool,
}

impl ProbeError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// Parses a sample value as Prometheus writes it.
pub fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => return Ok(f64::NAN),
        "+Inf" | "Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        _ => {}
    }
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
    match text.parse::<f64>() {
        Ok(value) if plain && value.is_finite() => Ok(value),
        _ => Err(format!("invalid sample value {text:?}")),
    }
}

/// Formats a value the way Prometheus writes it, so that special values
/// keep their names in journals and JSON.
pub fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        value.to_string()
    }
}

/// Formats a value for people with four decimal places at most, so that
/// `0.3112807117786303` reads `0.3113`; special values keep their names.
/// Journals and JSON keep the full value.
pub fn display_value(text: &str) -> String {
    match parse_value(text) {
        Ok(value) if value.is_finite() => display_number(value),
        _ => text.to_string(),
    }
}

/// Formats a number for people, as [`display_value`] does.
pub fn display_number(value: f64) -> String {
    if !value.is_finite() {
        return format_value(value);
    }
    if value != 0.0 && value.abs() < 0.0001 {
        return format!("{value:.2e}");
    }
    let text = format!("{value:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_string()
    }
}

/// The class of one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleResult {
    /// At or under the threshold.
    Good,
    /// Over the threshold.
    Breach,
    /// No data or NaN, counted neither way.
    Inconclusive,
    /// The probe failed; counts toward the consecutive-error limit.
    Error,
}

impl SampleResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Good => "good",
            Self::Breach => "breach",
            Self::Inconclusive => "inconclusive",
            Self::Error => "error",
        }
    }
}

/// One journaled sample. Public values only: numbers, labels and error
/// messages, never a secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Time since the window started.
    pub elapsed_ms: u64,
    pub result: SampleResult,
    /// The value that decided the result, written as Prometheus writes
    /// values ("0.01", "NaN", "+Inf"); none for no data or an error.
    pub value: Option<String>,
    /// The bound the value was compared with.
    pub threshold: Option<f64>,
    /// "no data", "NaN", the number of series, an HTTP status or the error.
    pub note: String,
}

impl Sample {
    /// Returns the value as a number, when there is one.
    pub fn number(&self) -> Option<f64> {
        self.value.as_deref().and_then(|v| parse_value(v).ok())
    }
}

/// Turns what a probe read into a sample. `limit` is the check's bound,
/// already resolved against the baseline.
pub fn judge(
    check: &CheckSpec,
    limit: Option<f64>,
    reading: Result<Reading, ProbeError>,
    elapsed_ms: u64,
) -> Sample {
    let sample = |result, value: Option<f64>, note: String| Sample {
        elapsed_ms,
        result,
        value: value.map(format_value),
        threshold: limit,
        note,
    };
    let reading = match reading {
        Ok(reading) => reading,
        Err(err) => return sample(SampleResult::Error, None, err.message),
    };
    let series = match reading {
        Reading::Status(status) if (200..300).contains(&status) => {
            return sample(SampleResult::Good, None, format!("HTTP {status}"));
        }
        Reading::Status(status) => {
            return sample(SampleResult::Breach, None, format!("HTTP {status}"));
        }
        Reading::Series(series) => series,
    };
    if series.is_empty() {
        return sample(
            count_as(check.sampling.on_empty),
            None,
            "no data".to_string(),
        );
    }
    let Some(limit) = limit else {
        return sample(
            SampleResult::Error,
            None,
            "no baseline to compare with".to_string(),
        );
    };
    let rule = match &check.source {
        Source::Query { series, .. } => *series,
        Source::Http { .. } => SeriesRule::All,
    };
    let results: Vec<(SampleResult, f64)> = series
        .iter()
        .map(|s| {
            let result = if s.value.is_nan() {
                count_as(check.sampling.on_nan)
            } else if s.value > limit {
                SampleResult::Breach
            } else {
                SampleResult::Good
            };
            (result, s.value)
        })
        .collect();
    let (result, value) = combine(rule, &results);
    let note = match (series.len(), value.is_nan()) {
        (1, true) => "NaN".to_string(),
        (1, false) => String::new(),
        (count, _) => format!("{count} series"),
    };
    sample(result, Some(value), note)
}

fn count_as(rule: NoValue) -> SampleResult {
    match rule {
        NoValue::Inconclusive => SampleResult::Inconclusive,
        NoValue::Pass => SampleResult::Good,
        NoValue::Fail => SampleResult::Breach,
    }
}

/// Combines per-series results. With `all`, one breach is a breach; with
/// `any`, one good series is good. Returns the result and the value shown
/// for it: the highest comparable value for `all`, the lowest for `any`.
fn combine(rule: SeriesRule, results: &[(SampleResult, f64)]) -> (SampleResult, f64) {
    let has = |wanted: SampleResult| results.iter().any(|(r, _)| *r == wanted);
    let result = match rule {
        SeriesRule::All if has(SampleResult::Breach) => SampleResult::Breach,
        SeriesRule::All if has(SampleResult::Inconclusive) => SampleResult::Inconclusive,
        SeriesRule::All => SampleResult::Good,
        SeriesRule::Any if has(SampleResult::Good) => SampleResult::Good,
        SeriesRule::Any if has(SampleResult::Inconclusive) => SampleResult::Inconclusive,
        SeriesRule::Any => SampleResult::Breach,
    };
    let numbers = results.iter().map(|(_, v)| *v).filter(|v| !v.is_nan());
    let value = match rule {
        SeriesRule::All => numbers.fold(f64::NAN, f64::max),
        SeriesRule::Any => numbers.fold(f64::NAN, f64::min),
    };
    (result, value)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::watch::spec::{Sampling, Threshold};

    fn check(series: SeriesRule, on_empty: NoValue, on_nan: NoValue) -> CheckSpec {
        CheckSpec {
            name: "errors".into(),
            path: "watch.queries[0]".into(),
            source: Source::Query {
                promql: "up".into(),
                series,
            },
            threshold: Some(Threshold::Max(0.05)),
            sampling: Sampling {
                interval: Duration::from_secs(1),
                duration: Duration::from_secs(5),
                min_samples: 3,
                failure_limit: 0,
                consecutive_error_limit: 2,
                on_empty,
                on_nan,
            },
        }
    }

    fn default_check() -> CheckSpec {
        check(
            SeriesRule::All,
            NoValue::Inconclusive,
            NoValue::Inconclusive,
        )
    }

    fn values(values: &[f64]) -> Result<Reading, ProbeError> {
        Ok(Reading::Series(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| SeriesValue {
                    labels: format!("{{i=\"{i}\"}}"),
                    value: *v,
                })
                .collect(),
        ))
    }

    #[test]
    fn special_values_parse_from_their_text() {
        assert!(parse_value("NaN").unwrap().is_nan());
        assert_eq!(parse_value("+Inf").unwrap(), f64::INFINITY);
        assert_eq!(parse_value("-Inf").unwrap(), f64::NEG_INFINITY);
        assert_eq!(parse_value("0.025").unwrap(), 0.025);
        assert_eq!(parse_value("1e-3").unwrap(), 0.001);
    }

    #[test]
    fn other_spellings_of_special_values_are_rejected() {
        for text in [
            "nan",
            "inf",
            "infinity",
            "-inf",
            "+infinity",
            "",
            " 1",
            "0x10",
        ] {
            assert!(parse_value(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn special_values_keep_their_names() {
        for text in ["NaN", "+Inf", "-Inf", "0.5"] {
            assert_eq!(format_value(parse_value(text).unwrap()), text);
        }
    }

    #[test]
    fn values_are_shortened_for_display() {
        assert_eq!(display_value("0.3112807117786303"), "0.3113");
        assert_eq!(display_value("0"), "0");
        assert_eq!(display_value("12.5"), "12.5");
        assert_eq!(display_value("0.0000123"), "1.23e-5");
        assert_eq!(display_value("+Inf"), "+Inf");
        assert_eq!(display_value("NaN"), "NaN");
    }

    #[test]
    fn value_under_limit_is_good() {
        let sample = judge(&default_check(), Some(0.05), values(&[0.01]), 1000);
        assert_eq!(sample.result, SampleResult::Good);
        assert_eq!(sample.value.as_deref(), Some("0.01"));
        assert_eq!(sample.threshold, Some(0.05));
    }

    #[test]
    fn value_equal_to_limit_is_good() {
        let sample = judge(&default_check(), Some(0.05), values(&[0.05]), 0);
        assert_eq!(sample.result, SampleResult::Good);
    }

    #[test]
    fn positive_infinity_is_a_breach() {
        let reading = Ok(Reading::Series(vec![SeriesValue {
            labels: "{}".into(),
            value: parse_value("+Inf").unwrap(),
        }]));
        let sample = judge(&default_check(), Some(0.05), reading, 0);
        assert_eq!(sample.result, SampleResult::Breach);
        assert_eq!(sample.value.as_deref(), Some("+Inf"));
    }

    #[test]
    fn negative_infinity_is_under_the_limit() {
        let sample = judge(
            &default_check(),
            Some(0.05),
            values(&[f64::NEG_INFINITY]),
            0,
        );
        assert_eq!(sample.result, SampleResult::Good);
    }

    #[test]
    fn nan_follows_on_nan_and_is_never_compared() {
        for (rule, expected) in [
            (NoValue::Inconclusive, SampleResult::Inconclusive),
            (NoValue::Pass, SampleResult::Good),
            (NoValue::Fail, SampleResult::Breach),
        ] {
            let check = check(SeriesRule::All, NoValue::Inconclusive, rule);
            // A NaN limit would make every comparison false; the rule alone
            // must decide.
            let sample = judge(&check, Some(0.05), values(&[f64::NAN]), 0);
            assert_eq!(sample.result, expected, "on_nan {rule:?}");
            assert_eq!(sample.value.as_deref(), Some("NaN"));
            assert_eq!(sample.note, "NaN");
        }
    }

    #[test]
    fn empty_answer_follows_on_empty() {
        for (rule, expected) in [
            (NoValue::Inconclusive, SampleResult::Inconclusive),
            (NoValue::Pass, SampleResult::Good),
            (NoValue::Fail, SampleResult::Breach),
        ] {
            let check = check(SeriesRule::All, rule, NoValue::Inconclusive);
            let sample = judge(&check, Some(0.05), values(&[]), 0);
            assert_eq!(sample.result, expected, "on_empty {rule:?}");
            assert_eq!(sample.note, "no data");
            assert_eq!(sample.value, None);
        }
    }

    #[test]
    fn probe_error_is_an_error_sample() {
        let sample = judge(
            &default_check(),
            Some(0.05),
            Err(ProbeError::retryable("connection refused")),
            0,
        );
        assert_eq!(sample.result, SampleResult::Error);
        assert_eq!(sample.note, "connection refused");
    }

    #[test]
    fn all_series_must_pass_by_default() {
        let sample = judge(&default_check(), Some(0.05), values(&[0.01, 0.2]), 0);
        assert_eq!(sample.result, SampleResult::Breach);
        assert_eq!(sample.value.as_deref(), Some("0.2"));
        assert_eq!(sample.note, "2 series");
    }

    #[test]
    fn any_series_may_pass() {
        let check = check(
            SeriesRule::Any,
            NoValue::Inconclusive,
            NoValue::Inconclusive,
        );
        let sample = judge(&check, Some(0.05), values(&[0.01, 0.2]), 0);
        assert_eq!(sample.result, SampleResult::Good);
        assert_eq!(sample.value.as_deref(), Some("0.01"));
        let sample = judge(&check, Some(0.05), values(&[0.3, 0.2]), 0);
        assert_eq!(sample.result, SampleResult::Breach);
    }

    #[test]
    fn nan_series_makes_all_inconclusive() {
        let sample = judge(&default_check(), Some(0.05), values(&[0.01, f64::NAN]), 0);
        assert_eq!(sample.result, SampleResult::Inconclusive);
        assert_eq!(sample.value.as_deref(), Some("0.01"));
    }

    #[test]
    fn http_status_decides_without_a_value() {
        let sample = judge(&default_check(), None, Ok(Reading::Status(204)), 0);
        assert_eq!(sample.result, SampleResult::Good);
        let sample = judge(&default_check(), None, Ok(Reading::Status(503)), 0);
        assert_eq!(sample.result, SampleResult::Breach);
        assert_eq!(sample.note, "HTTP 503");
    }
}
