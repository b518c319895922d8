"""The sandbox's tests follow the same rule as the extension's: with ``CI=true`` a skip is a failure."""

from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport

__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]
