"""docs/config.md against conf/: every option and every key a user can set is documented,
so a key added to the config cannot ship without its line in the reference."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONFIG_DIR, ROOT

REFERENCE = (ROOT / "docs" / "config.md").read_text()
# config files that are not a key reference: Hydra's own settings and `@package _global_`
# presets, which set keys documented where they belong
NOT_REFERENCE = {"hydra", "experiment", "hparams_search"}
HYDRA_KEYS = {"defaults", "_target_", "_partial_", "_recursive_", "_convert_"}


def group_files() -> list[Path]:
    return sorted(
        path for path in CONFIG_DIR.glob("*/*.yaml") if path.parent.name not in NOT_REFERENCE
    )


def settable_keys(node: dict, prefix: str = "") -> Iterator[str]:
    """Dotted paths of the leaves a user overrides. A node that builds one of Lightning's
    callbacks takes that class's own arguments, which Lightning documents; the reference
    says what each callback is for."""
    if str(node.get("_target_", "")).startswith("lightning.pytorch.callbacks."):
        return
    for key, value in node.items():
        if key in HYDRA_KEYS:
            continue
        if isinstance(value, dict):
            yield from settable_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def documented_names() -> set[str]:
    """Every name written as code in the reference: `batch_size`, and each part of
    `val_fraction, test_fraction` or `trainer.devices=4`."""
    names = set()
    for code in re.findall(r"`([^`\n]+)`", REFERENCE):
        names.add(code)
        names.update(part for part in re.split(r"[^\w]+", code) if part)
    return names


@pytest.mark.parametrize("path", group_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_settable_key_is_in_the_config_reference(path: Path) -> None:
    names = documented_names()
    keys = list(settable_keys(yaml.safe_load(path.read_text()) or {}))
    missing = [key for key in keys if key not in names and key.rsplit(".", 1)[-1] not in names]
    assert not missing, f"{path.relative_to(ROOT)}: {missing} not in docs/config.md"


def test_every_group_option_is_in_the_groups_table() -> None:
    """...or, for a group composed of several options (`callbacks`), in a table of its own."""
    rows = {
        match[0]: match[1]
        for match in re.findall(r"^\| `(\w+)` \| ([^|]+) \|", REFERENCE, flags=re.M)
    }
    for group in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        options = sorted(path.stem for path in group.glob("*.yaml"))
        assert group.name in rows, f"group {group.name} has no row in docs/config.md's table"
        listed = set(re.findall(r"`(\w+)`", rows[group.name]))
        unlisted = [option for option in options if option not in listed | rows.keys()]
        assert not unlisted, f"{group.name}: options {unlisted} not in docs/config.md's table"
