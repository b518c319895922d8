"""Test-only activities that force an outcome (an action failure, a probe that flips or raises), so the shipped
experiment's rollbacks can be exercised under each outcome with the real ``chaos`` CLI."""

from pathlib import Path

from chaoslib.exceptions import ActivityFailed

__all__ = ["fail", "true_then_false", "true_then_raise"]


def fail() -> None:
    raise ActivityFailed("forced action failure (test)")


def _calls(state_file: str) -> int:
    path = Path(state_file)
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


def true_then_false(state_file: str) -> bool:
    """True on the first call (steady state before), false afterwards (after): a deviation."""
    return _calls(state_file) == 1


def true_then_raise(state_file: str) -> bool:
    """True on the first call, then raises: a steady-state probe that fails after the method."""
    if _calls(state_file) == 1:
        return True
    raise ActivityFailed("forced probe exception (test)")
