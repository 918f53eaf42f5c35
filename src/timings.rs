//! Opt-in figures on where a command's wall time goes, for benchmarks.
//!
//! With `KEYWHEEL_TIMINGS=1` in the environment, keywheel prints one line
//! to stderr as it exits. The line gives the wall time since `main`
//! started, when the first status line went to stderr, and the number and
//! total time of the fsync and fdatasync calls. Journal appends are
//! counted apart from the other syncs (journal creation, locks, the
//! active-run marker, the files that file and dotenv targets replace).
//! Times are measured around each call with a monotonic clock, so they
//! include the time the thread waited for the disk.
//!
//! The counters are always kept, because one clock read per sync costs
//! nothing next to the sync itself.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Environment variable that turns the summary on when set to `1`.
pub const TIMINGS_ENV: &str = "KEYWHEEL_TIMINGS";

static START: OnceLock<Instant> = OnceLock::new();
static FIRST_OUTPUT_NANOS: AtomicU64 = AtomicU64::new(0);

/// fdatasync calls of journal appends.
pub static JOURNAL_SYNCS: SyncCounter = SyncCounter::new();
/// Every other fsync keywheel makes.
pub static OTHER_SYNCS: SyncCounter = SyncCounter::new();

/// Number and total time of one kind of sync call.
pub struct SyncCounter {
    calls: AtomicU64,
    nanos: AtomicU64,
}

impl SyncCounter {
    const fn new() -> Self {
        Self {
            calls: AtomicU64::new(0),
            nanos: AtomicU64::new(0),
        }
    }

    /// Runs `sync` and counts its time.
    pub fn time<T>(&self, sync: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = sync();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        result
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn total(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// Marks the start of the process; call it first thing in `main`.
pub fn start() {
    START.get_or_init(Instant::now);
}

/// Notes that a status line was written; only the first one counts.
pub fn note_output() {
    let Some(start) = START.get() else {
        return;
    };
    let nanos = u64::try_from(start.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let _ = FIRST_OUTPUT_NANOS.compare_exchange(0, nanos, Ordering::Relaxed, Ordering::Relaxed);
}

/// Returns the summary line when `KEYWHEEL_TIMINGS=1` is set.
pub fn summary() -> Option<String> {
    if std::env::var(TIMINGS_ENV).ok().as_deref() != Some("1") {
        return None;
    }
    let wall = START.get()?.elapsed();
    let first = match FIRST_OUTPUT_NANOS.load(Ordering::Relaxed) {
        0 => "no output".to_string(),
        nanos => format!("first output at {}", millis(Duration::from_nanos(nanos))),
    };
    Some(format!(
        "timings: wall {}; {first}; journal fdatasync {} call(s) {} ({}); other fsync {} call(s) {} ({})",
        millis(wall),
        JOURNAL_SYNCS.calls(),
        millis(JOURNAL_SYNCS.total()),
        share(JOURNAL_SYNCS.total(), wall),
        OTHER_SYNCS.calls(),
        millis(OTHER_SYNCS.total()),
        share(OTHER_SYNCS.total(), wall),
    ))
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn share(part: Duration, whole: Duration) -> String {
    if whole.is_zero() {
        return "0.0% of wall".to_string();
    }
    format!(
        "{:.1}% of wall",
        100.0 * part.as_secs_f64() / whole.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_adds_calls_and_time() {
        let counter = SyncCounter::new();
        let value = counter.time(|| {
            std::thread::sleep(Duration::from_millis(2));
            7
        });
        counter.time(|| ());
        assert_eq!(value, 7);
        assert_eq!(counter.calls(), 2);
        assert!(counter.total() >= Duration::from_millis(2));
    }

    #[test]
    fn share_is_a_percentage_of_wall() {
        let share = share(Duration::from_millis(5), Duration::from_millis(200));
        assert_eq!(share, "2.5% of wall");
    }
}
