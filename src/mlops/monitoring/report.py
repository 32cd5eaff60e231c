"""An offline drift report of one served version: its payload log (sampled inputs and
answers, fed-back labels) against its reference profile, with the thresholds and
minimum-sample guards of monitoring/prometheus/rules.yml, so a cron job and the alerts
agree. The profile holds the whole training split's bins, so nothing is recomputed from
raw training data."""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np

from mlops.errors import MonitorError
from mlops.monitoring.binning import ProfileBins

# the rules' thresholds (tests/test_monitoring_report.py reads them back from rules.yml)
PSI_LIMIT = 0.2  # MlopsInputDrift, MlopsPredictionShift
MIN_SAMPLES = 500  # their guard, and MlopsLowConfidence's
LOW_CONFIDENCE = 0.9  # an answer under this top-1 probability is unsure
LOW_CONFIDENCE_FACTOR, LOW_CONFIDENCE_MARGIN = 2.0, 0.05  # MlopsLowConfidence: > 2x + 0.05
ACCURACY_DROP = 0.05  # MlopsAccuracyDrop: live accuracy 5 points under validation's
MIN_LABELS = 200  # its guard
EMPTY_SHARE = 1e-4  # an empty bin's share, so that PSI stays finite


def psi(counts: Sequence[float], reference: Sequence[float]) -> float:
    """Population stability index of live counts against reference shares, as the rules
    compute it (both sides clamped to EMPTY_SHARE)."""
    live = np.maximum(np.asarray(counts, dtype=np.float64) / max(sum(counts), 1), EMPTY_SHARE)
    expected = np.maximum(np.asarray(reference, dtype=np.float64), EMPTY_SHARE)
    return float(((live - expected) * np.log(live / expected)).sum())


@dataclass(frozen=True)
class Finding:
    """One check: its figure, the limit it is held to, and whether enough was seen."""

    check: str
    value: float | None
    limit: float
    samples: int
    min_samples: int
    above_is_bad: bool = True

    @property
    def status(self) -> str:
        if self.value is None or self.samples < self.min_samples:
            return "too few samples"
        bad = self.value > self.limit if self.above_is_bad else self.value < self.limit
        return "drift" if bad else "ok"


