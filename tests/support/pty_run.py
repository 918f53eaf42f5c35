"""Run a command in a pseudo-terminal and answer its questions.

Tests use it to drive keywheel as a person at a terminal would:

    python3 tests/support/pty_run.py --expect 'Delete old key' --send 'y' \
        -- keywheel run playbook.yaml

Each --expect/--send pair waits (up to --timeout seconds) for the regular
expression to appear in the terminal output, then types the answer and
Enter (a control character such as Ctrl-C, "\x03", goes alone). Everything
the command printed is written to stdout afterwards, and this script exits
with the command's exit code (128 + signal when killed, 124 when an expected
text never appeared).
"""

import argparse
import os
import pty
import re
import select
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--expect", action="append", default=[])
    parser.add_argument("--send", action="append", default=[])
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if len(args.expect) != len(args.send):
        parser.error("give one --send for each --expect")

    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(command[0], command)

    output = b""
    pending = list(zip(args.expect, args.send))
    deadline = time.monotonic() + args.timeout
    status = None
    while True:
        if pending and re.search(pending[0][0].encode(), output):
            answer = pending.pop(0)[1]
            # A control character (Ctrl-C is "\x03") is a key press on its
            # own, sent without Enter, as a person would type it.
            enter = b"" if answer and answer[0] < " " else b"\r"
            os.write(fd, answer.encode() + enter)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            sys.stdout.write(output.decode(errors="replace"))
            sys.exit(124)
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                chunk = b""
            if chunk:
                output += chunk
                continue
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    try:
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            output += chunk
    except OSError:
        pass
    sys.stdout.write(output.decode(errors="replace"))
    if pending:
        sys.exit(124)
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
