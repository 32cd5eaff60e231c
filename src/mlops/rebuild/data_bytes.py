"""The exact bytes a version was trained on, from DVC, never from whatever data/ holds now:
DVC's cache is addressed by each file's md5, the very hash a run records as data.file_md5;
where the cache lacks it, DVC fetches the file as the version's commit pins it (from the
remote). Whatever arrives is checked against that md5."""

from __future__ import annotations

import shutil
from pathlib import Path

from mlops.errors import UpdateError
from mlops.rebuild.recipe import Recipe
from mlops.tracking.lineage import file_md5


def cache_object(root: Path, md5: str) -> Path:
    """Where DVC 3 keeps a file of this md5 in the project's cache (.dvc/cache/files/md5)."""
    return root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _from_remote(root: Path, recipe: Recipe, destination: Path) -> str:
    """Fetch the file through DVC as `recipe.commit` tracks it; the reason when it cannot."""
    trained_on = Path(recipe.data_file)  # relative: to the project root it was trained in
    trained_on = trained_on if trained_on.is_absolute() else root / trained_on
    try:
        relative = trained_on.resolve().relative_to(root.resolve())
    except ValueError:
        return f"{recipe.data_file} is outside the project, so no data.dvc of it tracks it"
    try:
        from dvc.api import DVCFileSystem

        DVCFileSystem(str(root), rev=recipe.commit).get_file(relative.as_posix(), str(destination))
    except Exception as error:  # DVC raises its own kinds for a file it cannot get
        return (
            f"DVC cannot fetch {relative} at commit {recipe.commit[:12]} ({type(error).__name__})"
        )
    return ""


def training_bytes(root: Path, recipe: Recipe, folder: Path) -> Path:
    """A copy of the version's training file in `folder`, under its own name, with the
    md5 its run recorded; UpdateError naming where it looked when the bytes are gone."""
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / Path(recipe.data_file).name
    cached = cache_object(root, recipe.data_md5)
    if cached.is_file():
        shutil.copyfile(cached, destination)
        why = ""
    else:
        why = _from_remote(root, recipe, destination)
    if not why and (arrived := file_md5(destination)) != recipe.data_md5:
        why = f"the bytes DVC gave have md5 {arrived}"
    if why:
        destination.unlink(missing_ok=True)
        raise UpdateError(
            f"{recipe.model_name} version {recipe.version} was trained on {recipe.data_file} "
            f"with md5 {recipe.data_md5}: those bytes are not in the DVC cache ({cached}) and "
            f"{why}; `dvc pull` them from the remote that has them, or they are lost. "
            "Nothing was created"
        )
    return destination
