"""The offline drift report's statistics: the rules' thresholds, read back from rules.yml;
in-distribution records pass, shifted ones drift, too few are said to be too few (a real
service's log and MLflow run: test_monitoring_service)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np
import pytest

from mlops.errors import MonitorError
from mlops.monitoring import report as thresholds
from mlops.monitoring.reference import reference_profile
from mlops.monitoring.report import drift_report, parse_since, psi, report_html
from tests.test_prometheus_rules import RULES

RNG = np.random.default_rng(0)
X_TRAIN = RNG.normal(size=(4000, 3)).astype(np.float32)
Y_TRAIN = (X_TRAIN[:, 0] > 0).astype(int)


def probabilities(x: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-4 * x[:, 0]))
    return np.stack([1 - p, p], axis=1)


PROFILE = reference_profile(X_TRAIN, Y_TRAIN, X_TRAIN[:500], Y_TRAIN[:500], probabilities,
                            classes=[0, 1], features=["a", "b", "c"])  # fmt: skip


def answers(x: np.ndarray, start: float = 100.0) -> list[dict]:
    p = probabilities(x)
    return [{"kind": "prediction", "time": start + i, "request_id": f"r{i}", "index": 0,
             "input": row.tolist(), "label": int(p[i].argmax()), "confidence": float(p[i].max())}
            for i, row in enumerate(x)]  # fmt: skip


def findings(report: dict) -> dict[str, str]:
    return {f["check"]: f["status"] for f in report["findings"]}


def test_the_thresholds_are_the_rules() -> None:
    rules = (RULES / "rules.yml").read_text()
    alert = lambda name: rules.split(f"alert: {name}")[1].split("- alert:")[0]  # noqa: E731
    assert f"mlops:input_psi:1h > {thresholds.PSI_LIMIT}" in alert("MlopsInputDrift")
    assert f">= {thresholds.MIN_SAMPLES}" in alert("MlopsInputDrift")
    assert f"mlops:prediction_psi:1h > {thresholds.PSI_LIMIT}" in alert("MlopsPredictionShift")
    low = alert("MlopsLowConfidence")
    assert f"> {thresholds.LOW_CONFIDENCE_FACTOR:g} * " in low
    assert f"+ {thresholds.LOW_CONFIDENCE_MARGIN}" in low
    assert f">= {thresholds.MIN_SAMPLES}" in low
    under = re.search(r'bucket=~"([0-9.|]+)"', rules)[1].split("|")  # buckets under LOW_CONFIDENCE
    assert under == ["0", *(f"{e:g}" for e in PROFILE["confidence"]["edges"]
                            if e < thresholds.LOW_CONFIDENCE)]  # fmt: skip
    drop = alert("MlopsAccuracyDrop")
    assert f"- {thresholds.ACCURACY_DROP}" in drop and f">= {thresholds.MIN_LABELS}" in drop
    assert f"{thresholds.EMPTY_SHARE:g}".replace("1e-04", "0.0001") in rules


def test_in_distribution_passes_and_a_shift_drifts() -> None:
    same = drift_report(PROFILE, answers(RNG.normal(size=(1000, 3))), 0, 1e9)
    assert findings(same) == {"input PSI a": "ok", "input PSI b": "ok", "input PSI c": "ok",
                              "class mix PSI": "ok", "share under 0.9 confidence": "ok",
                              "live accuracy": "too few samples"}  # fmt: skip
    assert not same["drift"] and same["sampled_answers"] == 1000
    moved = RNG.normal(size=(1000, 3))
    moved[:, 1] += 1.0
    shifted = drift_report(PROFILE, answers(moved), 0, 1e9)
    assert findings(shifted)["input PSI b"] == "drift"
    assert findings(shifted)["input PSI a"] == "ok" and shifted["drift"]
    live_b = shifted["bins"]["b"]["live"]
    psi_b = next(f["value"] for f in shifted["findings"] if f["check"] == "input PSI b")
    assert psi_b == pytest.approx(psi(live_b, PROFILE["features"]["b"]["shares"]))
    assert "<b>yes</b>" in report_html("t", shifted) and "input PSI b" in report_html("t", same)


def test_too_few_samples_or_labels_judge_nothing_and_labels_give_live_accuracy() -> None:
    few = drift_report(PROFILE, answers(RNG.normal(size=(100, 3)) + 3), 0, 1e9)
    assert set(findings(few).values()) == {"too few samples"} and not few["drift"]
    records = answers(RNG.normal(size=(600, 3)))
    labels = [{"kind": "feedback", "time": 500.0 + i, "request_id": f"r{i}", "index": 0,
               "label": 0, "outcome": "correct" if i % 10 < 6 else "wrong"}
              for i in range(300)]  # fmt: skip
    labels.append({"kind": "feedback", "time": 900.0, "request_id": "x", "index": 0,
                   "label": 1, "outcome": "unknown"})  # fmt: skip
    report = drift_report(PROFILE, records + labels, 0, 1e9)
    accuracy = next(f for f in report["findings"] if f["check"] == "live accuracy")
    assert accuracy["value"] == pytest.approx(0.6) and accuracy["status"] == "drift"
    assert accuracy["limit"] == pytest.approx(PROFILE["confidence"]["accuracy"] - 0.05)
    assert report["labels"] == {"received": 301, "matched": 300, "correct": 180, "wrong": 120,
                                "unknown": 1, "of_sampled_answers": 300}  # fmt: skip
    window = drift_report(PROFILE, records + labels, 0, 399.5)  # the first 300 answers only
    assert window["sampled_answers"] == 300 and window["labels"]["received"] == 0


def test_since_takes_a_span_or_an_iso_time() -> None:
    now = 1_000_000.0
    assert parse_since("90m", now) == now - 5400 and parse_since("7d", now) == now - 7 * 86400
    assert parse_since("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    five = datetime(2026, 12, 1, 5, tzinfo=UTC).timestamp()
    assert parse_since("2026-12-01T06:00+01:00", now) == five
    with pytest.raises(MonitorError, match=r"--since 'yesterday' is neither a span \(90m"):
        parse_since("yesterday", now)
