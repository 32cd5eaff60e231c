"""Real servers and jobs for tests: a free 127.0.0.1 port, readiness over HTTP, and cleanup
of the whole process group, so no test leaves a process behind."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A 127.0.0.1 port something listens on, for the whole block."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def wait_until_ready(
    url: str, process: subprocess.Popen, log: Path, timeout_s: float = 90,
    context: ssl.SSLContext | None = None,
) -> None:  # fmt: skip
    """`context`: the certificates an https `url` is checked against."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=2, context=context) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_server(
    command: list[str],
    health_url: str,
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    context: ssl.SSLContext | None = None,
) -> Iterator[subprocess.Popen]:
    """Start `command` in its own session; on exit stop it and all of its children."""
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    try:
        wait_until_ready(health_url, process, log, context=context)
        yield process
    finally:
        stop_group(process)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the process's whole group (it was started in a session of its own), then
    SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def run_own_group(
    command: list[str], cwd: Path, env: dict[str, str], timeout_s: float = 300
) -> subprocess.CompletedProcess:
    """`subprocess.run` in a process group of its own, killed whole at the end: a job's
    DDP processes go with it (even hung ones), and a signal to its group never hits pytest."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
