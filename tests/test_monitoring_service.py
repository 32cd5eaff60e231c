"""A real Prometheus server (the one `make monitor` runs) scraping a real service with the
project's rules: the drift and live-accuracy figures it records, against the same figures
computed here from the service's own counters, and the alerts they raise."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from mlops.cli import main
from mlops.monitoring.payloads import read_payloads
from mlops.monitoring.prometheus import prepare_prometheus
from tests.conftest import ROOT
from tests.served import post, predict_with_id
from tests.servers import free_port, running_server
from tests.test_grafana_dashboard import queries, runnable
from tests.test_prometheus_rules import RULES, promtool


def query(prometheus: str, expr: str) -> dict[str, float]:
    """An instant query's result: the value per series, keyed by its labels' values (its
    name apart)."""
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return {",".join(v for k, v in row["metric"].items() if k != "__name__"): float(row["value"][1])
            for row in body["data"]["result"]}  # fmt: skip


def alerts(prometheus: str) -> dict[str, set[str]]:
    """Active alerts: alert name -> their states (pending, firing)."""
    with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=10) as response:
        active = json.loads(response.read())["data"]["alerts"]
    states: dict[str, set[str]] = {}
    for alert in active:
        states.setdefault(alert["labels"]["alertname"], set()).add(alert["state"])
    return states


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not after {timeout_s} s: {what}"
        time.sleep(0.5)


def psi(live: dict[str, float], reference: dict[str, float]) -> float:
    """The rules' PSI (empty bins clamped to 1e-4), computed here from raw counts."""
    total = sum(live.values())
    value = 0.0
    for bin_, expected in reference.items():
        actual = max(live.get(bin_, 0.0) / total, 1e-4)
        expected = max(expected, 1e-4)
        value += (actual - expected) * np.log(actual / expected)
    return value


