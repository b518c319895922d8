"""The gate's sentences about the route probes name the route object they wrote to, an HTTPProxy or an HTTPRoute."""

from typing import Any

import pytest

from chaoscontour.tools.verdict import judge
from tests.support.journals import activity, completed_journal, ran


def journal_with(func: str, output: dict[str, Any]) -> dict[str, Any]:
    probe = activity("route-probe", "chaoscontour.activities.routes", func)
    return completed_journal([ran(probe, output, "2026-12-06T22:00:00")])


@pytest.mark.parametrize("key, named", [("httproute", "HTTPRoute demo/echo"), ("httpproxy", "HTTPProxy demo/echo")])
def test_the_route_change_and_its_convergence_name_the_kind_and_the_route(key: str, named: str) -> None:
    change = judge(journal_with("route_change_propagation", {key: "demo/echo", "summary": "served after 0.1 s"}))
    assert change.findings == (f"route change ({named}): served after 0.1 s",)
    converged = judge(journal_with("route_config_converged", {key: "demo/echo", "converged_after_s": 3.5}))
    assert converged.findings == (f"after the heal Envoy served {named}'s configuration in 3.5 s",)
