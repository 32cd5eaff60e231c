"""A small sample of the served traffic, and every fed-back label, kept on disk for offline
reports (`mlops monitor report`): JSON lines written by a background thread of each
worker, in batches, to files it rotates. The request path only draws the sample and puts
records on a queue; a full disk or a slow one never fails or slows an answer."""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from mlops.messages import tell

SAMPLED = "_payload"  # key of a sampled answer's input, between predict and its response
FILE_PATTERN = "payloads-{name}-v{version}-*.jsonl"


def safe_name(model_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)


class PayloadLog:
    """One per worker. `sample(n)` picks which of a batch's samples are logged;
    `put(record)` queues a record; a daemon thread writes them every `flush_s` seconds to
    `folder`/payloads-<model>-v<version>-<pid>-<time>.jsonl, starting a new file past
    `max_file_bytes` and deleting this worker's oldest past `keep_files`."""

    def __init__(
        self,
        folder: Path,
        model_name: str,
        model_version: str,
        sample_rate: float,
        max_file_bytes: int = 64_000_000,
        keep_files: int = 20,
        flush_s: float = 1.0,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix = f"payloads-{safe_name(model_name)}-v{model_version}-{os.getpid()}"
        self.sample_rate, self.max_file_bytes = float(sample_rate), int(max_file_bytes)
        self.keep_files, self.flush_s = int(keep_files), float(flush_s)
        self.rng = np.random.default_rng()
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self.file: Path | None = None
        self.written = self.files_started = 0
        self.failed = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._write_forever, name="payload-log",
                                       daemon=True)  # fmt: skip
        self.thread.start()

    def sample(self, samples: int) -> list[int]:
        if self.sample_rate <= 0:
            return []
        if self.sample_rate >= 1:
            return list(range(samples))
        return np.flatnonzero(self.rng.random(samples) < self.sample_rate).tolist()

    def put(self, record: dict) -> None:
        self.queue.put(record)

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued and stop the thread."""
        self.stopping.set()
        self.thread.join(timeout_s)

    def _write_forever(self) -> None:
        while not self.stopping.is_set():
            self.stopping.wait(self.flush_s)
            self._write_queued()
        self._write_queued()

    def _write_queued(self) -> None:
        lines = []
        with contextlib.suppress(queue.Empty):
            while True:
                lines.append(orjson.dumps(self.queue.get_nowait(),
                                          option=orjson.OPT_SERIALIZE_NUMPY))  # fmt: skip
        if not lines:
            return
        body = b"\n".join(lines) + b"\n"
        try:
            if self.file is None or self.written + len(body) > self.max_file_bytes:
                self._start_file()
            with self.file.open("ab") as output:
                output.write(body)
            self.written += len(body)
            self.failed = False
        except OSError as error:
            if not self.failed:  # once per outage, not once per second
                tell(f"payload log: cannot write {self.file}: {error}; dropping records",
                     warning=True)  # fmt: skip
            self.failed = True

    def _start_file(self) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.files_started += 1
        self.file = self.folder / f"{self.prefix}-{stamp}-{self.files_started:05d}.jsonl"
        self.written = 0
        mine = sorted(self.folder.glob(f"{self.prefix}-*.jsonl"))  # by name: by time
        for old in mine[: max(0, len(mine) + 1 - self.keep_files)]:
            old.unlink(missing_ok=True)


def open_payload_log(deployment) -> PayloadLog | None:
    """The worker's log, in MLOPS_PAYLOAD_DIR when set (where the Bento is served), else in
    the deployment's payload_dir; None, said once, where that folder cannot be written:
    the service answers without it."""
    folder = Path(os.environ.get("MLOPS_PAYLOAD_DIR") or deployment.payload_dir or "payloads")
    try:
        log = PayloadLog(folder, deployment.model_name, deployment.model_version,
                         deployment.payload_sample_rate)  # fmt: skip
    except OSError as error:
        tell(f"payload log off: cannot write to {folder} ({error}); set MLOPS_PAYLOAD_DIR to "
             "a writable folder", warning=True)  # fmt: skip
        return None
    atexit.register(log.close)
    return log


def read_payloads(folder: Path, model_name: str, model_version: str) -> Iterator[dict]:
    """Every record logged for one version, file by file in the order they were written."""
    pattern = FILE_PATTERN.format(name=safe_name(model_name), version=model_version)
    for path in sorted(Path(folder).glob(pattern), key=lambda p: p.stat().st_mtime):
        with path.open("rb") as lines:
            for line in lines:
                if line.strip():
                    with contextlib.suppress(orjson.JSONDecodeError):  # a torn last line
                        yield orjson.loads(line)
