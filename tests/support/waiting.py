"""Polling until a condition holds, for tests: one copy, used by the e2e suite and the real-node helpers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(what: str, timeout_s: float, check: Callable[[], T | None], interval_s: float = 0.25) -> T:
    """Call ``check`` until it returns something truthy and return that; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
