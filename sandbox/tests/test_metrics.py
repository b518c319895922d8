"""The sandbox Prometheus' targets, from pods as the API server lists them (the e2e test scrapes them for real)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import metrics


def pod(name: str, app: str, ip: str | None, ports: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "projectcontour", "labels": {"app": app}, **meta},
        "spec": {"containers": [{"name": app, "ports": ports}]},
        "status": {"podIP": ip} if ip else {},
    }


CONTOUR_PORTS = [{"containerPort": 8001, "name": "xds"}, {"containerPort": 8000, "name": "metrics"}]
ENVOY_PORTS = [{"containerPort": 8080, "hostPort": 80, "name": "http"}, {"containerPort": 8002, "name": "metrics"}]


def test_the_metrics_ports_of_contour_and_envoy_are_targets_with_envoys_prometheus_path() -> None:
    groups = metrics.pod_targets(
        [pod("envoy-x", "envoy", "10.217.0.5", ENVOY_PORTS), pod("contour-a", "contour", "10.217.0.4", CONTOUR_PORTS)]
    )
    assert groups == [
        {
            "targets": ["10.217.0.4:8000"],
            "labels": {
                "namespace": "projectcontour",
                "pod": "contour-a",
                "container": "contour",
                "app": "contour",
                "__metrics_path__": "/metrics",
            },
        },
        {
            "targets": ["10.217.0.5:8002"],
            "labels": {
                "namespace": "projectcontour",
                "pod": "envoy-x",
                "container": "envoy",
                "app": "envoy",
                "__metrics_path__": "/stats/prometheus",
            },
        },
    ]


def test_pods_without_an_address_being_deleted_or_without_a_metrics_port_are_not_targets() -> None:
    pods = [
        pod("pending", "contour", None, CONTOUR_PORTS),
        pod("leaving", "contour", "10.217.0.9", CONTOUR_PORTS, deletionTimestamp="2026-12-06T06:00:00Z"),
        pod("certgen", "contour-certgen", "10.217.0.8", []),
    ]
    assert metrics.pod_targets(pods) == []


def test_the_target_file_is_rewritten_only_when_the_targets_change(tmp_path: Path) -> None:
    targets = metrics.Targets(tmp_path)
    assert json.loads(targets.path.read_text()) == []
    one = metrics.pod_targets([pod("contour-a", "contour", "10.217.0.4", CONTOUR_PORTS)])
    targets.write(one)
    written = targets.path.stat().st_mtime_ns
    targets.write(list(one))
    assert targets.path.stat().st_mtime_ns == written
    assert json.loads(targets.path.read_text()) == one
    config = yaml.safe_load(yaml.safe_dump(metrics.scrape_config(targets.path)))
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(targets.path)]
