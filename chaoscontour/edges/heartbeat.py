"""The dead-man switch: a thread of the ``chaos`` process that keeps a fault's expiry Job from expiring.

The expiry Job owns the fault's NetworkPolicy; when its ``activeDeadlineSeconds`` passes, the job controller fails
it, the TTL-after-finished controller deletes it and the garbage collector deletes the policy (Kubernetes' own
controllers, nothing of ours to install). The deadline starts short and this thread pushes it forward every few
seconds while the run lives, never past the fault's hard cap (``duration_s``). When the process dies (``kill -9``,
a lost node, chaostoolkit skipping rollbacks after SIGTERM under the `default` strategy), the pushes stop and the
fault ends within ``dead_man_s`` plus the controllers' few seconds. A stop request (SIGINT/SIGTERM/SIGUSR1) stops
the pushes too, so an interrupted run's fault never outlives the dead-man interval.
"""

import threading
import time
from collections.abc import Callable
from typing import Any

from logzero import logger

from chaoscontour.domain.verification import next_deadline_s
from chaoscontour.edges import stop
from chaoscontour.edges.run_state import RUN

__all__ = ["Heartbeat", "key_of", "running", "stop_heartbeat", "stop_heartbeats"]

# The heartbeats running, per (namespace, key): stored in this process's run state, which a reset stops and forgets.
_RUNNING = RUN.heartbeats
_LOCK = threading.Lock()


class Heartbeat:
    """Extends one Job's deadline every ``every_s`` seconds via ``extend(deadline_s) -> still_there``."""

    def __init__(
        self,
        key: tuple[str, str],
        extend: Callable[[int], bool],
        *,
        started: float,
        dead_man_s: float,
        duration_s: float,
        every_s: float,
    ) -> None:
        self.key = key
        self._extend = extend
        self.started = started
        self.dead_man_s = dead_man_s
        self.duration_s = duration_s
        self.every_s = every_s
        self.deadline_s = next_deadline_s(0.0, dead_man_s, duration_s)
        self.beats = 0
        self.failures = 0
        self.ended = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"chaoscontour-heartbeat-{key[1]}", daemon=True)

    def start(self) -> "Heartbeat":
        with _LOCK:
            old = _RUNNING.pop(self.key, None)
            _RUNNING[self.key] = self
        if old is not None:
            old.stop("replaced")
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def expires_in_s(self) -> float:
        """Seconds until the Job's current deadline, by our monotonic clock (a lower bound on the real one)."""
        return self.started + self.deadline_s - time.monotonic()

    def stop(self, why: str) -> None:
        self.ended = self.ended or why
        self._done.set()
        with _LOCK:
            if _RUNNING.get(self.key) is self:
                del _RUNNING[self.key]

    def summary(self) -> dict[str, Any]:
        return {
            "dead_man_s": self.dead_man_s,
            "beats": self.beats,
            "failures": self.failures,
            "deadline_s": self.deadline_s,
            "running": self.alive and not self._done.is_set(),
            "ended": self.ended or None,
        }

    def _run(self) -> None:
        while not self._done.wait(self.every_s):
            if stop.requested():
                logger.warning(
                    f"dead-man switch: {stop.reason()}; no longer extending the fault, which ends within "
                    f"{self.dead_man_s:.0f} s unless a rollback removes it first"
                )
                self.stop("stop requested")
                return
            wanted = next_deadline_s(time.monotonic() - self.started, self.dead_man_s, self.duration_s)
            if wanted <= self.deadline_s:
                if wanted >= int(self.duration_s + 0.999):
                    self.stop("hard cap reached")
                    return
                continue
            try:
                if not self._extend(wanted):
                    self.stop("expiry Job gone")
                    return
            except Exception as exc:  # a hiccup must not end the switch; the deadline still holds
                self.failures += 1
                logger.warning(f"dead-man switch: could not extend the fault's deadline ({exc}); will retry")
                continue
            self.deadline_s = wanted
            self.beats += 1


def key_of(fault: str, run_id: str = "") -> str:
    """The key of a fault's heartbeat: ``<fault>/<run>``; with no run, the key of every run of that fault."""
    return f"{fault}/{run_id}"


def running(namespace: str, run_id: str) -> Heartbeat | None:
    with _LOCK:
        return _RUNNING.get((namespace, run_id))


def stop_heartbeat(namespace: str, key: str) -> None:
    """Stop the heartbeat kept under ``key`` in ``namespace``."""
    beat = running(namespace, key)
    if beat is not None:
        beat.stop("fault removed")


def stop_heartbeats(namespace: str, key: str) -> None:
    """Stop the heartbeat of one run (``<fault>/<run>``: that key exactly, so run ``r1`` never stops ``r12``), or
    of every run of one fault (``<fault>/``, no run id), in ``namespace``."""
    every_run = key.endswith("/")
    with _LOCK:
        beats = [
            b for (ns, k), b in _RUNNING.items() if ns == namespace and (k == key or (every_run and k.startswith(key)))
        ]
    for beat in beats:
        beat.stop("fault removed")
