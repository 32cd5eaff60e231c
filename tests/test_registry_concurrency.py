"""Concurrent trainings and promotions against one store: the lock keeps aliases and
history consistent."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from mlops.registry.history import AliasMove, read_history
from mlops.registry.lock import lock_name
from pipelines.train import train
from tests.conftest import FAST, KNOWN_CHATTER, ROOT
from tests.registry_helpers import WEAK


def assert_history_replays_to(history: list[AliasMove], aliases: dict[str, str]) -> None:
    """Each move starts where the previous move of its alias ended; the end state is now."""
    assert [m.seq for m in history] == list(range(1, len(history) + 1))
    state: dict[str, str] = {}
    for move in history:
        assert move.from_version == state.get(move.alias), move
        state[move.alias] = move.to_version
    assert state == aliases


def current_aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {a: str(v) for a, v in client.get_registered_model(name).aliases.items()}


def test_two_trainings_finishing_at_once(tmp_path: Path, digits_file: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    name = "concurrent-test"
    MlflowClient(uri).search_experiments()  # create the schema once, not in both at once

    def launch(index: int) -> subprocess.Popen:
        out = tmp_path / f"job{index}"
        return subprocess.Popen(
            [sys.executable, str(ROOT / "pipelines" / "train.py"), *FAST,
             "model=mlp",
             f"data.path={digits_file}", f"logger.tracking_uri={uri}",
             f"registry.model_name={name}",
             f"paths.mlflow_artifacts_dir={tmp_path / 'mlartifacts'}", f"hydra.run.dir={out}",
             f"seed={index}"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    jobs = [launch(i) for i in (1, 2)]
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    chatter = [line for line in KNOWN_CHATTER for output in outputs if line in output]
    assert not chatter, f"library chatter on the console of make train: {chatter}"

    client = MlflowClient(uri)
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{name}'"))
    assert [str(v) for v in versions] == ["1", "2"]
    aliases = current_aliases(client, name)
    assert aliases["champion"] in {"1", "2"}
    history = read_history(client, name)
    assert_history_replays_to(history, aliases)
    assert sorted(m.to_version for m in history if m.alias == "challenger") == ["1", "2"]
    assert not [m for m in client.search_registered_models() if m.name == lock_name(name)]


PROMOTE_LOOP = """
import sys, time
from mlflow import MlflowClient
from mlops.registry.aliases import promote
client = MlflowClient(sys.argv[1])
client.get_registered_model(sys.argv[2])
time.sleep(max(0.0, float(sys.argv[4]) - time.time()))  # both workers start together
for i in range(ROUNDS):
    promote(client, sys.argv[2], sys.argv[3], reason=f"worker {sys.argv[3]} round {i}")
"""
ROUNDS = 15


def test_concurrent_promotions_keep_history_consistent(make_cfg, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'promote.db'}"
    name = "promote-race"
    for _ in range(2):
        train(make_cfg(*WEAK, f"logger.tracking_uri={uri}", f"registry.model_name={name}"))
    start_at = str(time.time() + 12)  # after both have imported mlflow
    script = PROMOTE_LOOP.replace("ROUNDS", str(ROUNDS))
    jobs = [
        subprocess.Popen([sys.executable, "-c", script, uri, name, version, start_at], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for version in ("1", "2")
    ]  # fmt: skip
    outputs = [job.communicate(timeout=300)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    chatter = [line for line in KNOWN_CHATTER for output in outputs if line in output]
    assert not chatter, f"library chatter on the console of make train: {chatter}"

    client = MlflowClient(uri)
    history = read_history(client, name)
    assert len([m for m in history if m.kind == "manual"]) == 2 * ROUNDS
    assert_history_replays_to(history, current_aliases(client, name))
