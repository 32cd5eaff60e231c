"""monitoring/prometheus/rules.yml, checked and unit-tested by Prometheus' own promtool
(Debian's package, installed here when missing), and read against what the service
exports."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

RULES = ROOT / "monitoring" / "prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:  # root on these machines: the test set-up installs it, as make bench wrk
        subprocess.run(["apt-get", "install", "-y", "-qq", "prometheus"], check=False,
                       capture_output=True, timeout=600)  # fmt: skip
        found = shutil.which("promtool")
    assert found, "promtool is missing and `apt-get install prometheus` did not provide it"
    return found


def rules_metric_names() -> set[str]:
    """The service's metrics the rules read (recorded series have a colon: not these)."""
    text = (RULES / "rules.yml").read_text()
    return set(re.findall(r"\bmlops_[a-z_]+\b", text))


@pytest.mark.parametrize("command", [["check", "rules", "rules.yml"],
                                     ["test", "rules", "rules_test.yml"]])  # fmt: skip
def test_the_rules_are_valid_and_every_alert_fires_as_its_unit_test_says(command) -> None:
    job = subprocess.run([promtool(), *command], cwd=RULES, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    assert "SUCCESS" in job.stdout


def declared_metric_names() -> set[str]:
    """What the service's code creates: counters (with Prometheus' _total), gauges and
    histograms."""
    code = ROOT / "src" / "mlops"
    files = ("monitoring/live.py", "monitoring/feedback.py", "serving/service.py")
    source = "".join((code / name).read_text() for name in files)
    declared = {f"{name}_total" for name in re.findall(r'Counter\(\s*"(\w+)"', source)}
    return declared | set(re.findall(r'(?:Gauge|Histogram)\(\s*"(\w+)"', source))


def test_the_rules_read_metrics_the_service_declares() -> None:
    """By name, against the code that creates them (test_serving checks the same names on
    a real service's /metrics)."""
    declared = declared_metric_names()
    assert rules_metric_names() <= declared, rules_metric_names() - declared
