//! Progress and summary of a step that calls many targets at once.
//!
//! While the step runs, a terminal shows one progress bar per target kind.
//! Each target's own status line is printed only in verbose mode, so that a
//! run over hundreds of targets stays readable. When the step ends, one
//! status line gives the counts and the time. Steps that change targets
//! (push and restore) add a table by kind with the slowest target of each.
//! Every failed target gets its own error line, by name; a failed restore
//! gets it from the rollback, with what to do.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Output;

/// A step that calls every target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Preflight,
    Push,
    Restart,
    Restore,
}

impl Phase {
    fn running(self) -> &'static str {
        match self {
            Self::Preflight => "Checking",
            Self::Push => "Pushing",
            Self::Restart => "Restarting",
            Self::Restore => "Restoring",
        }
    }

    /// Returns the verb of the summary line and of a target's success line.
    fn done(self) -> &'static str {
        match self {
            Self::Preflight => "Checked",
            Self::Push => "Pushed",
            Self::Restart => "Restarted",
            Self::Restore => "Restored",
        }
    }

    /// Returns the step's name in failure lines, as the journal names it.
    fn step(self) -> &'static str {
        match self {
            Self::Preflight => "preflight",
            Self::Push => "push",
            Self::Restart => "restart",
            Self::Restore => "restore",
        }
    }

    /// Returns whether the step ends with a table. Only the steps that change
    /// targets get one, because that is what the operator checks.
    fn has_table(self) -> bool {
        matches!(self, Self::Push | Self::Restore)
    }

    /// Returns whether failed targets get an error line. A failed restore becomes
    /// an item that needs attention, which the rollback prints with what to
    /// do, so it is not listed twice.
    fn lists_failures(self) -> bool {
        self != Self::Restore
    }
}

/// Counts of one target kind.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindCounts {
    pub kind: String,
    pub done: usize,
    pub failed: usize,
    /// Targets the step did not call: the journal shows them done by an
    /// earlier attempt of the run, or another target failed first and the
    /// run rolls back.
    pub skipped: usize,
    /// The target whose call took longest, done or failed, with its time.
    pub slowest: Option<(String, Duration)>,
}

/// Outcome counts of a step, by kind in playbook order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub kinds: Vec<KindCounts>,
    /// Failed targets with their errors, in the order they failed.
    pub failures: Vec<(String, String)>,
    /// Targets a restore left alone, because someone else changed them
    /// after preflight, with the restore's summary.
    pub left_alone: Vec<(String, String)>,
    /// Targets among `skipped` that were not started because another
    /// target failed.
    pub not_started: usize,
}

impl Tally {
    fn kind_mut(&mut self, kind: &str) -> &mut KindCounts {
        let index = match self.kinds.iter().position(|k| k.kind == kind) {
            Some(index) => index,
            None => {
                self.kinds.push(KindCounts {
                    kind: kind.to_string(),
                    ..KindCounts::default()
                });
                self.kinds.len() - 1
            }
        };
        &mut self.kinds[index]
    }

    fn record(&mut self, kind: &str, name: &str, elapsed: Duration, failed: bool) {
        let counts = self.kind_mut(kind);
        if failed {
            counts.failed += 1;
        } else {
            counts.done += 1;
        }
        self.note_slowest(kind, name, elapsed);
    }

    fn note_slowest(&mut self, kind: &str, name: &str, elapsed: Duration) {
        let counts = self.kind_mut(kind);
        if counts
            .slowest
            .as_ref()
            .is_none_or(|(_, max)| elapsed > *max)
        {
            counts.slowest = Some((name.to_string(), elapsed));
        }
    }

    fn total(&self, count: impl Fn(&KindCounts) -> usize) -> usize {
        self.kinds.iter().map(count).sum()
    }

    /// Formats the one-line summary: counts and the step's time.
    pub fn summary(&self, elapsed: Duration) -> String {
        let done = self.total(|k| k.done);
        let failed = self.total(|k| k.failed);
        let skipped = self.total(|k| k.skipped) - self.not_started;
        let left_alone = self.left_alone.len();
        let called = done + failed + left_alone;
        let mut line = if failed == 0 && left_alone == 0 {
            format!("{done} target(s) in {}", format_elapsed(elapsed))
        } else {
            format!(
                "{done} of {called} target(s) in {}",
                format_elapsed(elapsed)
            )
        };
        if failed > 0 {
            let _ = write!(line, ", {failed} failed");
        }
        if left_alone > 0 {
            let _ = write!(line, ", {left_alone} left alone");
        }
        if skipped > 0 {
            let _ = write!(line, ", {skipped} skipped as done before");
        }
        if self.not_started > 0 {
            let _ = write!(line, ", {} not started after the failure", self.not_started);
        }
        line
    }

