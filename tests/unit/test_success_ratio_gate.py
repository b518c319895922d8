"""The gate, the summary and the report on a journal with ``envoy_success_ratio`` beside ``envoy_availability``: the
probe's declared tolerance is judged (chaostoolkit checks none in the method), a ratio Envoy's counters cannot give
fails it with the reason, and Envoy's ratio is printed beside the sampler's.

The probe's outputs are made by the probe's own arithmetic (``domain.envoy_traffic``) from counters shaped as Envoy
prints them, so the journal holds what a run would.
"""

import math
from itertools import pairwise
from typing import Any

import pytest

from chaoscontour.domain.envoy_traffic import interval, reading, traffic_summary
from chaoscontour.tools.report_html import render_html
from chaoscontour.tools.report_png import envoy_rates, render_png
from chaoscontour.tools.summary import markdown_summary
from chaoscontour.tools.timeline import report_data
from chaoscontour.tools.verdict import judge
from tests.support.journals import activity, completed_journal, ran

T0 = 1_790_000_000.0
CLUSTER = "default_echo_80"
RATIO_TOLERANCE = {"type": "range", "range": [0.999, 1.0], "target": "ratio"}


def counters(uptime: int, ok: int, failed: int = 0, listener_5xx: int | None = None) -> dict[str, int]:
    return {
        "server.uptime": uptime,
        f"cluster.{CLUSTER}.upstream_rq_total": ok + failed,
        f"cluster.{CLUSTER}.upstream_rq_2xx": ok,
        f"cluster.{CLUSTER}.upstream_rq_5xx": failed,
        "http.ingress_http.downstream_rq_5xx": failed if listener_5xx is None else listener_5xx,
    }


def probe_output(*readings: dict[str, int]) -> dict[str, Any]:
    """What ``envoy_success_ratio`` returns for these readings, one second apart from ``T0``."""
    taken = [reading(r, T0 + n) for n, r in enumerate(readings)]
    output = traffic_summary([interval(a, b, ["ingress_http"]) for a, b in pairwise(taken)], None)
    output.update({"cluster": None, "listener_prefixes": ["ingress_http"], "started_at": "x", "ended_at": "y"})
    return output


def journal_with(ratio_output: dict[str, Any], tolerance: Any = RATIO_TOLERANCE) -> dict[str, Any]:
    sampler = activity(
        "envoy-availability-across-the-fault", "chaoscontour.activities.envoy", "envoy_availability", background=True
    )
    declared = {"tolerance": tolerance} if tolerance is not None else {}
    ratio = activity(
        "envoy-success-ratio-across-the-fault",
        "chaoscontour.activities.traffic",
        "envoy_success_ratio",
        background=True,
        **declared,
    )
    timeline = [{"epoch_s": T0 + s, "requests": 1000, "successes": 1000 - (s == 2)} for s in range(3)]
    availability = {"requests": 3000, "successes": 2999, "availability": 2999 / 3000, "timeline": timeline}
    start = "2026-09-21T14:13:20.000000"  # T0
    return completed_journal(
        [ran(sampler, availability, start, 3.0), ran(ratio, ratio_output, start, 3.0)],
        steady_start=start,
        title="counters beside the sampler",
        duration=4.0,
    )


HEALTHY = probe_output(counters(100, 10), counters(101, 1010), counters(102, 2010), counters(103, 3109, 1))
# 3,102 answers, three of them 503s, and two of Envoy's own 503s for no cluster: 3,099 / 3,104 is under 0.999.
UNHEALTHY = probe_output(counters(100, 10), counters(101, 1010), counters(102, 3109, 3, listener_5xx=5))
RESTARTED = probe_output(counters(100, 10), counters(101, 1010), counters(2, 40), counters(3, 900))


