"""DVC: the built-in data written here has exactly the bytes data.dvc pins."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dvc.repo import Repo

from mlops.data.builtin import write_builtin_datasets
from mlops.tracking.lineage import dvc_data_hash
from tests.conftest import ROOT


def test_make_data_reproduces_the_pinned_bytes() -> None:
    write_builtin_datasets(ROOT / "data")  # what `make data` does; same bytes, so harmless
    with Repo(str(ROOT)) as repo:
        assert repo.status(targets=["data.dvc"]) == {}


def test_dvc_remote_is_a_local_directory() -> None:
    with Repo(str(ROOT)) as repo:
        remote = repo.config["core"]["remote"]
        assert Path(repo.config["remote"][remote]["url"]).name == ".dvc-storage"


def test_data_hash_reads_the_pinned_md5(tmp_path: Path) -> None:
    assert dvc_data_hash(ROOT / "data.dvc").endswith(".dir")
    assert dvc_data_hash(tmp_path / "missing.dvc") == "unknown"


def test_cli_prepares_data(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "data", "prepare", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "digits" / "digits.npz").read_bytes() == (
        ROOT / "data" / "digits" / "digits.npz"
    ).read_bytes()