    /// Formats the table by kind, each line indented to start under the
    /// messages of the status lines.
    pub fn table(&self, phase: Phase) -> String {
        let headers = ["KIND", phase.done(), "FAILED", "SKIPPED", "SLOWEST"];
        let mut rows: Vec<[String; 5]> = vec![headers.map(|h| h.to_uppercase())];
        for counts in &self.kinds {
            let slowest = match &counts.slowest {
                Some((name, elapsed)) => format!("{name} {}", format_elapsed(*elapsed)),
                None => "-".to_string(),
            };
            rows.push([
                counts.kind.clone(),
                counts.done.to_string(),
                counts.failed.to_string(),
                counts.skipped.to_string(),
                slowest,
            ]);
        }
        let mut widths = [0; 5];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        for row in &rows {
            let _ = write!(out, "{:13}{:<w$}", "", row[0], w = widths[0]);
            for (index, cell) in row.iter().enumerate().take(4).skip(1) {
                let _ = write!(out, "  {cell:>w$}", w = widths[index]);
            }
            let _ = writeln!(out, "  {}", row[4]);
        }
        out
    }
}

/// Formats a step's or a call's time: `0.42s`, `12.3s`, `2m05s`.
pub fn format_elapsed(elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds < 10.0 {
        format!("{seconds:.2}s")
    } else if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = elapsed.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// The progress and tally of one step over many targets. Create it with
/// [`Output::fan_out`], report each target, then call [`FanOut::finish`].
pub struct FanOut<'o> {
    out: &'o Output,
    phase: Phase,
    started: Instant,
    bars: Option<Bars>,
    tally: Mutex<Tally>,
}

struct Bars {
    multi: MultiProgress,
    by_kind: Vec<(String, ProgressBar)>,
}

impl Output {
    /// Starts the progress of `phase` over targets of the given kinds, one
    /// entry per target in playbook order, including those that will be
    /// reported as skipped.
    pub fn fan_out<'k>(
        &self,
        phase: Phase,
        kinds: impl IntoIterator<Item = &'k str>,
    ) -> FanOut<'_> {
        let mut counts: Vec<(String, u64)> = Vec::new();
        for kind in kinds {
            match counts.iter_mut().find(|(k, _)| k == kind) {
                Some((_, count)) => *count += 1,
                None => counts.push((kind.to_string(), 1)),
            }
        }
        // The table lists the kinds in playbook order, whatever finishes first.
        let tally = Tally {
            kinds: counts
                .iter()
                .map(|(kind, _)| KindCounts {
                    kind: kind.clone(),
                    ..KindCounts::default()
                })
                .collect(),
            failures: Vec::new(),
            left_alone: Vec::new(),
            not_started: 0,
        };
        let bars = (self.shows_progress() && !counts.is_empty()).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {pos:>4}/{len:<4} {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let by_kind = counts
                .iter()
                .map(|(kind, count)| {
                    let bar = ProgressBar::hidden()
                        .with_style(style.clone())
                        .with_prefix(phase.running())
                        .with_message(kind.clone());
                    bar.set_length(*count);
                    (kind.clone(), multi.add(bar))
                })
                .collect();
            Bars { multi, by_kind }
        });
        FanOut {
            out: self,
            phase,
            started: Instant::now(),
            bars,
            tally: Mutex::new(tally),
        }
    }
}

