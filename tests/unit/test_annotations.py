"""``chaoscontour annotations``' pure part: the Grafana annotations of the fixture journals (real runs of the
endpoint-churn and xDS black-hole experiments, see tests/unit/test_report_tracks.py). Every expected time is read
here from the journal's own runs, with the standard library, not through chaoscontour's journal reader.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import pytest

from chaoscontour.tools.annotations import KINDS, MAX_TAG_CHARS, TAG, grafana_bodies, title_tag
from tests.support.paths import FIXTURES

JOURNALS = FIXTURES / "journals"
BLOCKS = {"block_apiserver_egress": "unblock_apiserver_egress", "block_xds_egress": "unblock_xds_egress"}


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((JOURNALS / name).read_text(encoding="utf-8")))


def ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def func(run: dict[str, Any]) -> str | None:
    return run["activity"].get("provider", {}).get("func")


def of_kind(bodies: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [b for b in bodies if b["tags"][-1] == kind]


@pytest.mark.parametrize("name", ["endpoint-churn-demo.json", "endpoint-churn-plain.json", "xds-blackhole.json"])
def test_the_fault_window_runs_from_the_block_to_the_unblock_of_the_method(name):
    journal = load(name)
    (block,) = [r for r in journal["run"] if func(r) in BLOCKS]
    (unblock,) = [r for r in journal["run"] if func(r) == BLOCKS[func(block)]]

    (fault,) = of_kind(grafana_bodies(journal), "fault")

    assert (fault["time"], fault["timeEnd"]) == (ms(block["start"]), ms(unblock["start"]))
    assert fault["text"].startswith(f"{block['activity']['name']}: the fault, confirmed after ")
    assert fault["text"].endswith(f"removed by {unblock['activity']['name']} (method)")


def test_a_fault_no_unblock_removed_runs_to_the_end_of_the_run_and_says_so():
    journal = load("endpoint-churn-plain.json")
    journal["run"] = [r for r in journal["run"] if func(r) != "unblock_apiserver_egress"]
    journal["rollbacks"] = []
    (block,) = [r for r in journal["run"] if func(r) == "block_apiserver_egress"]

    (fault,) = of_kind(grafana_bodies(journal), "fault")

    assert (fault["time"], fault["timeEnd"]) == (ms(block["start"]), ms(journal["end"]))
    assert "never removed by the run (no unblock_apiserver_egress after it)" in fault["text"]


def test_only_the_rollback_removed_the_fault():
    journal = load("xds-blackhole.json")
    journal["run"] = [r for r in journal["run"] if func(r) != "unblock_xds_egress"]
    (rollback,) = [r for r in journal["rollbacks"] if func(r) == "unblock_xds_egress"]

    (fault,) = of_kind(grafana_bodies(journal), "fault")

    assert fault["timeEnd"] == ms(rollback["start"])
    assert fault["text"].endswith("(rollback)")


def test_a_journal_without_a_fault_gives_no_fault_annotation():
    journal = load("endpoint-churn-plain.json")
    for key in ("run", "rollbacks"):
        journal[key] = [r for r in journal[key] if func(r) not in (*BLOCKS, *BLOCKS.values())]

    bodies = grafana_bodies(journal)

    assert of_kind(bodies, "fault") == []
    assert of_kind(bodies, "kill"), "the other moments are still there"


def test_restarts_kills_and_the_longest_outage_sit_at_the_journal_times():
    journal = load("endpoint-churn-demo.json")
    bodies = grafana_bodies(journal)
    (restarts_run,) = [r for r in journal["run"] if func(r) == "contour_restart_count"]
    finished = sorted({ms(t["finished_at"]) for t in restarts_run["output"]["terminations"]})
    (kill_run,) = [r for r in journal["run"] if func(r) == "terminate_pods"]
    (sampler,) = [r["output"] for r in journal["run"] if func(r) == "envoy_availability"]

    assert [(b["time"], b["timeEnd"]) for b in of_kind(bodies, "restart")] == [(t, t) for t in finished]
    (kill,) = of_kind(bodies, "kill")
    assert (kill["time"], kill["timeEnd"]) == (ms(kill_run["start"]), ms(kill_run["start"]))
    assert kill_run["output"][0] in kill["text"]
    (outage,) = of_kind(bodies, "outage")
    start = ms(sampler["longest_outage_started_at"].replace("Z", "+00:00"))
    assert (outage["time"], outage["timeEnd"]) == (start, start + round(sampler["longest_outage_s"] * 1000))


def test_a_sampler_without_an_outage_gives_no_outage_annotation():
    journal = load("xds-blackhole.json")
    (sampler,) = [r["output"] for r in journal["run"] if func(r) == "envoy_availability"]
    assert sampler["longest_outage_s"] == 0

    assert of_kind(grafana_bodies(journal), "outage") == []


def test_a_stop_condition_is_a_region_from_its_failing_result_to_when_its_control_acted():
    journal = load("endpoint-churn-plain.json")
    journal["status"] = "interrupted"
    probe_end = "2026-11-27T15:04:45.500000+00:00"
    journal["safeguards"] = {
        "triggered_by": "availability-stays-up",
        "run": {"activity": {"name": "availability-stays-up", "frequency": 2}, "end": probe_end, "output": {}},
    }

    (stop,) = of_kind(grafana_bodies(journal), "stop")

    assert (stop["time"], stop["timeEnd"]) == (ms(probe_end), ms(probe_end) + 2000)
    assert stop["text"].startswith("ABORTED by stop condition 'availability-stays-up'")


def test_kill_leader_is_a_region_to_the_new_leader():
    journal = load("xds-blackhole.json")
    kill = {
        "activity": {
            "name": "kill-the-leader",
            "type": "action",
            "provider": {"type": "python", "module": "chaoscontour.activities.leader", "func": "kill_leader"},
        },
        "status": "succeeded",
        "start": "2026-11-27T16:49:30.000000+00:00",
        "end": "2026-11-27T16:49:35.000000+00:00",
        "output": {"old_pod": "contour-a", "new_pod": "contour-b", "failover_s": 4.6},
    }
    journal["run"] = [*journal["run"], kill]

    bodies = grafana_bodies(journal)

    (killed,) = of_kind(bodies, "kill")
    assert (killed["time"], killed["timeEnd"]) == (ms(kill["start"]), ms(kill["start"]) + 4600)
    assert killed["text"] == "kill-the-leader: leader contour-a killed; contour-b took over in 4.6 s"
    assert len(of_kind(bodies, "fault")) == 1, "a leader kill is not a fault window"


@pytest.mark.parametrize("name", ["endpoint-churn-demo.json", "xds-blackhole.json"])
def test_every_body_has_grafanas_fields_in_epoch_milliseconds_and_the_three_tags(name):
    journal = load(name)
    bodies = grafana_bodies(copy.deepcopy(journal))

    assert bodies
    for body in bodies:
        assert set(body) == {"time", "timeEnd", "tags", "text"}
        assert isinstance(body["time"], int) and isinstance(body["timeEnd"], int)
        assert ms(journal["start"]) - 60_000 <= body["time"] <= body["timeEnd"] <= ms(journal["end"]) + 1000
        tag, title, kind = body["tags"]
        assert (tag, title) == (TAG, title_tag(journal["experiment"]["title"])) and kind in KINDS
        assert body["text"]
    assert [b["time"] for b in bodies] == sorted(b["time"] for b in bodies)


def test_the_title_tag_is_a_short_slug_without_a_colon():
    assert title_tag("Envoy keeps routing: xDS black hole") == "envoy-keeps-routing-xds-black-hole"
    long = title_tag("Requests survive a backend pod's death while Contour is cut off from the Kubernetes API server")
    assert long == "requests-survive-a-backend-pod-s-death-while-contour-is-cut-off"
    assert len(long) <= MAX_TAG_CHARS
    assert title_tag("???") == "experiment"


def test_a_block_that_failed_ends_its_fault_window_with_itself_not_at_the_later_unblock():
    # A failed block (verification refused, or interrupted) removes its own policy before it returns: seen on the
    # real node's naive conntrack run, whose unblock came 2 s after the block had already removed the policy.
    journal = load("endpoint-churn-plain.json")
    (block,) = [r for r in journal["run"] if func(r) == "block_apiserver_egress"]
    block["status"] = "failed"
    block["exception"] = ["chaoslib.exceptions.ActivityFailed: the fault did not take effect; the policy was removed"]
    block.pop("output", None)

    (fault,) = of_kind(grafana_bodies(journal), "fault")

    assert (fault["time"], fault["timeEnd"]) == (ms(block["start"]), ms(block["end"]))
    assert "the block failed and removed its own policy" in fault["text"]
