"""The gate's checks on chaostoolkit-kubernetes' ``terminate_pods`` in a method: the pod death must have happened,
and to a pod the experiment chose.

``terminate_pods`` returns the pods it deleted; with a selector that matches nothing it deletes none and succeeds.
With no ``label_selector`` (missing, null or empty) and no ``name_pattern`` it picks from every pod of its
namespace (its own docstring: "all pods in the namespace will be selected"), so the run may have killed anything
there, a database or Contour itself, and what it measured is not the backend's churn.

The journal records each activity's arguments as written: a ``${...}`` placeholder is judged as given (set), since
its value is not in the journal. So an empty value given through configuration (``BACKEND_SELECTOR=`` for the
shipped churn experiment) is not seen by this check: only a literal empty, null or missing selector is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaoscontour.tools.activity_results import ActivityResult

__all__ = ["pod_kill_reasons"]

MODULE, FUNC = "chaosk8s.pod.actions", "terminate_pods"


def _unset(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def pod_kill_reasons(method: Sequence[ActivityResult]) -> list[str]:
    """One reason per ``terminate_pods`` run that deleted nothing, and per one that ran with no selector."""
    reasons = []
    for r in method:
        if not (r.module == MODULE and r.func == FUNC and r.ran):
            continue
        arguments = r.arguments if isinstance(r.arguments, Mapping) else {}
        if _unset(arguments.get("label_selector")) and _unset(arguments.get("name_pattern")):
            reasons.append(
                f"{r.name!r} (chaostoolkit-kubernetes terminate_pods) ran with no label_selector and no name_pattern, "
                "so it picked from every pod of its namespace: set label_selector to the backend's pods (e.g. "
                "'app=echo'; in the shipped experiment, BACKEND_SELECTOR)"
            )
        if r.status == "succeeded" and r.output == []:
            reasons.append(
                f"{r.name!r} (chaostoolkit-kubernetes terminate_pods) deleted no pod: its selector matched nothing, "
                "so the pod death the experiment is about never happened"
            )
    return reasons
