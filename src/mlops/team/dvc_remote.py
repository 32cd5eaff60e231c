"""The team's DVC remote for data/: a prefix of the stack's S3 bucket, so `dvc push` and
`dvc pull` move the data versions a run's lineage names between team members. The remote's
address and endpoint go in .dvc/config (committed: everyone uses the same remote), its
credentials in .dvc/config.local, which DVC keeps out of git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlops.errors import TeamError


def dvc_command(repo: Path, *arguments: str) -> str:
    dvc = Path(sys.executable).parent / "dvc"
    done = subprocess.run(
        [str(dvc) if dvc.is_file() else "dvc", *arguments],
        cwd=repo, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0:
        raise TeamError(f"dvc {' '.join(arguments[:3])} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def configure_remote(
    repo: Path,
    name: str,
    url: str,
    endpoint_url: str,
    access_key: str | None = None,
    secret_key: str | None = None,
) -> None:
    """Make `name` (an s3:// URL on `endpoint_url`) the project's default DVC remote."""
    if not (repo / ".dvc").is_dir():
        raise TeamError(f"{repo} is not a DVC project (no .dvc/): run dvc init there first")
    dvc_command(repo, "remote", "add", "--force", "--default", name, url)
    dvc_command(repo, "remote", "modify", name, "endpointurl", endpoint_url)
    if access_key and secret_key:
        dvc_command(repo, "remote", "modify", "--local", name, "access_key_id", access_key)
        dvc_command(repo, "remote", "modify", "--local", name, "secret_access_key", secret_key)
