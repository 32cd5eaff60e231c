"""monitoring/grafana/dashboard.json, read as Grafana would import it: every panel queries
the Prometheus data source it asks for, and every series it names is one the service
exports or the rules record (test_monitoring_service runs each query on a real
Prometheus)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import ROOT
from tests.test_prometheus_rules import RULES, declared_metric_names

DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboard.json"
# BentoML's own request metrics, which test_serving finds on a real service's /metrics
BENTOML_METRICS = {"bentoml_service_request_total", "bentoml_service_request_duration_seconds"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' and its annotations'."""
    board = dashboard()
    found = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    return found + [note["expr"] for note in board["annotations"]["list"]]


def runnable(expr: str) -> str:
    """A query as Grafana sends it: its variables filled in."""
    return expr.replace("$__rate_interval", "1m").replace("$feature", "pc1")


def test_every_panel_queries_the_dashboards_prometheus() -> None:
    board = dashboard()
    assert board["templating"]["list"][0] == {**board["templating"]["list"][0],
                                              "name": "datasource", "type": "datasource",
                                              "query": "prometheus"}  # fmt: skip
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel
        assert panel["description"], panel["title"]
    cells = set()
    for panel in board["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(box["x"], box["x"] + box["w"])
                for y in range(box["y"], box["y"] + box["h"])}  # fmt: skip
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


@pytest.mark.parametrize("expr", queries())
def test_every_query_names_exported_or_recorded_series(expr: str) -> None:
    recorded = {rule["record"] for group in yaml.safe_load((RULES / "rules.yml").read_text())
                ["groups"] for rule in group["rules"] if "record" in rule}  # fmt: skip
    for name in re.findall(r"\bmlops:[a-z_:0-9]+", expr):
        assert name in recorded, f"{name} is recorded by no rule in rules.yml"
    for name in re.findall(r"\bmlops_[a-z_]+\b", expr):
        base = re.sub(r"_(sum|count|bucket)$", "", name)
        assert name in declared_metric_names() or base in declared_metric_names(), name
    for name in re.findall(r"\bbentoml_[a-z_]+\b", expr):
        assert re.sub(r"_(sum|count|bucket)$", "", name) in BENTOML_METRICS, name
