"""The gate's sentences about the route probes name the route object they wrote to, an HTTPProxy or an HTTPRoute."""

from typing import Any

import pytest

from chaoscontour.tools.verdict import judge


def journal_with(func: str, output: dict[str, Any]) -> dict[str, Any]:
    serve = {"type": "probe", "name": "serves", "tolerance": True, "provider": {"type": "python", "func": "f"}}
    probe = {
        "type": "probe",
        "name": "route-probe",
        "provider": {"type": "python", "module": "chaoscontour.activities.routes", "func": func},
    }
    ran = {"activity": probe, "output": output, "status": "succeeded", "start": "2026-12-06T22:00:00", "duration": 1}
    checked = {"activity": serve, "output": True, "status": "succeeded", "tolerance_met": True}
    steady = {"steady_state_met": True, "probes": [checked]}
    return {
        "experiment": {"title": "t", "steady-state-hypothesis": {"title": "h", "probes": [serve]}, "method": [probe]},
        "status": "completed",
        "deviated": False,
        "steady_states": {"before": steady, "after": steady, "during": []},
        "run": [ran],
        "rollbacks": [],
    }


@pytest.mark.parametrize("key, named", [("httproute", "HTTPRoute demo/echo"), ("httpproxy", "HTTPProxy demo/echo")])
def test_the_route_change_and_its_convergence_name_the_kind_and_the_route(key: str, named: str) -> None:
    change = judge(journal_with("route_change_propagation", {key: "demo/echo", "summary": "served after 0.1 s"}))
    assert change.findings == (f"route change ({named}): served after 0.1 s",)
    converged = judge(journal_with("route_config_converged", {key: "demo/echo", "converged_after_s": 3.5}))
    assert converged.findings == (f"after the heal Envoy served {named}'s configuration in 3.5 s",)
