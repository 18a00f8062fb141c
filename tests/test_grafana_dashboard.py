"""docs/grafana/gauntlet.json: importable, and its queries name exactly what the nodes export.

The exported names come from the code, not a hand list: the real PrometheusExporter is fed the
figures a miner reports (WindowReport.figures), every per-peer field, and the window fields the
validator logs (the keys of its log_window call, read from validator/loop.py), and its
registry is read back.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from gauntlet_jax.miner.loop import WindowReport
from gauntlet_jax.node.metrics import PROMETHEUS_PEER_FIELDS, PeerWindowRecord, PrometheusExporter

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "docs" / "grafana" / "gauntlet.json"
METRIC = re.compile(r"\bgauntlet_[a-z0-9_]+")


def validator_window_fields() -> list[str]:
    """The keys of the dict the validator passes to MetricsLogger.log_window."""
    tree = ast.parse((REPO / "gauntlet_jax" / "validator" / "loop.py").read_text())
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "log_window"
    ]
    assert len(calls) == 1, "expected one log_window call in validator/loop.py"
    (fields,) = [arg for arg in calls[0].args if isinstance(arg, ast.Dict)]
    return [key.value for key in fields.keys if isinstance(key, ast.Constant)]


@pytest.fixture(scope="module")
def exported() -> set[str]:
    names = set()
    miner = PrometheusExporter("miner", 0)
    validator = PrometheusExporter("validator", 0)
    try:
        report = WindowReport(window=4, n_batches=2, train_loss=3.5, uploaded_bytes=10)
        miner.window(4, report.figures())
        validator.window(4, dict.fromkeys(validator_window_fields(), 1.0))
        validator.peer(PeerWindowRecord(4, 7, **dict.fromkeys(PROMETHEUS_PEER_FIELDS, 0.5)))
        for exporter in (miner, validator):
            # A counter's family is named without its `_total`, the sample queries name.
            names |= {
                f"{family.name}_total" if family.type == "counter" else family.name
                for family in exporter.registry.collect()
            }
    finally:
        miner.close()
        validator.close()
    return names


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["title"] and dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        # Every query goes to the chosen Prometheus, and uses only variables that exist.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            for used in re.findall(r"\$(\w+)", target["expr"]):
                assert used in variables, f"{panel['title']}: ${used} is not a variable"
            assert target["expr"].count("(") == target["expr"].count(")")


def test_every_query_names_exported_metrics_and_every_metric_has_a_panel(
    exported: set[str],
) -> None:
    # What the code must export for this dashboard to be about anything (a guard against an
    # empty registry making the test pass).
    assert {
        "gauntlet_miner_train_loss",
        "gauntlet_validator_peer_weight",
        "gauntlet_miner_errors_total",
        "gauntlet_validator_errors_total",
    } <= exported
    assert len(exported) >= 20
    dashboard = json.loads(DASHBOARD.read_text())
    queried = set()
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            names = set(METRIC.findall(target["expr"]))
            assert names, f"{panel['title']}: {target['expr']} names no gauntlet metric"
            assert names <= exported, f"{panel['title']}: not exported: {names - exported}"
            queried |= names
    assert exported - queried == set(), f"metrics without a panel: {exported - queried}"
