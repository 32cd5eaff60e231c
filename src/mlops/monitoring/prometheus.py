"""A Prometheus server watching a served version: a config that scrapes the service as job
`mlops` and loads the project's rules (monitoring/prometheus/rules.yml), and the command
that runs it. Prometheus does the arithmetic (drift, live accuracy, alerts); this only
points it at the service, so `make monitor` and the tests run the same server."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from mlops.errors import MonitorError

DURATION = re.compile(r"^[1-9][0-9]*(ms|s|m|h|d)$")


@dataclass(frozen=True)
class PrometheusServer:
    """What to run: the binary, its config and storage, and where it listens."""

    binary: str
    config_file: Path
    storage_dir: Path
    host: str
    port: int
    retention: str = "15d"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config_file}",
            f"--storage.tsdb.path={self.storage_dir}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={self.host}:{self.port}",
        ]


def scrape_target(target: str) -> tuple[str, str]:
    """(scheme, host:port) of a service given as host:port or as its URL."""
    parts = urlsplit(target if "://" in target else f"http://{target}")
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
        raise MonitorError(
            f"monitor.target={target!r} is not a service address: give host:port (as "
            "127.0.0.1:3000, where make serve listens) or http://host:port"
        )
    return parts.scheme, f"{parts.hostname}:{parts.port}"


def check_duration(key: str, value: str) -> str:
    if not DURATION.match(str(value)):
        raise MonitorError(
            f"monitor.{key}={value!r} is not a Prometheus duration: write it as 15s, 1m or 500ms"
        )
    return str(value)


def prometheus_config(
    target: str, rules_file: Path, scrape_interval: str = "15s", evaluation_interval: str = "15s"
) -> dict:
    """Prometheus' own configuration: one job, `mlops` (the rules' MlopsServiceDown reads
    its `up`), scraping the service's /metrics, and the rules file."""
    scheme, address = scrape_target(target)
    return {
        "global": {
            "scrape_interval": check_duration("scrape_interval", scrape_interval),
            "evaluation_interval": check_duration("evaluation_interval", evaluation_interval),
        },
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {
                "job_name": "mlops",
                "scheme": scheme,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [address]}],
            }
        ],
    }


def find_prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise MonitorError(
            "prometheus is not installed: apt-get install prometheus (make monitor installs "
            "it), or put a Prometheus 2.x binary on PATH"
        )
    return found


def prepare_prometheus(
    target: str,
    rules_file: Path,
    storage_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    retention: str = "15d",
    binary: str | None = None,
) -> PrometheusServer:
    """Write `storage_dir`/prometheus.yml and say how to run the server. Samples persist in
    `storage_dir` across restarts, so a restarted Prometheus keeps the day of fed-back
    labels its accuracy rule reads."""
    binary = binary or find_prometheus()
    rules_file = Path(rules_file).resolve()
    if not rules_file.is_file():
        raise MonitorError(
            f"monitor.rules_file={rules_file} does not exist: it is the project's "
            "monitoring/prometheus/rules.yml (run from the project root, or set it)"
        )
    config = prometheus_config(target, rules_file, scrape_interval, evaluation_interval)
    storage_dir = Path(storage_dir).resolve()
    storage_dir.mkdir(parents=True, exist_ok=True)
    config_file = storage_dir / "prometheus.yml"
    config_file.write_text(
        "# written by mlops monitor prometheus (mlops.monitoring.prometheus); edits are "
        "overwritten\n" + yaml.safe_dump(config, sort_keys=False)
    )
    return PrometheusServer(
        binary, config_file, storage_dir, host, int(port),
        check_duration("retention", retention),
    )  # fmt: skip
