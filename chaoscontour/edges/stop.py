"""A runner told to stop, stops: one process-wide flag that every long wait of ours watches.

Why it is needed: chaostoolkit turns SIGTERM into ``InterruptExecution`` and SIGUSR1/SIGUSR2 into ``SystemExit``
(chaoslib/exit.py) in the *main* thread only, then waits for the background activities' thread pool to finish
before it plays the rollbacks (chaoslib/run.py, ``pool.shutdown(wait=True)``). A background sampler that does not
know about the signal keeps the run, and the fault, alive for its whole ``duration_s``; and the kubelet's SIGKILL
after a pod's grace period would then come before any rollback.

So, when this module is imported in the main thread (chaostoolkit validates an experiment, importing its activity
modules, before it runs anything), it chains a flag-setting step in front of chaoslib's signal handlers and of
SIGINT's. Every wait loop of ours sleeps with :func:`wait`, which returns early once the flag is set, and then
returns what it measured so far.
"""

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["request", "requested", "reason", "wait", "reset", "install"]

_STOP = threading.Event()
_REASON: list[str] = []
_WRAPPED = "__chaoscontour_stop__"


def request(why: str) -> None:
    """Ask every wait of ours to end now (what a signal does; tests call it directly)."""
    if not _STOP.is_set():
        _REASON.append(why)
    _STOP.set()


def requested() -> bool:
    return _STOP.is_set()


def reason() -> str:
    return _REASON[0] if _REASON else ""


def reset() -> None:
    """Forget an earlier stop request (for tests that run several activities in one process)."""
    _STOP.clear()
    _REASON.clear()


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``; returns ``True`` at once if (or as soon as) a stop was requested."""
    return _STOP.wait(max(0.0, seconds))


def _wrap(handler: Callable[..., Any], name: str) -> Callable[..., Any]:
    if getattr(handler, _WRAPPED, False):
        return handler

    def stop_then(signum: int, frame: FrameType | None = None) -> Any:
        request(f"{name} received")
        return handler(signum, frame)

    setattr(stop_then, _WRAPPED, True)
    stop_then.__name__ = getattr(handler, "__name__", "handler")
    return stop_then


def install() -> bool:
    """Chain the stop flag into chaostoolkit's and SIGINT's handlers; a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        from chaoslib import exit as chaos_exit
    except ImportError:  # pragma: no cover - chaoslib is a dependency
        chaos_exit = None
    if chaos_exit is not None:
        # exit_signals() looks these names up when a run starts, so replacing them covers the run to come...
        for attr, name in (("_terminate_now", "SIGTERM"), ("_leave_now", "SIGUSR1/SIGUSR2")):
            original = getattr(chaos_exit, attr, None)
            if callable(original):
                setattr(chaos_exit, attr, _wrap(original, name))
    # ...and this covers a run already started (and SIGINT, which chaostoolkit leaves to Python).
    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", None), getattr(signal, "SIGUSR2", None)):
        if signum is None:
            continue
        current = signal.getsignal(signum)
        if current is signal.default_int_handler or (
            callable(current) and getattr(current, "__module__", "") == "chaoslib.exit"
        ):
            signal.signal(signum, _wrap(current, signal.Signals(signum).name))
    return True


install()
