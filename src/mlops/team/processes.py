"""Servers the team stack runs in the background: each in a session of its own (so a
terminal's Ctrl-C or the end of `make server` does not stop it), its output in a log file,
its process id in a pid file that `mlops server stop` reads."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path


def start_detached(
    command: list[str], pid_file: Path, log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("a") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=env,
        )  # fmt: skip
    pid_file.write_text(f"{process.pid}\n")
    return process


def recorded_pid(pid_file: Path) -> int | None:
    """The process id in `pid_file` if that process still runs, else None."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:  # runs, as another user
        return pid
    return pid


def stop_recorded(pid_file: Path, grace_s: float = 20) -> bool:
    """SIGTERM to the recorded process's group, SIGKILL after `grace_s`; True if it ran."""
    pid = recorded_pid(pid_file)
    pid_file.unlink(missing_ok=True)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _alive(pid):
        time.sleep(0.05)
    return True


def _alive(pid: int) -> bool:
    """True while `pid` runs; a child of this process is reaped when it has exited."""
    with contextlib.suppress(ChildProcessError):
        finished, _ = os.waitpid(pid, os.WNOHANG)
        if finished:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