def parse_since(text: str, now: float) -> float:
    """A start time: a span back from now (`90m`, `12h`, `7d`) or an ISO date or time
    (`2026-12-01`, `2026-12-01T06:00`, UTC unless it says otherwise)."""
    span = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([mhd])", text.strip())
    if span:
        return now - float(span[1]) * {"m": 60, "h": 3600, "d": 86400}[span[2]]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MonitorError(
            f"--since {text!r} is neither a span (90m, 12h, 7d) nor an ISO date or time "
            "(2026-12-01, 2026-12-01T06:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def drift_report(profile: dict, records: Iterable[dict], since: float, until: float) -> dict:
    """The findings over the records logged from `since` to `until` (epoch seconds)."""
    answers, labels = [], []
    for record in records:
        if since <= record.get("time", 0) <= until:
            (answers if record.get("kind") == "prediction" else labels).append(record)
    bins = ProfileBins(profile)
    findings: list[Finding] = []
    counts: dict[str, list[int]] = {}
    if answers:
        inputs = np.asarray([record["input"] for record in answers], dtype=np.float32)
        values = bins.values(inputs)
        for name, feature_counts in zip(bins.names, bins.bin_counts(values), strict=True):
            counts[name] = feature_counts.tolist()
    for name, shares in zip(bins.names, bins.shares, strict=True):
        value = psi(counts[name], shares) if name in counts else None
        findings.append(Finding(f"input PSI {name}", value, PSI_LIMIT, len(answers), MIN_SAMPLES))

    priors = profile["class_priors"]
    served = Counter(str(record["label"]) for record in answers)
    mix = [served.get(label, 0) for label in priors]
    findings.append(Finding("class mix PSI", psi(mix, list(priors.values())) if answers else None,
                            PSI_LIMIT, len(answers), MIN_SAMPLES))  # fmt: skip

    lower_edges = [0.0, *profile["confidence"]["edges"]]
    unsure = [i for i, edge in enumerate(lower_edges) if edge < LOW_CONFIDENCE]
    reference_unsure = sum(profile["confidence"]["shares"][i] for i in unsure)
    top = np.asarray([record["confidence"] for record in answers], dtype=np.float32)
    share = float((top < LOW_CONFIDENCE).mean()) if answers else None
    findings.append(Finding(
        f"share under {LOW_CONFIDENCE} confidence", share,
        LOW_CONFIDENCE_FACTOR * reference_unsure + LOW_CONFIDENCE_MARGIN,
        len(answers), MIN_SAMPLES,
    ))  # fmt: skip

    outcomes = Counter(record["outcome"] for record in labels)
    judged = outcomes["correct"] + outcomes["wrong"]
    accuracy = outcomes["correct"] / judged if judged else None
    validation = profile["confidence"]["accuracy"]
    findings.append(Finding("live accuracy", accuracy, validation - ACCURACY_DROP, judged,
                            MIN_LABELS, above_is_bad=False))  # fmt: skip

    sampled = {(record["request_id"], record["index"]) for record in answers}
    joined = sum((record["request_id"], record["index"]) in sampled for record in labels)
    return {
        "since": since, "until": until,
        "sampled_answers": len(answers),
        "labels": {"received": len(labels), "matched": judged, **dict(outcomes),
                   "of_sampled_answers": joined},
        "reference": {"accuracy": validation, "low_confidence_share": reference_unsure,
                      "training_samples": profile.get("samples")},
        "findings": [{**asdict(f), "status": f.status} for f in findings],
        "bins": {name: {"live": counts.get(name, []), "training": shares}
                 for name, shares in zip(bins.names, bins.shares, strict=True)},
        "drift": any(f.status == "drift" for f in findings),
    }  # fmt: skip


def report_html(title: str, report: dict) -> str:
    """The report as one self-contained page: the findings, then each feature's bins."""
    colour = {"drift": "#f8d7da", "ok": "#d4edda", "too few samples": "#eeeeee"}
    rows = ""
    for f in report["findings"]:
        value = "" if f["value"] is None else f"{f['value']:.4f}"
        bad = "&gt;" if f["above_is_bad"] else "&lt;"
        rows += (f"<tr style='background:{colour[f['status']]}'><td>{html.escape(f['check'])}"
                 f"</td><td>{value}</td><td>{bad} {f['limit']:.4f}</td><td>{f['samples']} "
                 f"(needs {f['min_samples']})</td><td>{f['status']}</td></tr>")  # fmt: skip
    features = ""
    for name, shares in report["bins"].items():
        total = max(sum(shares["live"]), 1)
        cells = "".join(
            f"<tr><td>{i}</td><td>{(shares['live'][i] / total if shares['live'] else 0):.3f}"
            f"</td><td>{training:.3f}</td></tr>"
            for i, training in enumerate(shares["training"])
        )
        features += (f"<h3>{html.escape(name)}</h3><table><tr><th>bin</th><th>live share</th>"
                     f"<th>training share</th></tr>{cells}</table>")  # fmt: skip
    labels = report["labels"]
    window = " to ".join(
        datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")
        for t in (report["since"], report["until"])
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 10px;"
        "border-bottom:1px solid #ccc;text-align:left}table{border-collapse:collapse}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>{window}: "
        f"{report['sampled_answers']} sampled answers, {labels['received']} labels fed back "
        f"({labels['matched']} matched). Drift: <b>{'yes' if report['drift'] else 'no'}</b>."
        "</p><table><tr><th>check</th><th>value</th><th>limit</th><th>samples</th>"
        f"<th>status</th></tr>{rows}</table><h2>Bins</h2>{features}</body></html>"
    )
