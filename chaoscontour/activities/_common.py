"""What every activity module shares: turning bad input into a clear ``ActivityFailed``, and this run's id."""

import functools
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from chaoslib.exceptions import ActivityFailed
from logzero import logger

from chaoscontour.domain.identity import InvalidHolderIdentity
from chaoscontour.domain.inputs import InvalidInput
from chaoscontour.domain.selectors import InvalidSelector

__all__ = ["Progress", "process_run_id", "user_errors"]

F = TypeVar("F", bound=Callable[..., Any])

# Made once per process: `chaos run` executes the fault and its rollback in one process, so both agree on it
# without any state kept between activities, and two concurrent runs never share it.
_PROCESS_RUN_ID = "r" + uuid.uuid4().hex[:10]


def process_run_id() -> str:
    """The run id of this ``chaos run`` process (used when an experiment does not set ``run_id``)."""
    return _PROCESS_RUN_ID


def user_errors(fn: F) -> F:
    """Report invalid arguments as ``ActivityFailed`` naming the activity; the signature is kept for discovery."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (InvalidInput, InvalidSelector, InvalidHolderIdentity) as exc:
            raise ActivityFailed(f"{fn.__name__}: {exc}") from exc

    return wrapper  # type: ignore[return-value]


class Progress:
    """Logs a line at most every ``every_s`` seconds while an activity waits, so long waits are never silent."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def __call__(self, message: str, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            logger.info(message)
