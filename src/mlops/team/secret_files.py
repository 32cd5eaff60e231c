"""Files that hold the team stack's secrets (passwords, keys, configs quoting them): created
readable by this user only, before anything is written into them."""

from __future__ import annotations

import secrets
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)


def read_or_create_secret(path: Path, length: int = 24) -> str:
    """The secret kept in `path`, generated on first use."""
    if not path.is_file():
        write_private(path, secrets.token_urlsafe(length) + "\n")
    return path.read_text().strip()
