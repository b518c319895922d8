"""Whether the suite runs in CI (``CI=true``), and the one way a test says it cannot run here."""

from __future__ import annotations

import os

import pytest

__all__ = ["IN_CI", "unavailable"]

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip locally; fail in CI, where a skip would hide that the suite never ran."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)
