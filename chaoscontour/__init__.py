"""Chaos Toolkit extension for Contour: does ingress keep flowing when the API server or the Contour leader goes?

`chaos discover chaostoolkit-contour --no-install` calls :func:`discover`, which lists the activities of the
modules in ``chaoscontour.activities``.
"""

import logging

from chaoslib.discovery.discover import discover_actions, initialize_discovery_result
from chaoslib.types import Discovery

__all__ = ["__version__", "discover"]
__version__ = "0.1.0"

logger = logging.getLogger("chaostoolkit")

_MODULES = ("network", "leader", "pods", "envoy", "timing", "xds", "xds_probes", "routes", "endpoints")
# Discovery lists per module, and several modules hold both kinds: the type is decided per function here.
PROBES = frozenset(
    {
        "apiserver_egress_fault",
        "lease_holder",
        "contour_restart_count",
        "envoy_serving",
        "envoy_availability",
        "envoy_xds_connected",
        "xds_egress_fault",
        "envoy_xds_timeline",
        "envoy_backend_view",
        "envoy_endpoints_converged",
        "route_change_propagation",
        "route_config_converged",
    }
)


def discover(discover_system: bool = True) -> Discovery:
    """The activities this extension offers, with their typed arguments and documentation."""
    logger.info("Discovering capabilities from chaostoolkit-contour")
    discovery = initialize_discovery_result("chaostoolkit-contour", __version__, "contour")
    for module in _MODULES:
        for activity in discover_actions(f"chaoscontour.activities.{module}"):
            activity["type"] = "probe" if activity["name"] in PROBES else "action"
            discovery["activities"].append(activity)
    return discovery
