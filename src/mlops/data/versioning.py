"""Compare data/ with the version data.dvc pins, through DVC itself.

A fresh clone has an empty DVC cache, where `dvc status` answers "not in cache" whether or
not the bytes match. `dvc commit` hashes the workspace and fills the cache: if data.dvc comes
out unchanged, the bytes are exactly the pinned ones (and `dvc push` has what it needs); if
it changed, the pin is restored and the mismatch reported, never silently re-pinned.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from mlops.tracking.lineage import dvc_data_hash


@dataclass(frozen=True)
class PinCheck:
    matches: bool
    pinned_md5: str
    workspace_md5: str

    def describe(self, dvc_file: Path) -> str:
        if self.matches:
            return f"data matches {dvc_file} (md5 {self.pinned_md5}); DVC cache is filled"
        return (
            f"data differs from the version pinned in {dvc_file} (pinned md5 "
            f"{self.pinned_md5}, workspace {self.workspace_md5}). Runs record the workspace "
            f"file's md5. To version this data: dvc add data && git add {dvc_file} && git commit"
        )


def check_against_pin(dvc_file: Path) -> PinCheck:
    """Hash the tracked data with `dvc commit`, keeping data.dvc as it was, modification
    time included: `dvc commit` rewrites the file even when nothing changed, and a newer
    data.dvc tells `make` that the data needs preparing again."""
    from dvc.repo import Repo

    pinned, pinned_stat = dvc_file.read_text(), dvc_file.stat()
    root = dvc_file.resolve().parent
    with contextlib.chdir(root), Repo(str(root)) as repo:  # DVC resolves some paths from cwd
        repo.commit(dvc_file.name, force=True)
    workspace_md5 = dvc_data_hash(dvc_file)
    if dvc_file.read_text() != pinned:
        dvc_file.write_text(pinned)
    os.utime(dvc_file, ns=(pinned_stat.st_atime_ns, pinned_stat.st_mtime_ns))
    pinned_md5 = dvc_data_hash(dvc_file)
    return PinCheck(workspace_md5 == pinned_md5, pinned_md5, workspace_md5)
