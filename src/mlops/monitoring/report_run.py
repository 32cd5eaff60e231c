"""`mlops monitor report`: a version's drift report over a window of its payload log, as
an MLflow run beside the version's training run (JSON and HTML artifacts, a metric per
figure), linked from the version's tags."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.entities.model_registry import ModelVersion

from mlops.errors import MonitorError
from mlops.monitoring.payloads import read_payloads
from mlops.monitoring.reference import load_reference
from mlops.monitoring.report import drift_report, report_html


@dataclass(frozen=True)
class ReportRun:
    run_id: str
    report: dict


def findings_table(title: str, report: dict):
    """The findings as a table for the terminal."""
    from rich.table import Table

    since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report["since"]))
    table = Table(title=f"{title}: {report['sampled_answers']} sampled answers, "
                        f"{report['labels']['matched']} labels, since {since}")  # fmt: skip
    for column in ("check", "value", "limit", "samples", "status"):
        table.add_column(column)
    for f in report["findings"]:
        value = "-" if f["value"] is None else f"{f['value']:.4f}"
        limit = f"{'>' if f['above_is_bad'] else '<'} {f['limit']:.4f}"
        table.add_row(f["check"], value, limit, f"{f['samples']}/{f['min_samples']}", f["status"])
    return table


def metric_name(check: str) -> str:
    return "monitor/" + "".join(c if c.isalnum() else "_" for c in check).strip("_")


def monitor_report(
    client: MlflowClient, version: ModelVersion, payload_dir: Path, since: float,
    until: float | None = None,
) -> ReportRun:  # fmt: skip
    """Read the version's payloads logged since `since`, judge them against its reference
    profile, and record the report as a run."""
    name, number = version.name, str(version.version)
    profile, why = load_reference(client, version)
    if profile is None:
        raise MonitorError(f"{name} version {number} has no reference profile ({why}): "
                           "train and register it again to monitor it")  # fmt: skip
    if not Path(payload_dir).is_dir():
        raise MonitorError(
            f"no payload log at {payload_dir}: serve the version with "
            "deploy.payload_sample_rate above 0 (the default logs 1%), or pass --payload-dir"
        )
    until = time.time() if until is None else until
    report = drift_report(profile, read_payloads(payload_dir, name, number), since, until)
    experiment_id = client.get_run(version.run_id).info.experiment_id
    run = client.create_run(
        experiment_id,
        run_name=f"monitor {name} v{number}",
        tags={
            "mlops.run_type": "monitoring",
            "model.name": name,
            "model.version": number,
            "model.uri": f"models:/{name}/{number}",
            "monitoring.payload_dir": str(Path(payload_dir).resolve()),
            "monitoring.drift": str(report["drift"]).lower(),
        },
    )
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    figures = {"monitor/sampled_answers": report["sampled_answers"],
               "monitor/labels_matched": report["labels"]["matched"]}  # fmt: skip
    figures |= {metric_name(f["check"]): f["value"] for f in report["findings"]
                if f["value"] is not None}  # fmt: skip
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in figures.items()])
    for key, value in {"since": since, "until": until}.items():
        client.log_param(run_id, key, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value)))
    title = f"{name} version {number}: drift report"
    with tempfile.TemporaryDirectory(prefix="mlops-monitor-") as folder:
        (Path(folder) / "report.json").write_text(json.dumps(report, indent=2))
        (Path(folder) / "report.html").write_text(report_html(title, report))
        client.log_artifacts(run_id, folder, "monitoring")
    client.set_terminated(run_id)
    for key, value in {
        "monitoring.last_report_run_id": run_id,
        "monitoring.last_report_drift": str(report["drift"]).lower(),
    }.items():
        client.set_model_version_tag(name, number, key, value)  # fmt: skip
    return ReportRun(run_id, report)
