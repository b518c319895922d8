"""Waiting inside an experiment's method, strictly and interruptibly.

Chaos Toolkit's own `pauses` take the value as written: `"pauses": {"after": "${fault_window_s}"}` with
`--var fault_window_s=30` reaches its `time.sleep` as the string "30" and aborts the run mid-method with a
`TypeError`, fault in place. This action parses its argument like every other chaoscontour activity, and ends at
once on SIGINT, SIGTERM or SIGUSR1 so that the rollbacks run without delay.
"""

from typing import Any, Dict

from chaoslib.exceptions import InterruptExecution
from logzero import logger

from chaoscontour.activities._common import user_errors
from chaoscontour.domain.inputs import parse_seconds
from chaoscontour.edges import stop

__all__ = ["wait"]


@user_errors
def wait(duration_s: float = 0) -> Dict[str, Any]:
    """Wait `duration_s` seconds (0 to 86400; `"45"` from `--var` is 45), the pause between two method steps.

    Returns `waited_s`. When the run is told to stop (SIGINT, SIGTERM, SIGUSR1) the wait ends at once and the run
    is interrupted, so that chaostoolkit goes on to the rollbacks instead of sleeping the window out.
    """
    seconds = parse_seconds(duration_s, "duration_s", allow_zero=True)
    if seconds:
        logger.info(f"wait: {seconds:g} s")
    if stop.wait(seconds):
        raise InterruptExecution(f"wait interrupted after a stop request ({stop.reason()})")
    return {"waited_s": seconds}
