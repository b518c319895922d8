"""Chaos Toolkit extension for Contour: does ingress keep flowing when the API server or the Contour leader goes?

`chaos discover chaostoolkit-contour --no-install` calls :func:`discover`, which lists the activities of the
modules in ``chaoscontour.activities``, typed as probes or actions by the declared contract
(:mod:`chaoscontour.contract`).
"""

import logging

from chaoslib.discovery.discover import discover_actions, initialize_discovery_result
from chaoslib.types import Discovery

from chaoscontour.contract import ACTIVITIES, ACTIVITY_PACKAGE, MODULES

__all__ = ["__version__", "discover"]
__version__ = "0.1.0"

logger = logging.getLogger("chaostoolkit")

# Discovery lists per module, and several modules hold both kinds: the type of each function comes from the declared
# contract (chaoscontour.contract), as do the modules and their order.
_MODULES = MODULES
PROBES = frozenset(a.name for a in ACTIVITIES if a.kind == "probe")


def discover(discover_system: bool = True) -> Discovery:
    """The activities this extension offers, with their typed arguments and documentation."""
    logger.info("Discovering capabilities from chaostoolkit-contour")
    discovery = initialize_discovery_result("chaostoolkit-contour", __version__, "contour")
    for module in _MODULES:
        for activity in discover_actions(f"{ACTIVITY_PACKAGE}.{module}"):
            activity["type"] = "probe" if activity["name"] in PROBES else "action"
            discovery["activities"].append(activity)
    return discovery
