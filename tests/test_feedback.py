"""Request ids that carry their answers' classes (mlops.monitoring.feedback), in-process;
test_serving sends feedback to a real service."""

from __future__ import annotations

import pytest

from mlops.monitoring.feedback import DAY_S, RequestIds, code_width

DIGITS = tuple(range(10))


def test_an_id_gives_back_each_samples_predicted_class() -> None:
    ids = RequestIds("digits/3/run", DIGITS, ttl_days=30)
    request_id = ids.issue([3, 9, 0])
    assert [ids.predicted(request_id, i) for i in range(3)] == [3, 9, 0]
    assert ids.predicted(request_id, 3) == "unknown"  # no fourth sample
    assert ids.issue([3]) != ids.issue([3])  # two answers of the same class: two ids


def test_named_classes_and_more_classes_than_one_character_holds() -> None:
    names = RequestIds("named/1/run", ("zero", "one"), ttl_days=1)
    assert names.predicted(names.issue(["one", "zero"]), 0) == 1
    many = tuple(range(1000))
    assert code_width(36) == 1 and code_width(37) == 2 and code_width(1000) == 2
    wide = RequestIds("imagenet/1/run", many, ttl_days=1)
    request_id = wide.issue([999, 0, 517])
    assert [wide.predicted(request_id, i) for i in range(3)] == [999, 0, 517]


@pytest.mark.parametrize(
    "changed",
    [
        lambda rid: rid[:-1] + ("0" if rid[-1] != "0" else "1"),  # digest changed
        lambda rid: rid.replace("-3-", "-4-"),  # the class changed: the digest no longer fits
        lambda rid: rid[:20],  # truncated
        lambda rid: "not an id",
        lambda rid: "",
    ],
)
def test_an_id_this_version_did_not_issue_is_unknown(changed) -> None:
    ids = RequestIds("digits/3/run", DIGITS, ttl_days=30)
    assert ids.predicted(changed(ids.issue([3])), 0) == "unknown"


def test_another_versions_id_is_unknown_and_an_old_one_expired() -> None:
    ids = RequestIds("digits/3/run", DIGITS, ttl_days=2)
    other = RequestIds("digits/4/run", DIGITS, ttl_days=2)
    assert ids.predicted(other.issue([3]), 0) == "unknown"
    issued = 1_800_000_000
    request_id = ids.issue([7], now=issued)
    assert ids.predicted(request_id, 0, now=issued + 2 * DAY_S - 1) == 7
    assert ids.predicted(request_id, 0, now=issued + 2 * DAY_S + 1) == "expired"
