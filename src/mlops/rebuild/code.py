"""The code a version was trained with: the checkout itself when it is at that commit with
no changes, else a clean worktree of the commit, removed afterwards."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from mlops.errors import UpdateError


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)


def is_checkout_at(root: Path, commit: str) -> bool:
    head = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no")
    return head.returncode == 0 and head.stdout.strip() == commit and not status.stdout.strip()


@contextlib.contextmanager
def code_at(root: Path, commit: str, folder: Path) -> Iterator[Path]:
    """The folder holding the project's code at `commit`."""
    if is_checkout_at(root, commit):
        yield root
        return
    if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise UpdateError(f"commit {commit[:12]} is not in the repository at {root}: `git fetch` "
                          "the branch that has it; nothing was created")  # fmt: skip
    worktree = folder / "code"
    added = _git(root, "worktree", "add", "--detach", str(worktree), commit)
    if added.returncode != 0:
        raise UpdateError(f"git worktree add of {commit[:12]} failed: {added.stderr.strip()}")
    try:
        yield worktree
    finally:
        _git(root, "worktree", "remove", "--force", str(worktree))
