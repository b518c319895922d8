"""The whole suite: with ``CI=true`` a skip is a failure.

A skipped test proves nothing, and in CI it would turn a suite that never ran into a green job. Locally a test may
still skip with its reason (no root for the sandbox, no binaries, an optional extra not installed); in CI (``CI=true``,
as ``.ci/run`` and GitHub Actions set it) the same report becomes a failure that carries that reason. This covers
skips raised anywhere: a ``skip``/``skipif`` mark, ``pytest.skip`` in a test or a fixture, and ``importorskip`` at a
module's top (a collection skip). The integration and e2e conftests already fail instead of skipping in CI; this hook
is the net under everything else. An expected failure (``xfail``) is not a skip and is left alone.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _skip_reason(longrepr: Any) -> str:
    # A skip's longrepr is (path, line, "Skipped: <reason>").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_the_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (
            f"CI=true turns this skip into a failure; it was skipped because: {_skip_reason(report.longrepr)}"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    _fail_the_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    _fail_the_skip(outcome.get_result())
