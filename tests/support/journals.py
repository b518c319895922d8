"""Small chaostoolkit journals for the unit tests of the gate, the findings and the report: a completed run whose
steady state held before and after, with the method activities a test gives. The outputs inside are made by the
product's own code where a test needs real figures; only the journal's frame is built here."""

from typing import Any

# The steady-state probe every built journal checks, met before and after.
SERVES = {"type": "probe", "name": "serves", "tolerance": True, "provider": {"type": "python", "func": "f"}}


def activity(name: str, module: str, func: str, kind: str = "probe", **extra: Any) -> dict[str, Any]:
    """A python activity of ``module.func`` as an experiment declares it (``extra``: ``background``,
    ``tolerance``)."""
    return {"type": kind, "name": name, **extra, "provider": {"type": "python", "module": module, "func": func}}


def ran(declared: dict[str, Any], output: Any, start: str, duration: float = 1.0) -> dict[str, Any]:
    """The journal's record of ``declared`` having run and succeeded with ``output``."""
    return {"activity": declared, "output": output, "status": "succeeded", "start": start, "duration": duration}


def completed_journal(runs: list[dict[str, Any]], steady_start: str | None = None, **top: Any) -> dict[str, Any]:
    """A completed, not deviated run of ``runs`` (records made by :func:`ran`, in method order) whose steady state
    (:data:`SERVES`, started at ``steady_start`` when given) held before and after; ``top`` adds or replaces
    top-level keys (``title``, ``duration``)."""
    checked = {"activity": SERVES, "output": True, "status": "succeeded", "tolerance_met": True}
    if steady_start is not None:
        checked |= {"start": steady_start, "duration": 1.0}
    title = top.pop("title", "t")
    steady = {"steady_state_met": True, "probes": [checked]}
    return {
        "experiment": {
            "title": title,
            "steady-state-hypothesis": {"title": "h", "probes": [SERVES]},
            "method": [r["activity"] for r in runs],
        },
        "status": "completed",
        "deviated": False,
        "steady_states": {"before": steady, "after": dict(steady), "during": []},
        "run": runs,
        "rollbacks": [],
        **top,
    }
