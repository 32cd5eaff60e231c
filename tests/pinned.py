"""What `pip install` of a Bento's pinned requirements would bring, read from this
environment: for the tests that run a Bento with only those, and the benchmark that sizes
them."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import Distribution, PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def pinned_distributions(requirements: list[str]) -> Iterator[Distribution]:
    """The installed distributions the pins name and everything they require, once each.
    Extras are not followed, as pip follows none for these pins."""
    seen: set[str] = set()
    pending = [Requirement(line).name for line in requirements if line and not line.startswith("-")]
    while pending:
        name = canonicalize_name(pending.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            installed = distribution(name)
        except PackageNotFoundError:  # a dependency of another platform
            continue
        yield installed
        for line in installed.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
