"""``chaoscontour gateway-env NAMESPACE/NAME``: the experiments' settings for Contour provisioned through Gateway API.

One thing to give, the Gateway; the rest is read from what Contour's Gateway provisioner created for it (see
:mod:`chaoscontour.domain.gateway_layout`) and printed as ``KEY=value`` lines to source (``set -a; . file``) or,
with ``--json``, as one object. Envoy's URLs are the address of a Ready Envoy pod, reachable from inside the
cluster (a game day's pod) or from a node; from elsewhere set ``ENVOY_URL`` to your load balancer instead.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence

from chaoslib.exceptions import ActivityFailed

from chaoscontour.domain.gateway_layout import GatewayLayoutError, layout_of, parse_gateway_ref
from chaoscontour.domain.inputs import InvalidInput
from chaoscontour.edges.gateway_objects import envoy_pod_ip, read_gateway_objects
from chaoscontour.edges.kube import kube

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaoscontour gateway-env",
        description="print the experiments' settings (KEY=value) for a Gateway served by Contour's provisioner",
    )
    parser.add_argument("gateway", help="the Gateway, NAMESPACE/NAME")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of KEY=value lines")
    args = parser.parse_args(argv)
    try:
        namespace, name = parse_gateway_ref(args.gateway)
        k = kube()
        layout = layout_of(*read_gateway_objects(k, namespace, name))
        settings = layout.settings(envoy_pod_ip(k, layout.namespace, layout.envoy_selector))
    except (InvalidInput, GatewayLayoutError, ActivityFailed) as exc:
        print(f"chaoscontour gateway-env: error: {exc}", file=sys.stderr)
        return 2
    if "ENVOY_URL" not in settings:
        print(
            f"chaoscontour gateway-env: no Ready Envoy pod of {layout.gateway} ({layout.envoy_selector}): set "
            "ENVOY_URL and ENVOY_STATS_URL yourself",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(settings, indent=1))
    else:
        print("".join(f"{key}={shlex.quote(value)}\n" for key, value in settings.items()), end="")
    return 0
