//! What the operator sees on the terminal.
//!
//! Status lines go to stderr as a right-aligned verb and a message, in the
//! manner of cargo, so that stdout stays free for `--json`. Progress bars and
//! colours appear only when stderr is a terminal and `--quiet` is off.
//! Questions are asked only on a terminal, and never with `--no-input`.

use std::fmt::Display;
use std::io::{self, BufRead, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

pub mod fanout;
pub mod render;
pub mod watch;

/// How output should behave, from the command line.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutputOptions {
    pub quiet: bool,
    /// Answer yes to every question.
    pub yes: bool,
    /// Fail instead of asking a question.
    pub no_input: bool,
    /// Print a status line for every target of a step, not only the
    /// step's summary.
    pub verbose: bool,
}

#[derive(Debug)]
pub struct Output {
    options: OutputOptions,
    /// Prints nothing at all, warnings and errors included.
    muted: bool,
    color: bool,
    stderr_tty: bool,
    stdin_tty: bool,
}

/// Why a question could not be answered yes.
#[derive(Debug, PartialEq, Eq)]
pub enum Confirmation {
    Yes,
    No,
    /// No terminal to ask on, or `--no-input`.
    CannotAsk,
}

impl Output {
    pub fn new(options: OutputOptions) -> Self {
        let stderr_tty = io::stderr().is_terminal();
        let color = stderr_tty && std::env::var_os("NO_COLOR").is_none();
        Self {
            options,
            muted: false,
            color,
            stderr_tty,
            stdin_tty: io::stdin().is_terminal(),
        }
    }

    /// Output that prints nothing and asks nothing, for library callers.
    pub fn silent() -> Self {
        Self {
            options: OutputOptions {
                quiet: true,
                yes: false,
                no_input: true,
                verbose: false,
            },
            muted: true,
            color: false,
            stderr_tty: false,
            stdin_tty: false,
        }
    }

    pub fn options(&self) -> OutputOptions {
        self.options
    }

    /// Whether a person can answer questions.
    pub fn is_interactive(&self) -> bool {
        self.stdin_tty && self.stderr_tty && !self.options.no_input
    }

    /// Prints a status line such as `     Pushing vault-app`.
    pub fn status(&self, verb: &str, message: impl Display) {
        if self.options.quiet {
            return;
        }
        self.line(verb, "32", message);
    }

    /// Prints a warning; shown even with `--quiet`.
    pub fn warn(&self, message: impl Display) {
        self.line("warning", "33", message);
    }

    /// Prints an error; shown even with `--quiet`.
    pub fn error(&self, message: impl Display) {
        self.line("error", "31", message);
    }

    /// Prints a plain line to stderr (tables, plans).
    pub fn plain(&self, text: impl Display) {
        if !self.options.quiet {
            crate::timings::note_output();
            let _ = writeln!(io::stderr().lock(), "{text}");
        }
    }

    fn line(&self, verb: &str, color: &str, message: impl Display) {
        if self.muted {
            return;
        }
        crate::timings::note_output();
        let mut err = io::stderr().lock();
        let _ = if self.color {
            writeln!(err, "\x1b[1;{color}m{verb:>12}\x1b[0m {message}")
        } else {
            writeln!(err, "{verb:>12} {message}")
        };
    }

    /// Asks a yes/no question on the terminal. `--yes` answers yes without
    /// asking; without a terminal or with `--no-input` nothing is asked.
    pub fn confirm(&self, question: &str) -> Confirmation {
        if self.options.yes {
            return Confirmation::Yes;
        }
        if !self.is_interactive() {
            return Confirmation::CannotAsk;
        }
        let mut err = io::stderr().lock();
        let _ = write!(err, "{question} [y/N] ");
        let _ = err.flush();
        drop(err);
        let mut answer = String::new();
        if io::stdin().lock().read_line(&mut answer).is_err() {
            return Confirmation::CannotAsk;
        }
        match answer.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Confirmation::Yes,
            _ => Confirmation::No,
        }
    }

    /// A spinner with a message, shown only on a terminal.
    pub fn spinner(&self, message: impl Into<String>) -> Option<ProgressBar> {
        if !self.shows_progress() {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner:.green} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        Some(bar)
    }

    /// Returns whether progress bars and spinners are drawn.
    fn shows_progress(&self) -> bool {
        !self.options.quiet && self.stderr_tty
    }
}