def test_a_ratio_within_its_tolerance_passes_and_is_printed_beside_the_sampler():
    verdict = judge(journal_with(HEALTHY))
    assert verdict.passed, verdict.reasons
    (figures,) = verdict.traffic
    assert (figures.requests, figures.successes, figures.clusters) == (3100, 3099, (CLUSTER,))
    assert verdict.findings[0] == (
        "sampler 99.97 % of 3,000; Envoy's counters 99.97 % of 3,100 on cluster default_echo_80 "
        "(envoy-success-ratio-across-the-fault)"
    )
    summary = markdown_summary(verdict)
    assert "### Envoy's own counters (`envoy-success-ratio-across-the-fault`)" in summary
    assert "| 99.97 % | 3099 / 3100 | 1 | 0 | default_echo_80 |" in summary
    assert verdict.findings[0] in summary


def test_a_ratio_outside_its_tolerance_fails_the_gate_with_the_figures():
    verdict = judge(journal_with(UNHEALTHY))
    assert not verdict.passed
    (reason,) = verdict.reasons
    assert reason.startswith("method probe 'envoy-success-ratio-across-the-fault' tolerance not met: expected")
    assert "got ratio 0.998389 (3099 of 3104 requests not 5xx on default_echo_80)" in reason
    assert "(2 of them Envoy's own 5xx for no cluster)" in verdict.findings[0]


def test_a_restart_in_the_window_fails_a_declared_tolerance_and_says_why():
    verdict = judge(journal_with(RESTARTED))
    (reason,) = verdict.reasons
    assert "Envoy's counters give no ratio: Envoy's counters were reset in the window (Envoy restarted:" in reason
    assert "Envoy's counters give no ratio (Envoy's counters were reset" in verdict.findings[0]
    summary = markdown_summary(verdict)
    assert "| - | - | - | - | default_echo_80 |" in summary and "No ratio: Envoy's counters were reset" in summary


@pytest.mark.parametrize(
    ("tolerance", "passed"),
    [
        ({"type": "jsonpath", "path": "$.restarted", "expect": False}, True),
        ({"type": "range", "range": [0.9999, 1.0], "target": "ratio"}, False),
        ({"type": "range", "range": [0, 100], "target": "unrouted_5xx"}, True),
    ],
)
def test_any_tolerance_chaostoolkit_knows_is_judged_as_chaostoolkit_would(tolerance, passed):
    assert judge(journal_with(HEALTHY, tolerance)).passed is passed


def test_a_tolerance_with_an_unresolved_placeholder_cannot_be_checked_and_fails():
    placeholder = {"type": "range", "range": ["${min_success_ratio}", 1.0], "target": "ratio"}
    (reason,) = judge(journal_with(HEALTHY, placeholder)).reasons
    assert "could not be checked" in reason and "write its bounds as numbers" in reason


def test_without_a_tolerance_the_ratio_is_shown_and_noted_as_not_judged():
    verdict = judge(journal_with(UNHEALTHY, tolerance=None))
    assert verdict.passed
    assert verdict.notes == (
        "'envoy-success-ratio-across-the-fault' declares no tolerance: Envoy's success ratio was measured, not judged",
    )


def test_the_report_shows_envoys_counts_per_interval():
    data = report_data(journal_with(UNHEALTHY))
    assert data.origin_epoch_s == T0
    xs, sent, failed = envoy_rates(data.verdict.traffic[0].intervals, T0)
    assert xs == [0.0, 1.0, 2.0]
    assert sent == [1000.0, 2104.0, 2104.0] and failed == [0.0, 5.0, 5.0]
    page = render_html(data, "x.png")
    assert (
        "<h2>Envoy's own counters</h2>" in page and "<td>99.84 %</td><td>3099 / 3104</td><td>5</td><td>2</td>" in page
    )


def test_a_restart_or_a_failed_reading_leaves_a_gap_in_the_plot():
    xs, sent, _ = envoy_rates([(T0, 1.0, 10, 0), (T0 + 1, 1.0, None, None), (T0 + 5, 2.0, 4, 0)], T0)
    assert xs == [0.0, 1.0, 2.0, 5.0, 7.0]
    assert sent[0] == 10 and math.isnan(sent[1]) and math.isnan(sent[2]) and sent[3:] == [2.0, 2.0]


def test_the_png_draws_envoys_counts_beside_the_sampler(tmp_path):
    pytest.importorskip("matplotlib")
    data = report_data(journal_with(RESTARTED))
    render_png(data, tmp_path / "run.png")
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