def bin_counts(url: str, feature: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for line in urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode().splitlines():
        if line.startswith("mlops_input_bin_total{") and f'feature="{feature}"' in line:
            bin_ = line.split('bin="')[1].split('"')[0]
            counts[bin_] = counts.get(bin_, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


@pytest.fixture
def watched(servers, tmp_path: Path) -> Iterator[tuple[dict, str]]:
    """The CNN service and a Prometheus scraping it every second, once it has scraped."""
    served = servers("cnn")
    promtool()  # installs Debian's prometheus package (promtool and prometheus) if missing
    server = prepare_prometheus(
        served["url"], RULES / "rules.yml", tmp_path / "prometheus", free_port(),
        scrape_interval="1s", evaluation_interval="1s",
    )  # fmt: skip
    with running_server(server.command(), f"{server.url}/-/ready", tmp_path / "prometheus.log"):
        wait_for(lambda: bool(query(server.url, 'up{job="mlops"} == 1')),
                 "Prometheus scrapes the service")  # fmt: skip
        yield served, server.url


def test_prometheus_records_drift_and_live_accuracy_and_alerts_on_them(
    watched, digits_file: Path, tmp_path: Path, capsys
) -> None:
    """Test digits twice over: every component's PSI as computed here, under 0.2, no drift
    alert. Then digits moved one pixel to the right: PSI over 0.2 and MlopsInputDrift
    pending. Labels fed back for the first answers, 15 points under validation accuracy:
    Prometheus' live accuracy is theirs and MlopsAccuracyDrop pending. The Grafana
    dashboard's queries find these series; `mlops monitor report` of the payload log finds
    the same drift and accuracy, records them in MLflow and exits 3."""
    served, prometheus = watched
    url = served["url"]
    x = np.load(digits_file)["x_test"]
    features = ["pc1", "pc2", "pc3", "pc4"]
    reference = {f: {} for f in features}
    for line in urllib.request.urlopen(f"{url}/metrics", timeout=30).read().decode().splitlines():
        if line.startswith("mlops_reference_share{"):
            feature = line.split('feature="')[1].split('"')[0]
            reference[feature][line.split('bin="')[1].split('"')[0]] = float(line.split()[-1])
    before = {f: bin_counts(url, f) for f in features}

    answers: list[tuple[str, int, int]] = []  # request id, index, predicted class
    for start in range(0, 2 * len(x), 32):
        batch = np.concatenate([x, x])[start : start + 32]
        answer, request_id = predict_with_id(url, batch)
        answers += [(request_id, i, a["label"]) for i, a in enumerate(answer)]
    sent = len(answers)

    def samples() -> float:
        return min(query(prometheus, "mlops:input_samples:1h").values(), default=0.0)

    wait_for(lambda: samples() >= sent * 0.95, f"Prometheus counts the {sent} samples")
    recorded = query(prometheus, "mlops:input_psi:1h")
    expected = {f: psi({b: n - before[f].get(b, 0) for b, n in bin_counts(url, f).items()},
                       reference[f]) for f in features}  # fmt: skip
    assert recorded == pytest.approx(expected, rel=0.1, abs=0.01)
    assert max(recorded.values()) < 0.2, recorded
    time.sleep(2)  # two rule evaluations on these figures
    assert "MlopsInputDrift" not in alerts(prometheus)

    moved = np.roll(x, 1, axis=-1)
    moved[..., 0] = 0
    for _ in range(8):
        for start in range(0, len(moved), 64):
            assert post(url, {"inputs": moved[start : start + 64].tolist()})[0] == 200
    wait_for(lambda: samples() >= (sent + 8 * len(x)) * 0.95, "Prometheus counts the moved")
    wait_for(lambda: "pending" in alerts(prometheus).get("MlopsInputDrift", set()),
             "MlopsInputDrift pending")  # fmt: skip
    assert max(query(prometheus, "mlops:input_psi:1h").values()) > 0.2

    validation = query(prometheus, "max(mlops_reference_accuracy)")[""]
    right = max(0, round((validation - 0.15) * sent))
    items = [{"request_id": rid, "index": i, "label": label if n < right else (label + 1) % 10}
             for n, (rid, i, label) in enumerate(answers)]  # fmt: skip
    status, count = post(url, {"items": items}, "/feedback")
    assert status == 200 and count["matched"] == sent == count["received"], count

    def accuracy() -> dict[str, float]:
        return query(prometheus, "mlops:live_accuracy:1d")

    wait_for(lambda: bool(accuracy()) and query(prometheus, "mlops:feedback_labels:1d")[""]
             >= sent * 0.95, "Prometheus counts the labels")  # fmt: skip
    assert accuracy()[""] == pytest.approx(right / sent, abs=0.02)
    wait_for(lambda: "pending" in alerts(prometheus).get("MlopsAccuracyDrop", set()),
             "MlopsAccuracyDrop pending")  # fmt: skip
    assert "MlopsServiceDown" not in alerts(prometheus)

    # every query of the Grafana dashboard runs on this Prometheus and, but perhaps the
    # share of 5xx answers (empty until a 5xx series exists), finds series
    empty = {expr for expr in queries() if not query(prometheus, runnable(expr))}
    assert empty <= {"mlops:predict_error_share:10m"}, empty

    # the payload log (every answer: deploy.payload_sample_rate=1 here) and its offline
    # report agree with Prometheus, and the report exits 3 on the drift
    answered = sent + 8 * len(x)

    def logged(kind: str) -> int:
        records = read_payloads(served["payload_dir"], served["name"], served["version"])
        return sum(record["kind"] == kind for record in records)

    wait_for(lambda: logged("prediction") >= answered and logged("feedback") >= sent,
             "the workers write what they answered and were told")  # fmt: skip
    argv = ["monitor", "report", served["name"], "--since", "10m", "--config-dir",
            str(ROOT / "conf"), f"logger.tracking_uri={served['tracking_uri']}",
            f"paths.payload_dir={served['payload_dir']}"]  # fmt: skip
    assert main(argv) == 3
    out, err = capsys.readouterr()
    assert f"drift in {served['name']} version {served['version']}: input PSI" in err
    run_id = out.split("recorded in run ")[1].split()[0]
    client = MlflowClient(served["tracking_uri"])
    report = json.loads(Path(client.download_artifacts(run_id, "monitoring/report.json",
                                                       str(tmp_path))).read_text())  # fmt: skip
    assert report["sampled_answers"] == answered
    assert report["labels"]["matched"] == report["labels"]["of_sampled_answers"] == sent
    checks = {f["check"]: f for f in report["findings"]}
    assert checks["live accuracy"]["value"] == pytest.approx(right / sent)
    assert checks["live accuracy"]["status"] == "drift"
    assert max(checks[f"input PSI {f}"]["value"] for f in features) > 0.2
    assert client.get_run(run_id).data.metrics["monitor/live_accuracy"] == pytest.approx(
        right / sent
    )
    tags = client.get_model_version(served["name"], served["version"]).tags
    assert tags["monitoring.last_report_run_id"] == run_id
    assert tags["monitoring.last_report_drift"] == "true"