impl FanOut<'_> {
    /// Counts a target the step does not call, because it was done before.
    pub fn skipped(&self, kind: &str) {
        self.tally().kind_mut(kind).skipped += 1;
        if let Some(bar) = self.bar(kind) {
            let left = bar.length().unwrap_or(1).saturating_sub(1);
            bar.set_length(left);
            if left == 0 {
                bar.finish_and_clear();
            }
        }
    }

    /// Counts a target the step does not start, because another target
    /// failed and the run rolls back.
    pub fn not_started(&self, kind: &str) {
        {
            let mut tally = self.tally();
            tally.kind_mut(kind).skipped += 1;
            tally.not_started += 1;
        }
        if let Some(bar) = self.bar(kind) {
            bar.inc(1);
        }
    }

    /// Records a target whose call succeeded.
    pub fn succeeded(&self, kind: &str, name: &str, elapsed: Duration, summary: &str) {
        self.tally().record(kind, name, elapsed, false);
        self.advance(kind, false);
        if self.out.options.verbose {
            self.print(|| {
                self.out.status(
                    self.phase.done(),
                    format!("{name}: {summary} ({})", format_elapsed(elapsed)),
                )
            });
        }
    }

    /// Records a target that a restore left alone; it is listed with a
    /// warning when the step ends.
    pub fn left_alone(&self, kind: &str, name: &str, elapsed: Duration, summary: &str) {
        {
            let mut tally = self.tally();
            tally.note_slowest(kind, name, elapsed);
            tally
                .left_alone
                .push((name.to_string(), summary.to_string()));
        }
        self.advance(kind, false);
    }

    /// Records a target whose call failed; its error is listed when the
    /// step ends.
    pub fn failed(&self, kind: &str, name: &str, elapsed: Duration, error: &str) {
        {
            let mut tally = self.tally();
            tally.record(kind, name, elapsed, true);
            tally.failures.push((name.to_string(), error.to_string()));
        }
        self.advance(kind, true);
        if self.out.options.verbose {
            self.print(|| self.out.status("Failed", format!("{name}: {error}")));
        }
    }

    /// Clears the bars and prints the summary, the table and every
    /// failure. Returns the tally.
    pub fn finish(self) -> Tally {
        if let Some(bars) = &self.bars {
            for (_, bar) in &bars.by_kind {
                bar.finish_and_clear();
            }
            let _ = bars.multi.clear();
        }
        let tally = self.tally.into_inner().unwrap_or_else(|e| e.into_inner());
        if tally.kinds.is_empty() {
            return tally;
        }
        self.out
            .status(self.phase.done(), tally.summary(self.started.elapsed()));
        if self.phase.has_table() {
            self.out.plain(tally.table(self.phase).trim_end());
        }
        let failures = tally.failures.iter();
        for (name, error) in failures.filter(|_| self.phase.lists_failures()) {
            self.out
                .error(format!("{name}: {} failed: {error}", self.phase.step()));
        }
        for (name, summary) in &tally.left_alone {
            self.out.warn(format!("{name}: {summary}"));
        }
        tally
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bar(&self, kind: &str) -> Option<&ProgressBar> {
        let bars = self.bars.as_ref()?;
        bars.by_kind
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, bar)| bar)
    }

    fn advance(&self, kind: &str, failed: bool) {
        let Some(bar) = self.bar(kind) else {
            return;
        };
        bar.inc(1);
        if failed {
            let failed = self
                .tally()
                .kinds
                .iter()
                .find(|k| k.kind == kind)
                .map_or(0, |k| k.failed);
            bar.set_message(format!("{kind}, {failed} failed"));
        }
    }

    /// Prints a line without tearing the bars.
    fn print(&self, line: impl FnOnce()) {
        match &self.bars {
            Some(bars) => bars.multi.suspend(line),
            None => line(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally() -> Tally {
        let mut tally = Tally::default();
        for index in 0..67 {
            let name = format!("vault-{index}");
            tally.record("vault", &name, Duration::from_millis(100 + index), false);
        }
        for index in 0..66 {
            let name = format!("aws-{index}");
            let failed = index == 7;
            tally.record("aws_secret", &name, Duration::from_millis(300), failed);
            if failed {
                tally
                    .failures
                    .push((name, "timed out after 1s; the call was stopped".into()));
            }
        }
        tally.kind_mut("kubernetes").skipped = 67;
        tally
    }

    #[test]
    fn table_has_one_row_per_kind() {
        let table = tally().table(Phase::Push);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["KIND", "PUSHED", "FAILED", "SKIPPED", "SLOWEST"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["vault", "67", "0", "0", "vault-66", "0.17s"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["aws_secret", "65", "1", "0", "aws-0", "0.30s"]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["kubernetes", "0", "0", "67", "-"]
        );
    }

    /// Start and end of each blank-separated word of `line`.
    fn word_spans(line: &str) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        let mut start = None;
        for (index, c) in line.char_indices().chain([(line.len(), ' ')]) {
            match (c == ' ', start) {
                (true, Some(begin)) => {
                    spans.push((begin, index));
                    start = None;
                }
                (false, None) => start = Some(index),
                _ => {}
            }
        }
        spans
    }

    #[test]
    fn table_columns_line_up() {
        let table = tally().table(Phase::Restore);
        assert!(table.starts_with(&format!("{:13}KIND ", "")), "{table}");
        assert!(table.contains("  RESTORED  "), "{table}");
        let spans: Vec<Vec<(usize, usize)>> = table.lines().map(word_spans).collect();
        for row in &spans[1..] {
            assert_eq!(row[0].0, spans[0][0].0, "kinds start together:\n{table}");
            for column in 1..4 {
                assert_eq!(
                    row[column].1, spans[0][column].1,
                    "counts end together:\n{table}"
                );
            }
            assert_eq!(row[4].0, spans[0][4].0, "slowest starts together:\n{table}");
        }
    }

    #[test]
    fn summary_counts_failed_and_skipped() {
        assert_eq!(
            tally().summary(Duration::from_millis(1234)),
            "132 of 133 target(s) in 1.23s, 1 failed, 67 skipped as done before"
        );
    }

    #[test]
    fn summary_counts_targets_not_started() {
        let mut tally = Tally::default();
        tally.record("vault", "a", Duration::from_millis(5), true);
        tally.failures.push(("a".into(), "denied".into()));
        tally.kind_mut("vault").skipped += 4;
        tally.not_started = 3;
        assert_eq!(
            tally.summary(Duration::from_millis(20)),
            "0 of 1 target(s) in 0.02s, 1 failed, 1 skipped as done before, \
             3 not started after the failure"
        );
    }

    #[test]
    fn summary_without_failures_is_short() {
        let mut tally = Tally::default();
        tally.record("dotenv", "env", Duration::from_millis(5), false);
        assert_eq!(
            tally.summary(Duration::from_millis(20)),
            "1 target(s) in 0.02s"
        );
    }

    #[test]
    fn elapsed_times_are_short() {
        assert_eq!(format_elapsed(Duration::from_millis(420)), "0.42s");
        assert_eq!(format_elapsed(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_elapsed(Duration::from_secs(125)), "2m05s");
    }
}
