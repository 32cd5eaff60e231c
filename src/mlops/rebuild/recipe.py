"""What a registered version was made from, as its lineage tags record it: the commit, the
overrides, the exact data bytes. Enough to rebuild it, or refused with the reason."""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient

from mlops.errors import UpdateError
from mlops.registry.aliases import resolve_version

REQUIRED_TAGS = ("git.commit", "data.file", "data.file_md5", "hydra.overrides")
# overrides the rebuild sets itself: where the data, the store and the outputs are
SET_BY_REBUILD = ("data.path", "logger.tracking_uri", "register", "log_model", "ckpt_path")
# config keys that say where a run was (its folders), not how it trained
PLACED_UNDER = ("paths.", "hydra.")


def override_key(override: str) -> str:
    """`+trainer.x=1`, `~callbacks.y`, `seed=3` -> `trainer.x`, `callbacks.y`, `seed`."""
    return override.split("=", 1)[0].lstrip("+~")


def is_placement(key: str) -> bool:
    """Whether a config key says where things are (the store, the folders), not how to
    train: a rebuild or retrain sets these for itself, and never compares them."""
    return key == "logger.tracking_uri" or key.startswith(PLACED_UNDER)


@dataclass(frozen=True)
class Recipe:
    model_name: str
    version: str
    run_id: str
    commit: str
    data_file: str  # where the training read its data
    data_md5: str  # md5 of the bytes it read
    overrides: tuple[str, ...]  # the training's command-line overrides
    metrics: dict[str, float]


def recipe_of(
    client: MlflowClient, model_name: str, ref: str, need_clean_tree: bool = True
) -> Recipe:
    """The version's recipe; `need_clean_tree`: refuse one trained from uncommitted code
    (a rebuild needs its code; a retrain runs today's)."""
    version = resolve_version(client, model_name, ref)
    tags = dict(version.tags)
    required = REQUIRED_TAGS if need_clean_tree else REQUIRED_TAGS[1:]  # retrain: no commit
    missing = [tag for tag in required if not tags.get(tag) or tags[tag] == "unknown"]
    label = f"{model_name} version {version.version}"
    if missing or not version.run_id:
        raise UpdateError(f"{label} has no lineage to rebuild it from (missing tags: "
                          f"{', '.join(missing) or 'run_id'}): it was not trained by mlops "
                          "train in a git checkout; nothing was created")  # fmt: skip
    if need_clean_tree and tags.get("git.dirty") != "false":
        raise UpdateError(
            f"{label} was trained from a work tree with uncommitted changes (git.dirty="
            f"{tags.get('git.dirty', 'unknown')}): commit {tags['git.commit'][:12]} alone does "
            "not hold its code, so it cannot be rebuilt; nothing was created"
        )
    listed = tags["hydra.overrides"]
    overrides = () if listed == "(none)" else tuple(listed.split())
    return Recipe(
        model_name=model_name, version=str(version.version), run_id=version.run_id,
        commit=tags.get("git.commit", "unknown"), data_file=tags["data.file"],
        data_md5=tags["data.file_md5"], overrides=overrides,
        metrics=dict(client.get_run(version.run_id).data.metrics),
    )  # fmt: skip


def replayed_overrides(recipe: Recipe) -> list[str]:
    """The training's overrides less those the rebuild sets itself."""
    keys = [(o, override_key(o)) for o in recipe.overrides]
    return [o for o, key in keys if key not in SET_BY_REBUILD and not is_placement(key)]
