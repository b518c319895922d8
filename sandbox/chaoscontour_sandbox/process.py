"""One way to run a background program: its own session, a log, a readiness wait that notices an exit, a clean stop.

Every long-lived process of the sandbox goes through :class:`Process` -- the control plane's etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, the node's containerd, kubelet and kube-proxy, and the background holder
``chaoscontour-sandbox up`` starts -- and so do the test helpers' Envoy and backend. What it guarantees:

- **Its own session** (``setsid``): a Ctrl-C in the terminal reaches only the parent, which stops its children in
  order; and :meth:`Process.stop` signals the whole process group, which covers wrappers such as ``ip netns exec``
  or ``sh -c`` and whatever they started in it.
- **Default signal dispositions.** A program started from a non-interactive shell's background job inherits
  ``SIGINT`` and ``SIGQUIT`` ignored (POSIX, "Shell Command Language", 2.11), and a parent may ignore others: the
  child would then shrug off the signals its own stop relies on. The argv is run through coreutils'
  ``env --default-signal`` (in the child, before ``exec``, without a Python ``preexec_fn``, which is unsafe in a
  threaded parent).
- **A log**: stdout and stderr appended to one file (a ``# argv`` header line first, unless ``header=False``);
  :meth:`Process.tail` gives its end for error messages.
- **Readiness that notices an exit**: :meth:`Process.wait_ready` polls a check and fails at once, with the log's
  tail, when the process (or another one it is told to watch) exits meanwhile, instead of waiting out its timeout.
- **TERM, then KILL**: :meth:`Process.stop` sends ``SIGTERM`` to the group, ``SIGKILL`` after the grace period,
  reaps the process and closes the log. Idempotent. :func:`stop_pid` does the same for a process that another
  Python process started (the sandbox's ``down``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = [
    "free_port",
    "Process",
    "ProcessExited",
    "ProcessTimeout",
    "alive",
    "identity",
    "is_same",
    "stop_pid",
    "tail",
]

LOG_TAIL_LINES = 30
T = TypeVar("T")


class ProcessExited(RuntimeError):
    """A process exited while we waited for it to become ready (the message carries its log's tail)."""


class ProcessTimeout(RuntimeError):
    """A process did not become ready in time (the message carries its log's tail)."""


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log at ``path`` (or a note that there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def _default_signals(argv: Sequence[str]) -> list[str]:
    env = shutil.which("env")
    return [env, "--default-signal", *argv] if env else list(argv)


class Process:
    """A program running in its own session with its output in ``log``. Start it with :meth:`start`."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path, log_file: IO[bytes]) -> None:
        self.name = name
        self.popen = popen
        self.log = log
        self._log_file = log_file

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        header: bool = True,
    ) -> Process:
        """Start ``argv`` as ``name``, appending its output to ``log``; raise :class:`OSError` if it cannot run."""
        log.parent.mkdir(parents=True, exist_ok=True)
        log_file = log.open("ab")
        if header:
            log_file.write(f"# {' '.join(argv)}\n".encode())
            log_file.flush()
        try:
            popen = subprocess.Popen(
                _default_signals(argv),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
            )
        except OSError:
            log_file.close()
            raise
        return cls(name, popen, log, log_file)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        """The exit code, or ``None`` while it runs."""
        return self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout_s: float | None = None) -> int:
        """Wait for the exit and return the code (negative: killed by that signal)."""
        return self.popen.wait(timeout=timeout_s)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return tail(self.log, lines)

    def exited_message(self) -> str:
        return f"{self.name} exited with code {self.popen.returncode}; the end of {self.log}:\n{self.tail()}"

    def wait_ready(
        self,
        check: Callable[[], T | None],
        timeout_s: float,
        *,
        what: str = "",
        watch: Iterable[Process] = (),
        interval_s: float = 0.2,
        errors: tuple[type[BaseException], ...] = (OSError,),
    ) -> T:
        """Call ``check`` until it returns something truthy and return that.

        Raises :class:`ProcessExited` as soon as this process or one of ``watch`` exits, and
        :class:`ProcessTimeout` after ``timeout_s``; both carry the log's tail. A ``check`` that raises one of
        ``errors`` counts as "not yet" (the last such error is quoted on timeout).
        """
        deadline = time.monotonic() + timeout_s
        last: BaseException | None = None
        everyone = [self, *[p for p in watch if p is not self]]
        while True:
            for proc in everyone:
                if proc.poll() is not None:
                    raise ProcessExited(proc.exited_message())
            try:
                result = check()
                if result:
                    return result
            except errors as exc:
                last = exc
            if time.monotonic() > deadline:
                reason = f" ({last})" if last else ""
                raise ProcessTimeout(
                    f"{self.name} was not ready within {timeout_s:.0f} s{': ' + what if what else ''}{reason}; "
                    f"the end of {self.log}:\n{self.tail()}"
                )
            time.sleep(interval_s)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process's group (its session), if it still runs."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def stop(self, grace_s: float = 10.0) -> int:
        """``SIGTERM`` to the group, ``SIGKILL`` after ``grace_s``; reap, close the log, return the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.popen.wait()
        # Anything the process left behind in its session goes too (nothing, normally).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.close_log()
        return code

    def close_log(self) -> None:
        if not self._log_file.closed:
            self._log_file.close()


def alive(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie does not; a process we may not signal does)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def identity(pid: int | None) -> dict[str, Any] | None:
    """What tells process ``pid`` from a later one that reuses its number: its start time (clock ticks since boot,
    ``/proc/PID/stat`` field 22, which an ``exec`` keeps); ``None`` if it does not run."""
    if not alive(pid):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return {"pid": pid, "start_time": int(stat.rsplit(")", 1)[1].split()[19])}


def is_same(recorded: Mapping[str, Any], word: str = "") -> bool:
    """Whether the process ``recorded`` by :func:`identity` still runs (same PID and start time), and if ``word`` is
    given, has it among the words of its command line."""
    pid = recorded.get("pid")
    if not isinstance(pid, int) or identity(pid) != {"pid": pid, "start_time": recorded.get("start_time")}:
        return False
    if not word:
        return True
    try:
        return word.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def stop_pid(pid: int, grace_s: float, *, say: Callable[[str], None] | None = None, name: str = "") -> None:
    """Stop a process started elsewhere in its own session: ``SIGTERM`` to its group, ``SIGKILL`` after ``grace_s``."""
    if not alive(pid):
        return
    label = name or f"pid {pid}"
    if say:
        say(f"stopping {label} (pid {pid})")
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive(pid) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    if alive(pid):
        if say:
            say(f"{label} did not stop within {grace_s:.0f} s; killing it")
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now (the kernel's pick), for a server about to start."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
