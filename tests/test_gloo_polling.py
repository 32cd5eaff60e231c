"""gloo's receive thread runs under SCHED_IDLE after setup, and nothing else changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

# A fresh process: the process group and its threads must not outlive the check.
CHECK = """
import json, os, sys, time
from pathlib import Path
import torch.distributed as dist
from mlops.distributed.gloo_polling import GlooPollingPriority

def policies():
    found = {}
    for task in Path("/proc/self/task").iterdir():
        name = (task / "comm").read_text().strip()
        found.setdefault(name, set()).add(os.sched_getscheduler(int(task.name)))
    return {name: sorted(p) for name, p in found.items()}

GlooPollingPriority().setup(None, None, "fit")  # no process group yet: must do nothing
dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}", world_size=1, rank=0)
# The loop thread names itself once it runs, which on a loaded machine can be after
# init_process_group returns (in training, Lightning's barrier before `setup` waits on it).
deadline = time.monotonic() + 30
while "gloo_tcp_loop" not in (before := policies()) and time.monotonic() < deadline:
    time.sleep(0.01)
GlooPollingPriority().setup(None, None, "fit")
print(json.dumps({"before": before, "after": policies()}))
dist.destroy_process_group()
"""


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux-only")
def test_only_the_gloo_receive_thread_is_deprioritized(tmp_path: Path) -> None:
    job = subprocess.run(
        [sys.executable, "-c", CHECK, str(tmp_path / "store")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    policies = json.loads(job.stdout.strip().splitlines()[-1])
    assert policies["before"]["gloo_tcp_loop"] == [os.SCHED_OTHER]
    assert policies["after"]["gloo_tcp_loop"] == [os.SCHED_IDLE]
    others = {k: v for k, v in policies["after"].items() if k != "gloo_tcp_loop"}
    assert others and all(v == [os.SCHED_OTHER] for v in others.values()), others
