"""DVC: the built-in data written here has exactly the bytes data.dvc pins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dvc.repo import Repo

from mlops.data.builtin import write_builtin_datasets
from mlops.data.versioning import check_against_pin
from mlops.tracking.lineage import dvc_data_hash, file_md5, pin_status
from tests.conftest import ROOT


def test_make_data_reproduces_the_pinned_bytes() -> None:
    write_builtin_datasets(ROOT / "data")  # what `make data` does; same bytes, so harmless
    check = check_against_pin(ROOT / "data.dvc")
    assert check.matches, check.describe(ROOT / "data.dvc")
    with Repo(str(ROOT)) as repo:  # the cache is filled, so DVC itself agrees
        assert repo.status(targets=["data.dvc"]) == {}
    digits = ROOT / "data" / "digits" / "digits.npz"  # what runs of the default config read
    assert pin_status(ROOT, digits, file_md5(digits)) == "true"


def dvc_project(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    with Repo.init(str(tmp_path)) as repo:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "a.txt").write_text("pinned")
        repo.add(str(tmp_path / "data"))
    shutil.rmtree(tmp_path / ".dvc" / "cache")  # as in a fresh clone
    return tmp_path / "data.dvc"


def test_pin_check_fills_an_empty_cache_when_bytes_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dvc_file = dvc_project(tmp_path)
    monkeypatch.chdir(tmp_path)  # DVC's status resolves outputs from the working directory
    check = check_against_pin(dvc_file)
    assert check.matches
    with Repo(str(tmp_path)) as repo:
        assert repo.status(targets=["data.dvc"]) == {}


def test_pin_check_reports_changed_data_and_keeps_the_pin(tmp_path: Path) -> None:
    dvc_file = dvc_project(tmp_path)
    pinned = dvc_file.read_text()
    (tmp_path / "data" / "a.txt").write_text("changed")
    check = check_against_pin(dvc_file)
    assert not check.matches
    assert check.pinned_md5 != check.workspace_md5
    assert dvc_file.read_text() == pinned
    assert "dvc add data" in check.describe(dvc_file)


@pytest.mark.parametrize("data", ["pinned", "changed"])
def test_pin_check_leaves_the_pin_older_than_the_data(tmp_path: Path, data: str) -> None:
    """`make` prepares the data again whenever data.dvc is newer than the data file."""
    dvc_file = dvc_project(tmp_path)
    os.utime(dvc_file, ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "data" / "a.txt").write_text(data)
    check_against_pin(dvc_file)
    assert dvc_file.stat().st_mtime_ns == 1_000_000_000
    assert dvc_file.stat().st_mtime < (tmp_path / "data" / "a.txt").stat().st_mtime


def test_dvc_remote_is_a_local_directory() -> None:
    with Repo(str(ROOT)) as repo:
        remote = repo.config["core"]["remote"]
        assert Path(repo.config["remote"][remote]["url"]).name == ".dvc-storage"


def test_data_hash_reads_the_pinned_md5(tmp_path: Path) -> None:
    assert dvc_data_hash(ROOT / "data.dvc").endswith(".dir")
    assert dvc_data_hash(tmp_path / "missing.dvc") == "unknown"


def test_cli_prepares_data(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops.cli",
            "data",
            "prepare",
            "--data-dir",
            str(tmp_path),
            "--dvc-file",
            str(tmp_path / "none.dvc"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "digits" / "digits.npz").read_bytes() == (
        ROOT / "data" / "digits" / "digits.npz"
    ).read_bytes()


def test_runs_say_whether_they_trained_on_the_pinned_bytes(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    dvc_file = dvc_project(project)
    data = project / "data" / "a.txt"
    assert pin_status(project, data, file_md5(data)) == "unknown"  # no manifest in the cache
    check_against_pin(dvc_file)  # what `make data` does: fills the cache
    assert pin_status(project, data, file_md5(data)) == "true"
    data.write_text("changed")
    assert pin_status(project, data, file_md5(data)) == "false"
    assert "a.txt differs from the version data.dvc pins" in capsys.readouterr().err
    for added in (project / "data" / "new.csv", project / "data" / "new" / "b.csv"):
        added.parent.mkdir(exist_ok=True)  # a user's own file, put into the tracked folder
        added.write_text("label\n1\n")
        assert pin_status(project, added, file_md5(added)) == "false"
        assert f"{added} is not in the version data.dvc pins" in capsys.readouterr().err
    elsewhere = project / "notes" / "c.csv"  # in the project, in no folder DVC tracks
    elsewhere.parent.mkdir()
    elsewhere.write_text("label\n1\n")
    assert pin_status(project, elsewhere, file_md5(elsewhere)) == "unknown"
    outside = tmp_path / "elsewhere.txt"  # e.g. data.path=/some/file.csv
    outside.write_text("pinned")
    assert pin_status(project, outside, file_md5(outside)) == "unknown"
