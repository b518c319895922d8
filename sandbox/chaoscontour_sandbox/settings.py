"""What a sandbox tells the experiments: ``settings.env`` (for ``set -a; . settings.env``) and ``settings.json``.

The kubeconfig, Contour's namespace, selectors and
Lease, Envoy's URL, Host and stats URL, and the NetworkPolicy mode; the route's own keys (``BACKEND_*``,
``ROUTE_*``) come from :func:`chaoscontour_sandbox.manifests.route_settings`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from chaoscontour_sandbox import workloads

__all__ = ["SETTINGS_ENV", "SETTINGS_JSON", "experiment_settings", "write_settings"]

SETTINGS_ENV = "settings.env"
SETTINGS_JSON = "settings.json"


def experiment_settings(kubeconfig: Path, envoy_ip: str, mode: str) -> dict[str, str]:
    """The settings of a sandbox whose Envoy pod is at ``envoy_ip`` (its HTTP listener 8080, stats 8002)."""
    return {
        "KUBECONFIG": str(kubeconfig),
        "CONTOUR_NAMESPACE": workloads.CONTOUR_NAMESPACE,
        "CONTOUR_SELECTOR": workloads.CONTOUR_SELECTOR,
        "ENVOY_SELECTOR": workloads.ENVOY_SELECTOR,
        "ENVOY_NAMESPACE": workloads.CONTOUR_NAMESPACE,
        "CONTOUR_LEASE": workloads.LEASE_NAME,
        "ENVOY_URL": f"http://{envoy_ip}:8080/",
        "ENVOY_HOST": workloads.ECHO_FQDN,
        "ENVOY_STATS_URL": f"http://{envoy_ip}:8002/stats",
        "SANDBOX_NETPOL_MODE": mode,
        # Prometheus scrapes every layout's Contour (with `up --gateway`, two): name this one's.
        "CONTOUR_METRICS_SELECTOR": f'container="contour",namespace="{workloads.CONTOUR_NAMESPACE}"',
    }


def write_settings(directory: Path, settings: dict[str, str], stem: str = "settings") -> None:
    """Write both files (``<stem>.env`` and ``<stem>.json``). The ``.env`` is sourced by a shell (``make demo``
    does, as root), so every value is shell-quoted: a route or path from a user's manifests is data, never a
    command."""
    for key in settings:
        if not key.isidentifier() or not key.isascii():
            raise ValueError(f"settings key {key!r} is not a shell variable name")
    (directory / f"{stem}.env").write_text("".join(f"{k}={shlex.quote(str(v))}\n" for k, v in settings.items()))
    (directory / f"{stem}.json").write_text(json.dumps(settings, indent=1) + "\n")
