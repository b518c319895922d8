"""The one readiness test the extension and the sandbox share."""

from typing import Any

import pytest

from chaoscontour.domain.pods import pod_ready


def pod(ready: str | None, terminating: bool = False) -> dict[str, Any]:
    meta = {"name": "p", **({"deletionTimestamp": "2026-12-07T00:00:00Z"} if terminating else {})}
    conditions = [{"type": "PodScheduled", "status": "True"}]
    if ready is not None:
        conditions.append({"type": "Ready", "status": ready})
    return {"metadata": meta, "status": {"conditions": conditions}}


@pytest.mark.parametrize(
    "candidate, expected",
    [
        (pod("True"), True),
        (pod("False"), False),
        (pod(None), False),
        (pod("True", terminating=True), False),  # still Ready through its grace period, but on its way out
        ({"metadata": {"name": "p"}}, False),  # no status yet
        (None, False),
    ],
)
def test_a_pod_is_ready_only_with_its_ready_condition_true_and_not_terminating(candidate, expected) -> None:
    assert pod_ready(candidate) is expected
