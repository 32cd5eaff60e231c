"""The Prometheus set-up `make monitor` runs: its config, its command and the errors a user
can fix (the server itself runs in test_monitoring_service)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlops.cli import main
from mlops.errors import MonitorError
from mlops.monitoring.prometheus import prepare_prometheus
from tests.conftest import ROOT
from tests.servers import taken_port
from tests.test_prometheus_rules import RULES

RULES_FILE = RULES / "rules.yml"


def test_the_config_scrapes_the_service_as_job_mlops_with_the_rules(tmp_path: Path) -> None:
    server = prepare_prometheus("https://10.0.0.5:3443", RULES_FILE, tmp_path / "p", 9191,
                                scrape_interval="5s", binary="/opt/prometheus")  # fmt: skip
    config = yaml.safe_load(server.config_file.read_text())
    assert config["rule_files"] == [str(RULES_FILE.resolve())]
    assert config["global"] == {"scrape_interval": "5s", "evaluation_interval": "15s"}
    (job,) = config["scrape_configs"]
    assert job == {"job_name": "mlops", "scheme": "https", "metrics_path": "/metrics",
                   "static_configs": [{"targets": ["10.0.0.5:3443"]}]}  # fmt: skip
    assert server.command() == [
        "/opt/prometheus", f"--config.file={tmp_path / 'p' / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp_path / 'p'}", "--storage.tsdb.retention.time=15d",
        "--web.listen-address=127.0.0.1:9191",
    ]  # fmt: skip
    assert server.url == "http://127.0.0.1:9191"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"target": "localhost"}, "monitor.target='localhost' is not a service address"),
        ({"target": "ftp://host:21"}, "give host:port"),
        ({"scrape_interval": "15"}, "monitor.scrape_interval='15' is not a Prometheus duration"),
        ({"retention": "2 weeks"}, "monitor.retention='2 weeks'"),
        ({"rules_file": Path("nowhere.yml")}, "monitoring/prometheus/rules.yml"),
    ],
)
def test_bad_settings_name_the_key_and_the_fix(
    tmp_path: Path, settings: dict, message: str
) -> None:
    arguments = {"target": "127.0.0.1:3000", "rules_file": RULES_FILE, "storage_dir": tmp_path,
                 "port": 9090, "binary": "prometheus", **settings}  # fmt: skip
    with pytest.raises(MonitorError, match=message.replace("(", r"\(")):
        prepare_prometheus(**arguments)


def test_mlops_monitor_refuses_a_taken_port_and_a_missing_prometheus(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    argv = ["monitor", "prometheus", "--config-dir", str(ROOT / "conf"),
            f"monitor.storage_dir={tmp_path}"]  # fmt: skip
    with taken_port() as port:
        assert main([*argv, "--port", str(port)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert f"port {port} on 127.0.0.1 is taken" in line and f"--port {port + 1}" in line
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus on it
    assert main([*argv, "--port", str(port)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "prometheus is not installed: apt-get install prometheus" in line
