"""The model a Bento serves, as `make deploy` built it: the sha256 of every file the
workers load (the stored model, the compiled forward pass, the reference profile),
recorded in deployment.json and checked by each worker before it loads anything, so a
tampered or truncated file is never answered from."""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL = "model"  # prefix of the stored model's files; "src" for the Bento's own folder


def sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def file_digests(model_dir: Path, src_dir: Path, src_files: list[str]) -> dict[str, str]:
    """`model/<path>` for every file of the stored model, `src/<name>` for each named file
    of the build context."""
    digests = {f"{MODEL}/{p.relative_to(model_dir).as_posix()}": sha256(p)
               for p in sorted(model_dir.rglob("*")) if p.is_file()}  # fmt: skip
    digests |= {f"src/{name}": sha256(src_dir / name) for name in src_files}
    return digests


class ModelChanged(RuntimeError):
    """A file the worker would load is not the one `make deploy` recorded."""


def verify(recorded: dict[str, str], model_dir: Path, src_dir: Path) -> None:
    """Raise ModelChanged naming the first file that is missing or differs."""
    for name, expected in recorded.items():
        prefix, _, relative = name.partition("/")
        path = (model_dir if prefix == MODEL else src_dir) / relative
        if not path.is_file():
            raise ModelChanged(f"{name} is missing from the Bento ({path}): refusing to "
                               "serve; redeploy the version (make deploy)")  # fmt: skip
        found = sha256(path)
        if found != expected:
            raise ModelChanged(
                f"{name} changed since make deploy (sha256 {found[:12]}..., recorded "
                f"{expected[:12]}...): refusing to serve it; redeploy the version (make deploy)"
            )
