"""``tests/conftest.py``: with ``CI=true`` every kind of skip fails with its reason; without it, skips stay skips."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SKIPPING = """
import pytest

@pytest.fixture
def needs_root():
    pytest.skip("the sandbox needs root")

def test_skip_call():
    pytest.skip("no binaries here")

@pytest.mark.skipif(True, reason="set SOME_DIR")
def test_skipif_mark():
    pass

def test_skip_in_fixture(needs_root):
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
"""

IMPORTORSKIP = """
import pytest
pytest.importorskip("a_module_that_is_not_installed", reason="the [nothing] extra is not installed")

def test_never_collected():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_skipping=SKIPPING, test_importorskip=IMPORTORSKIP)
    return pytester


def test_with_ci_true_every_skip_fails_with_its_reason(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-rA", "--continue-on-collection-errors")
    # A skip in the setup phase (a mark, a fixture) is reported as an error there, one at collection as an error too.
    result.assert_outcomes(passed=1, failed=1, xfailed=1, errors=3)
    text = result.stdout.str()
    for reason in (
        "no binaries here",
        "set SOME_DIR",
        "the sandbox needs root",
        "the [nothing] extra is not installed",
    ):
        assert f"CI=true turns this skip into a failure; it was skipped because: {reason}" in text
    assert result.ret != 0


def test_without_ci_skips_stay_skips(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=4, xfailed=1)
    assert result.ret == 0
