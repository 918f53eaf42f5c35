//! Running the issuer program once: a JSON request on stdin, a JSON response
//! on stdout, within a time limit.
//!
//! The program runs in its own process group with an environment that
//! holds only what the caller passes, so none of keywheel's own variables
//! (seal key, tokens of targets) reach it. On timeout the whole group gets
//! SIGKILL, so a child the program started does not outlive it either.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use zeroize::Zeroizing;

/// Largest response read from stdout.
const MAX_STDOUT_BYTES: usize = 1024 * 1024;
/// Bytes kept from the end of stderr for error messages.
const STDERR_TAIL_BYTES: usize = 4096;

/// How one run of the program ended, when it did not response.
#[derive(Debug)]
pub enum RunError {
    /// The program could not be started.
    Spawn(String),
    /// It ran longer than the timeout and was killed.
    TimedOut(Duration),
    /// It exited with a non-zero status or was killed by a signal.
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
        /// The end of its stderr, not yet redacted.
        stderr: String,
    },
    /// Its stdout was larger than allowed, or could not be read.
    Output(String),
}

/// Runs `program` with `args` and `env` only, writes `input` to its stdin
/// and closes it, and returns its stdout when it exits with status 0.
pub async fn run(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    input: &[u8],
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, RunError> {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .map_err(|err| RunError::Spawn(err.to_string()))?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();

    let exchange = async {
        let write = async {
            if let Some(mut stdin) = stdin {
                // A program that does not read its input closes the pipe
                // early; its exit status tells what went wrong.
                let _ = stdin.write_all(input).await;
                let _ = stdin.shutdown().await;
            }
        };
        let (_, out, err) = tokio::join!(
            write,
            read_limited(stdout, MAX_STDOUT_BYTES),
            read_tail(stderr, STDERR_TAIL_BYTES)
        );
        let status = child.wait().await;
        (out, err, status)
    };
    let finished = tokio::time::timeout(timeout, exchange).await;
    let Ok((out, err, status)) = finished else {
        kill_group(pid);
        let _ = child.kill().await;
        return Err(RunError::TimedOut(timeout));
    };

    let status = status.map_err(|err| RunError::Output(format!("waiting for it failed: {err}")))?;
    if !status.success() {
        use std::os::unix::process::ExitStatusExt as _;
        return Err(RunError::Exited {
            code: status.code(),
            signal: status.signal(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        });
    }
    out
}

/// Sends SIGKILL to the process group the program leads.
fn kill_group(pid: Option<u32>) {
    let group = pid
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

async fn read_limited(
    stream: Option<impl AsyncRead + Unpin>,
    limit: usize,
) -> Result<Zeroizing<Vec<u8>>, RunError> {
    let mut out = Zeroizing::new(Vec::new());
    let Some(stream) = stream else {
        return Ok(out);
    };
    let mut limited = stream.take(limit as u64 + 1);
    limited
        .read_to_end(&mut out)
        .await
        .map_err(|err| RunError::Output(format!("reading its stdout failed: {err}")))?;
    if out.len() > limit {
        return Err(RunError::Output(format!(
            "its stdout is larger than {limit} bytes"
        )));
    }
    Ok(out)
}

/// Reads a stream to its end, keeping only its last `keep` bytes.
async fn read_tail(stream: Option<impl AsyncRead + Unpin>, keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let Some(mut stream) = stream else {
        return tail;
    };
    let mut buffer = [0u8; 4096];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        tail.extend_from_slice(&buffer[..read]);
        if tail.len() > keep {
            tail.drain(..tail.len() - keep);
        }
    }
    tail
}

/// Makes the child receive SIGKILL when keywheel dies, even by `kill -9`,
/// so a program cannot finish a create after keywheel's process is gone
/// and a `resume` has already looked for the keys it made.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut tokio::process::Command) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the child between fork and exec, where
    // only async-signal-safe calls are allowed: prctl(PR_SET_PDEATHSIG) and
    // getppid() are system calls, and nothing here allocates or locks.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            // The parent may have died before the call above took effect.
            if rustix::process::getppid() != Some(parent) {
                return Err(std::io::Error::other(
                    "keywheel exited before the program started",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Vec<String> {
        vec!["-c".into(), script.into()]
    }

    #[tokio::test]
    async fn stdin_reaches_the_program_and_stdout_returns() {
        let out = run(
            Path::new("/bin/sh"),
            &sh("cat"),
            &[],
            b"{\"a\":1}",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(out.as_slice(), b"{\"a\":1}");
    }

    #[tokio::test]
    async fn environment_holds_only_what_is_passed() {
        let env = vec![("ONLY".to_string(), "this".to_string())];
        let out = run(
            Path::new("/bin/sh"),
            &sh("env"),
            &env,
            b"",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("ONLY=this"), "{text}");
        assert!(!text.contains("CARGO"), "{text}");
    }

    #[tokio::test]
    async fn non_zero_exit_keeps_stderr() {
        let err = run(
            Path::new("/bin/sh"),
            &sh("echo oops >&2; exit 3"),
            &[],
            b"",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        match err {
            RunError::Exited { code, stderr, .. } => {
                assert_eq!(code, Some(3));
                assert_eq!(stderr.trim(), "oops");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_program() {
        let started = std::time::Instant::now();
        let err = run(
            Path::new("/bin/sh"),
            &sh("sleep 30"),
            &[],
            b"",
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, RunError::TimedOut(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
