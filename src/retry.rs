//! Bounded retries with exponential backoff and jitter.
//!
//! Every remote call goes through [`retry`]: the operation reports whether a
//! failure is worth retrying and may carry the server's `Retry-After`. Delays
//! grow exponentially from `base_delay` up to `max_delay`, each multiplied by
//! a random factor in [0.5, 1.0) so that many clients do not retry in step. A
//! `Retry-After` is honoured as a lower bound. Retries stop after
//! `max_attempts` or when the next delay would pass `max_elapsed`.

use std::future::Future;
use std::time::Duration;

use rand::RngExt as _;

/// Limits of one retried call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Total time spent waiting between attempts, at most.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

/// The outcome of one failed attempt.
#[derive(Debug)]
pub enum Failure<E> {
    /// Worth another try, after at least `retry_after` when the server gave it.
    Retryable {
        error: E,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help.
    Fatal(E),
}

impl<E> Failure<E> {
    pub fn retryable(error: E) -> Self {
        Self::Retryable {
            error,
            retry_after: None,
        }
    }
}

/// Runs `attempt` until it succeeds, fails fatally, or the policy runs out.
/// `what` names the call in log lines.
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, mut attempt: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
    E: std::fmt::Display,
{
    let mut waited = Duration::ZERO;
    let mut number = 1;
    loop {
        let (error, retry_after) = match attempt(number).await {
            Ok(value) => return Ok(value),
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Retryable { error, retry_after }) => (error, retry_after),
        };
        let delay = backoff_delay(policy, number, retry_after);
        if number >= policy.max_attempts || waited + delay > policy.max_elapsed {
            tracing::info!(call = what, attempts = number, %error, "giving up after retries");
            return Err(error);
        }
        // Info, not warn: the final error reports the failure, and one line
        // per retry at the default level would flood cron logs.
        tracing::info!(
            call = what,
            attempt = number,
            delay_ms = delay.as_millis() as u64,
            %error,
            "retrying"
        );
        tokio::time::sleep(delay).await;
        waited += delay;
        number += 1;
    }
}

/// Delay before attempt `number + 1`.
pub fn backoff_delay(policy: &RetryPolicy, number: u32, retry_after: Option<Duration>) -> Duration {
    let exponent = number.saturating_sub(1).min(20);
    let raw = policy
        .base_delay
        .saturating_mul(1 << exponent)
        .min(policy.max_delay);
    let factor: f64 = rand::rng().random_range(0.5..1.0);
    let jittered = raw.mul_f64(factor);
    match retry_after {
        Some(floor) => jittered.max(floor),
        None => jittered,
    }
}

/// Parses an HTTP `Retry-After` header given in seconds. HTTP dates are
/// ignored: servers that throttle API calls send seconds.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let policy = RetryPolicy::default();
        for number in 1..30 {
            let delay = backoff_delay(&policy, number, None);
            assert!(delay <= policy.max_delay, "{delay:?}");
        }
        let first = backoff_delay(&policy, 1, None);
        assert!(first >= policy.base_delay / 2 && first < policy.base_delay);
    }

    #[test]
    fn retry_after_is_a_lower_bound() {
        let policy = RetryPolicy::default();
        let delay = backoff_delay(&policy, 1, Some(Duration::from_secs(2)));
        assert!(delay >= Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_after_max_attempts() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let result: Result<(), String> = retry(&policy, "test", |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Failure::retryable("boom".to_string())) }
        })
        .await;
        assert_eq!(result.unwrap_err(), "boom");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_waits_for_retry_after() {
        let start = tokio::time::Instant::now();
        let policy = RetryPolicy::default();
        let result: Result<u32, String> = retry(&policy, "test", |number| async move {
            if number == 1 {
                Err(Failure::Retryable {
                    error: "slow down".to_string(),
                    retry_after: Some(Duration::from_secs(2)),
                })
            } else {
                Ok(number)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[test]
    fn retry_after_parses_seconds() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
