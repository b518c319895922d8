"""The traces control's pure part: the spans a journal gives (chaoscontour.controls.spans), without a Collector.

Real journals (tests/fixtures/journals: runs of the endpoint-churn and xDS black-hole experiments) and small edited
copies of them. Expected times are read from the journals with the standard library, not through the module.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any

import pytest

from chaoscontour.controls.spans import (
    FAULT_WINDOW,
    MASK,
    MAX_SUMMARY_CHARS,
    ROOT,
    RUN_ID,
    nanoseconds,
    output_summary,
    run_spans,
    secret_values,
)
from chaoscontour.controls.traces import service_name, traces_endpoint
from tests.support.paths import FIXTURES

JOURNALS = FIXTURES / "journals"
RUN = "0123456789abcdef0123456789abcdef"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((JOURNALS / name).read_text(encoding="utf-8")))


def ns(iso: str) -> int:
    moment = datetime.fromisoformat(iso)
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


def named(journal: dict[str, Any], where: str, name: str) -> dict[str, Any]:
    return next(r for r in journal[where] if r["activity"]["name"] == name)


def test_times_are_exact_to_the_journals_microsecond() -> None:
    assert nanoseconds("2026-11-27T16:56:17.095390+00:00") == 1_795_798_577_095_390_000
    # chaostoolkit-lib before 1.45 wrote naive UTC times; a Z and another offset read as the same instant.
    assert nanoseconds("2026-11-27T16:56:17.095390") == nanoseconds("2026-11-27T16:56:17.095390Z")
    assert nanoseconds("2026-11-27T17:56:17.095390+01:00") == nanoseconds("2026-11-27T16:56:17.095390Z")
    assert nanoseconds("yesterday") is None
    assert nanoseconds(None) is None


def test_every_run_record_is_a_child_of_the_experiment_with_its_own_times() -> None:
    journal = load("endpoint-churn-demo.json")
    spans = run_spans(journal, RUN)
    assert spans.root.name == ROOT
    assert (spans.root.start_ns, spans.root.end_ns) == (ns(journal["start"]), ns(journal["end"]))
    assert spans.root.attributes == {
        RUN_ID: RUN,
        "chaostoolkit.experiment.title": journal["experiment"]["title"],
        "chaostoolkit.experiment.status": "completed",
        "chaostoolkit.experiment.deviated": False,
        "chaostoolkit.experiment.interrupted": False,
    }
    assert spans.root.error is None
    activities = [s for s in spans.children if s.name != FAULT_WINDOW]
    records = [
        *journal["steady_states"]["before"]["probes"],
        *journal["run"],
        *journal["steady_states"]["after"]["probes"],
        *journal["rollbacks"],
    ]
    assert [s.name for s in activities] == [f"activity: {r['activity']['name']}" for r in records]
    assert [(s.start_ns, s.end_ns) for s in activities] == [(ns(r["start"]), ns(r["end"])) for r in records]
    assert all(s.attributes[RUN_ID] == RUN for s in spans.children)
    sampler = next(s for s in activities if s.name == "activity: envoy-availability-across-the-fault")
    assert sampler.attributes["chaostoolkit.activity.background"] is True
    assert sampler.attributes["chaoscontour.activity.phase"] == "method"
    assert sampler.attributes["chaoscontour.activity.function"] == "chaoscontour.activities.envoy.envoy_availability"
    assert sampler.attributes["chaostoolkit.activity.status"] == "succeeded"
    phases = {s.attributes["chaoscontour.activity.phase"] for s in activities}
    assert phases == {"steady-state-before", "method", "steady-state-after", "rollback"}


@pytest.mark.parametrize(
    ("journal_name", "block", "unblock"),
    [
        ("endpoint-churn-demo.json", "block-apiserver-egress", "unblock-apiserver-egress"),
        ("xds-blackhole.json", "block-xds-egress", "unblock-xds-egress"),
    ],
)
def test_the_fault_window_runs_from_the_block_to_the_end_of_the_first_unblock_after_it(
    journal_name: str, block: str, unblock: str
) -> None:
    journal = load(journal_name)
    [window] = [s for s in run_spans(journal, RUN).children if s.name == FAULT_WINDOW]
    # The method's unblock removed it; the rollback's later one (a no-op) does not stretch the window.
    assert window.start_ns == ns(named(journal, "run", block)["start"])
    assert window.end_ns == ns(named(journal, "run", unblock)["end"])
    assert window.attributes["chaoscontour.fault.removed"] is True
    assert window.attributes["chaoscontour.fault.removed_by"] == unblock
    assert window.attributes["chaoscontour.fault.block"] == block
    assert window.attributes[RUN_ID] == RUN


def test_a_fault_only_the_rollback_removed_ends_with_the_rollback() -> None:
    journal = load("endpoint-churn-demo.json")
    journal["run"] = [r for r in journal["run"] if r["activity"]["name"] != "unblock-apiserver-egress"]
    [window] = [s for s in run_spans(journal, RUN).children if s.name == FAULT_WINDOW]
    assert window.end_ns == ns(journal["rollbacks"][0]["end"])


def test_a_fault_nothing_removed_ends_with_the_experiment_and_says_so() -> None:
    journal = load("endpoint-churn-demo.json")
    journal["run"] = [r for r in journal["run"] if r["activity"]["name"] != "unblock-apiserver-egress"]
    journal["rollbacks"] = []
    spans = run_spans(journal, RUN)
    [window] = [s for s in spans.children if s.name == FAULT_WINDOW]
    assert (window.start_ns, window.end_ns) == (
        ns(named(journal, "run", "block-apiserver-egress")["start"]),
        ns(journal["end"]),
    )
    assert window.attributes["chaoscontour.fault.removed"] is False
    assert "no unblock_apiserver_egress ran after it" in str(window.attributes["chaoscontour.fault.never_removed"])
    assert spans.root.attributes["chaoscontour.faults.never_removed"] == 1


def test_a_failed_block_ends_its_window_with_itself() -> None:
    journal = load("endpoint-churn-demo.json")
    block = named(journal, "run", "block-apiserver-egress")
    block["status"] = "failed"
    [window] = [s for s in run_spans(journal, RUN).children if s.name == FAULT_WINDOW]
    assert (window.start_ns, window.end_ns) == (ns(block["start"]), ns(block["end"]))


def test_an_interrupted_run_has_an_error_root_and_the_cut_activity_says_interrupted() -> None:
    journal = load("endpoint-churn-demo.json")
    journal["status"] = "interrupted"
    hold = named(journal, "run", "hold-the-fault-window")
    del hold["status"]  # chaoslib records none for an activity a SystemExit cut short
    spans = run_spans(journal, RUN)
    assert spans.root.attributes["chaostoolkit.experiment.interrupted"] is True
    assert spans.root.error == "interrupted"
    cut = next(s for s in spans.children if s.name == "activity: hold-the-fault-window")
    assert cut.attributes["chaostoolkit.activity.status"] == "interrupted"
    assert cut.error == "interrupted"


def test_a_failed_activity_carries_its_error_redacted_and_its_secrets_masked() -> None:
    journal = load("endpoint-churn-demo.json")
    block = named(journal, "run", "block-apiserver-egress")
    block["status"] = "failed"
    block["exception"] = [
        "Traceback (most recent call last):\n",
        "chaoslib.exceptions.ActivityFailed: Forbidden for s3cr3t-t0ken at https://admin:hunter22@api.example/x\n",
    ]
    block["output"] = {"note": "called with s3cr3t-t0ken", "headers": {"Authorization": "Bearer abc.def"}}
    secrets = secret_values({"k8s": {"token": "s3cr3t-t0ken", "short": "no"}})
    assert secrets == ("s3cr3t-t0ken",)
    span = next(s for s in run_spans(journal, RUN, secrets).children if s.name == "activity: block-apiserver-egress")
    error = str(span.attributes["chaostoolkit.activity.error"])
    assert error == f"Forbidden for {MASK} at https://<redacted>@api.example/x"
    assert span.error == error
    everything = json.dumps([span.attributes, span.error])
    for leaked in ("s3cr3t-t0ken", "hunter22", "abc.def"):
        assert leaked not in everything


def test_an_output_is_summarised_short_without_nested_values() -> None:
    output = {
        "held": True,
        "duration_s": 30.5,
        "reasons": ["a", "b"],
        "verification": {"confirmed": True, "evidence": "x"},
        "holder_identity": "contour-7d9f_" + "x" * 100,
        "missing": None,
    }
    summary = output_summary(output)
    assert summary.startswith("{held: true, duration_s: 30.5, reasons: [2 items], verification: {2 keys}, ")
    assert "holder_identity: 'contour-7d9f_xxx" in summary
    assert "x" * 60 not in summary
    assert summary.endswith("missing: null}")
    assert output_summary(None) == "null"
    assert output_summary(True) == "true"
    assert len(output_summary({f"key{i}": i for i in range(200)})) == MAX_SUMMARY_CHARS


def test_activity_arguments_are_never_exported() -> None:
    journal = load("endpoint-churn-demo.json")
    for record in journal["run"]:
        record["activity"].setdefault("provider", {}).setdefault("arguments", {})["password"] = "pa55word-arg"
    spans = run_spans(copy.deepcopy(journal), RUN)
    assert "pa55word-arg" not in json.dumps([s.attributes for s in spans.children])


def test_a_journal_without_times_still_gives_a_root() -> None:
    spans = run_spans({"status": "completed", "experiment": {"title": "t"}, "run": []}, RUN)
    assert (spans.root.start_ns, spans.root.end_ns, spans.children) == (0, 0, ())


def test_the_endpoint_and_service_name_come_from_the_sdks_variables() -> None:
    assert traces_endpoint({}) == "http://localhost:4318/v1/traces"
    assert traces_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "https://otel.example:4318/"}) == (
        "https://otel.example:4318/v1/traces"
    )
    signal_specific = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/t",
    }
    assert traces_endpoint(signal_specific) == "http://b/t"
    assert service_name({}) == "chaoscontour"
    assert service_name({"OTEL_SERVICE_NAME": "shop-gameday"}) == "shop-gameday"
