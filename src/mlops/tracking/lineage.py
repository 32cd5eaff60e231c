"""Where a run came from: code version, data version, overrides. Recorded as MLflow tags on
the run and repeated on the registered model version, so either one answers "what made this?"."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import yaml

from mlops.messages import tell

UNKNOWN = "unknown"


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def git_state(root: Path) -> dict[str, str]:
    """Commit and whether the work tree differs from it (a dirty run is not reproducible
    from the commit alone, so say so)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"git.commit": UNKNOWN, "git.dirty": UNKNOWN}
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return {
        "git.commit": commit,
        "git.dirty": UNKNOWN if status is None else str(bool(status)).lower(),
    }


def dvc_data_hash(dvc_file: Path) -> str:
    """The md5 that `data.dvc` pins for the data directory (`unknown` if there is none)."""
    try:
        spec = yaml.safe_load(dvc_file.read_text())
        return str(spec["outs"][0]["md5"])
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return UNKNOWN


def file_md5(path: Path) -> str:
    """md5 of the exact file trained on: catches data that changed since `dvc add`."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


# pinned_file_md5's answer for a file inside a folder DVC tracks that the pinned version
# lacks (added to the folder since `dvc add`)
NOT_IN_PIN = "not in the pinned version"


def pinned_file_md5(root: Path, data_file: Path) -> str | None:
    """The md5 that DVC pins for `data_file` (read through DVC from the tracked folder's
    manifest in its cache); NOT_IN_PIN for a file inside a tracked folder that the pinned
    version does not have; None where DVC does not track the file, or its cache lacks the
    manifest (a fresh clone before `make data`)."""
    try:
        relative = data_file.resolve().relative_to(root.resolve())
    except ValueError:  # outside the project: not under its data.dvc
        return None
    try:
        from dvc.api import DVCFileSystem

        fs = DVCFileSystem(str(root))
        md5 = (fs.info(relative.as_posix()).get("dvc_info") or {}).get("md5")
        if md5 is not None:
            return md5
        for folder in relative.parents[:-1]:  # the project root itself is no tracked output
            if (fs.info(folder.as_posix()).get("dvc_info") or {}).get("md5") is not None:
                return NOT_IN_PIN
    except Exception:  # no DVC repo, an untracked path: DVC raises its own kinds
        return None
    return None


_WARNED: set[tuple[Path, str]] = set()


def pin_status(root: Path, data_file: Path, trained_md5: str) -> str:
    """`true` when the file read has the bytes data.dvc pins, `false` (with a warning) when
    it does not or the pinned version lacks it, `unknown` when DVC cannot say."""
    pinned = pinned_file_md5(root, data_file)
    if pinned is None:
        return UNKNOWN
    if pinned != trained_md5 and (data_file, trained_md5) not in _WARNED:
        _WARNED.add((data_file, trained_md5))  # once per process: the gate reads it again
        differs = (
            "is not in the version data.dvc pins (the file was added to a folder DVC tracks "
            "after `dvc add`)"
            if pinned == NOT_IN_PIN
            else f"differs from the version data.dvc pins (md5 {trained_md5}, pinned {pinned})"
        )
        tell(
            f"warning: {data_file} {differs}; the run records the file's md5 and "
            "data.matches_pin=false. To version this data: dvc add data && git add data.dvc "
            "&& git commit",
            warning=True,
        )
    return str(pinned == trained_md5).lower()


def lineage_tags(
    root: Path, dvc_file: Path, data_file: Path, overrides: list[str], model_family: str
) -> dict[str, str]:
    """All lineage tags; `mlflow.source.git.commit` makes the MLflow UI show the commit."""
    git = git_state(root)
    trained_md5 = file_md5(data_file)
    return {
        **git,
        "mlflow.source.git.commit": git["git.commit"],
        "data.dvc_md5": dvc_data_hash(dvc_file),
        "data.file": str(data_file),
        "data.file_md5": trained_md5,
        "data.matches_pin": pin_status(root, data_file, trained_md5),
        "hydra.overrides": " ".join(overrides) if overrides else "(none)",
        "model.family": model_family,
    }
