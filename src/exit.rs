//! Exit codes, stable across releases.

/// The process exit status of a keywheel command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The command did what was asked.
    Success = 0,
    /// The run failed, and everything is as it was: rolled back cleanly, or
    /// stopped before it changed anything.
    Failed = 1,
    /// Bad usage or an invalid playbook; nothing was contacted.
    Usage = 2,
    /// The run is held, or needs attention: it is unfinished, and the
    /// output says what to do (`resume` or `rollback`).
    Attention = 3,
    /// Another run holds the playbook's lock, or has not finished.
    Locked = 4,
    /// Stopped by Ctrl-C (SIGINT); the run is unfinished, as after a crash.
    Interrupted = 130,
    /// Stopped by SIGTERM (`kill`, `timeout`, systemd); the run is
    /// unfinished, as after a crash.
    Terminated = 143,
}

impl ExitStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// The exit-code table for `--help` and the README.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
    0  success
    1  the run failed and everything is as it was (rolled back, or nothing changed)
    2  bad usage or invalid playbook; nothing was contacted
    3  the run is held or needs attention (a rollback that left a target alone
       included): run `keywheel status` for what to do
    4  locked: another run of the playbook is running or unfinished
  130  interrupted by Ctrl-C: the run is unfinished; `keywheel status` says what to do
  143  stopped by SIGTERM: the same as 130";
