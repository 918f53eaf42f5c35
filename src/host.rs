//! Facts about this host and its processes, for lock holders and audit.

/// The host name, or `unknown-host` when it cannot be read.
pub fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "unknown-host".to_string()
    } else {
        name
    }
}

/// The user running keywheel, from `$USER` or the numeric uid.
pub fn username() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("uid {}", rustix::process::geteuid().as_raw()))
}

/// Start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` when no such process runs. Together with the
/// pid it identifies a process even after the pid is reused.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses, so
    // fields are counted from the last ')'.
    let after_name = &stat[stat.rfind(')')? + 1..];
    // A zombie (Z) or dying (X) process has exited; only its parent has
    // not collected its status yet.
    if matches!(after_name.split_whitespace().next(), Some("Z" | "X")) {
        return None;
    }
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_start_time() {
        assert!(process_start(std::process::id()).is_some());
        assert!(process_start(4_000_000_000).is_none());
    }
}
