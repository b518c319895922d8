"""Chaos Toolkit extension for Contour: does ingress keep flowing when the API server or the Contour leader goes?

`chaos discover chaostoolkit-contour --no-install` calls :func:`discover`, which lists the activities of the
modules in ``chaoscontour.activities``.
"""

import logging

from chaoslib.discovery.discover import discover_actions, discover_probes, initialize_discovery_result
from chaoslib.types import Discovery

__all__ = ["__version__", "discover"]
__version__ = "0.1.0"

logger = logging.getLogger("chaostoolkit")

_ACTIONS = ("chaoscontour.activities.network", "chaoscontour.activities.leader")
_PROBES = ("chaoscontour.activities.pods", "chaoscontour.activities.envoy")
# leader.py holds both an action (kill_leader) and a probe (lease_holder): discovery is per module and type.
_MIXED = {"chaoscontour.activities.leader": {"lease_holder": "probe"}}


def discover(discover_system: bool = True) -> Discovery:
    """The activities this extension offers, with their typed arguments and documentation."""
    logger.info("Discovering capabilities from chaostoolkit-contour")
    discovery = initialize_discovery_result("chaostoolkit-contour", __version__, "contour")
    for module in _ACTIONS:
        for activity in discover_actions(module):
            activity["type"] = _MIXED.get(module, {}).get(activity["name"], "action")
            discovery["activities"].append(activity)
    for module in _PROBES:
        discovery["activities"].extend(discover_probes(module))
    return discovery
