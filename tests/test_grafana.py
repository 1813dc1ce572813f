"""Grafana's provisioning, checked without Grafana (no image of it can be had here): the datasource points at the
compose file's Prometheus, the dashboard provider at the mounted folder, and the dashboard JSON has what Grafana 11
needs to load it (title, schemaVersion, panels with type, gridPos and targets on the provisioned datasource's uid)
with PromQL that parses. That every panel's metric exists in the code is checked by tests/test_metrics.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "monitoring" / "grafana"
# Grafana 11's built-in panel plugins (public/app/plugins/panel).
PANEL_TYPES = {
    "alertlist", "annolist", "barchart", "bargauge", "candlestick", "canvas", "dashlist", "datagrid", "flamegraph",
    "gauge", "geomap", "heatmap", "histogram", "logs", "news", "nodeGraph", "piechart", "row", "stat",
    "state-timeline", "status-history", "table", "text", "timeseries", "traces", "trend", "xychart",
}  # fmt: skip


def compose_service(name: str) -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][name]


def mounts(service: dict) -> dict[str, str]:
    """The service's bind mounts as {host path: container path}."""
    return {v.split(":")[0]: v.split(":")[1] for v in service["volumes"] if v.startswith("./")}


@pytest.fixture(scope="module")
def datasources() -> list[dict]:
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioned["apiVersion"] == 1
    return list(provisioned["datasources"])


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return dict(json.loads((GRAFANA / "dashboards" / "bank.json").read_text()))


def all_panels(dashboard: dict) -> list[dict]:
    """Every panel, the ones inside collapsed rows too."""
    return [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]


def test_the_datasource_is_the_compose_files_prometheus(datasources: list[dict]) -> None:
    assert [d["isDefault"] for d in datasources].count(True) == 1
    prometheus = compose_service("prometheus")
    container_port = prometheus["ports"][0].rsplit(":", 1)[1]
    for source in datasources:
        assert source["type"] == "prometheus" and source["access"] == "proxy", source
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", source["uid"]), source
        assert source["url"] == f"http://prometheus:{container_port}", source
    assert len({d["uid"] for d in datasources}) == len(datasources)


def test_grafana_mounts_the_provisioning_and_the_dashboards_the_provider_reads() -> None:
    grafana = mounts(compose_service("grafana"))
    assert grafana["./monitoring/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "bank.yml").read_text())
    assert provider["apiVersion"] == 1
    for entry in provider["providers"]:
        assert entry["type"] == "file" and entry["name"], entry
        assert entry["options"]["path"] == grafana["./monitoring/grafana/dashboards"], entry
    assert [p.name for p in (GRAFANA / "dashboards").glob("*.json")] == ["bank.json"]


def test_the_dashboard_has_what_grafana_11_loads(dashboard: dict, datasources: list[dict]) -> None:
    assert isinstance(dashboard["title"], str) and dashboard["title"].strip()
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", dashboard["uid"])
    assert isinstance(dashboard["schemaVersion"], int) and 36 <= dashboard["schemaVersion"] <= 41
    assert {"from", "to"} <= set(dashboard["time"])
    for key in ("templating", "annotations"):
        assert isinstance(dashboard.get(key, {"list": []})["list"], list), key
    uids = {d["uid"] for d in datasources}
    panels = all_panels(dashboard)
    assert panels and len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        where = panel.get("title", panel.get("id"))
        assert panel["type"] in PANEL_TYPES, where
        assert isinstance(panel["id"], int) and panel["title"], where
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy"), where
        assert grid["h"] >= 1 and grid["w"] >= 1 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, where
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": panel["datasource"]["uid"]}, where
        assert panel["datasource"]["uid"] in uids, where
        targets = panel["targets"]
        assert targets and len({t["refId"] for t in targets}) == len(targets), where
        for target in targets:
            assert target["expr"].strip(), where
            assert target.get("datasource", panel["datasource"])["uid"] in uids, where


def test_no_two_panels_overlap(dashboard: dict) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, (panel["title"], cells.get((x, y)))
                cells[(x, y)] = panel["title"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus) is not installed")
def test_every_panel_query_is_promql_that_parses(dashboard: dict, tmp_path: Path) -> None:
    # Grafana's own interval variables stand for a duration; promtool checks the rest as recording rules.
    rules = [
        {"record": f"panel_{panel['id']}_{target['refId']}", "expr": re.sub(r"\$__\w+", "1m", target["expr"])}
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
