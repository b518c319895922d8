"""Whether a pod serves: the one readiness test of the extension and the sandbox, over a pod as a mapping."""

from collections.abc import Mapping
from typing import Any

__all__ = ["pod_ready"]


def pod_ready(pod: Mapping[str, Any] | None) -> bool:
    """Whether the pod's ``Ready`` condition is ``True`` and it is not terminating (a missing pod is not Ready; a
    pod being deleted keeps its Ready condition through its grace period, but is on its way out of every Service)."""
    if not pod or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
