"""The payload log a worker keeps off the request path: sampled records written in batches
by its thread, files rotated and pruned, a folder that cannot be written said once."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mlops.monitoring.payloads import PayloadLog, open_payload_log, read_payloads
from mlops.serving.deployment import Deployment


def wait_written(log: PayloadLog) -> None:
    log.close()
    assert not log.thread.is_alive()


def test_records_are_written_by_the_thread_and_read_back_in_order(tmp_path: Path) -> None:
    log = PayloadLog(tmp_path, "digits cnn", "3", 0.5, flush_s=0.05)
    for n in range(100):
        log.put({"kind": "prediction", "index": n, "input": np.full((1, 2), n, np.float32)})
    wait_written(log)
    (path,) = tmp_path.glob("payloads-digits_cnn-v3-*.jsonl")
    assert path.name.startswith(f"payloads-digits_cnn-v3-{os.getpid()}-")
    records = list(read_payloads(tmp_path, "digits cnn", "3"))
    assert [r["index"] for r in records] == list(range(100))
    assert records[7]["input"] == [[7.0, 7.0]]
    assert not list(read_payloads(tmp_path, "digits cnn", "30"))  # another version's files
    assert not list(read_payloads(tmp_path, "digits", "3"))


def test_the_sample_rate_is_the_share_of_samples_picked(tmp_path: Path) -> None:
    picked = PayloadLog(tmp_path, "m", "1", 0.1, flush_s=60)
    chosen = sum(len(picked.sample(64)) for _ in range(500))
    assert 0.08 < chosen / (500 * 64) < 0.12
    assert PayloadLog(tmp_path, "m", "1", 0.0).sample(64) == []
    assert PayloadLog(tmp_path, "m", "1", 1.0).sample(3) == [0, 1, 2]


def test_files_rotate_past_their_size_and_the_oldest_go(tmp_path: Path) -> None:
    log = PayloadLog(tmp_path, "m", "1", 1.0, max_file_bytes=2_000, keep_files=3, flush_s=60)
    for batch in range(10):
        for n in range(20):
            log.put({"batch": batch, "n": n, "padding": "x" * 40})
        log._write_queued()  # as the thread does once per flush
    wait_written(log)
    files = sorted(tmp_path.glob("payloads-m-v1-*.jsonl"))
    assert len(files) == 3
    assert all(path.stat().st_size <= 2_000 for path in files)
    batches = [r["batch"] for r in read_payloads(tmp_path, "m", "1")]
    assert batches == sorted(batches) and batches[-1] == 9 and batches[0] > 0  # oldest gone


def test_an_unwritable_folder_turns_the_log_off_with_a_note(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    deployment = Deployment(
        bento_model_tag="m:v1", model_name="m", model_version="1", alias="", run_id="r",
        git_commit="", data_md5="", input_shape=(2,), num_classes=2, max_batch_size=8,
        max_latency_ms=100, max_request_samples=8, max_body_bytes=1000, workers=1,
        torch_threads=1, payload_sample_rate=0.5, payload_dir=str(blocker / "payloads"),
    )  # fmt: skip
    assert open_payload_log(deployment) is None
    assert "payload log off: cannot write to" in capsys.readouterr().err
    monkeypatch.setenv("MLOPS_PAYLOAD_DIR", str(tmp_path / "here"))
    log = open_payload_log(deployment)
    assert log is not None and log.folder == tmp_path / "here"
    log.close()


@pytest.mark.parametrize("torn", [b'{"kind": "predic', b"\n\n"])
def test_a_torn_last_line_is_skipped(tmp_path: Path, torn: bytes) -> None:
    (tmp_path / "payloads-m-v1-1-x-00001.jsonl").write_bytes(b'{"n": 1}\n' + torn)
    assert list(read_payloads(tmp_path, "m", "1")) == [{"n": 1}]
