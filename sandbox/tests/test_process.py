"""The one process helper: own session, log, readiness that notices an exit, TERM then KILL to the group."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from chaoscontour_sandbox.process import Process, ProcessExited, ProcessTimeout, alive, stop_pid, tail


def _ignored_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return int(line.split()[1], 16)
    raise AssertionError("no SigIgn line")


def test_output_goes_to_the_log_after_a_header_line(tmp_path: Path) -> None:
    proc = Process.start("hello", ["sh", "-c", "echo out; echo err >&2"], tmp_path / "logs" / "hello.log")
    assert proc.wait(5) == 0
    proc.close_log()
    lines = (tmp_path / "logs" / "hello.log").read_text().splitlines()
    assert lines == ["# sh -c echo out; echo err >&2", "out", "err"]


def test_the_child_leads_its_own_session(tmp_path: Path) -> None:
    proc = Process.start("sleeper", ["sleep", "30"], tmp_path / "s.log")
    try:
        assert os.getsid(proc.pid) == proc.pid
    finally:
        proc.stop(1)


def test_signals_ignored_by_the_parent_are_back_to_default_in_the_child(tmp_path: Path) -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = Process.start("sleeper", ["sleep", "30"], tmp_path / "s.log")
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        proc.wait_ready(lambda: Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(b"sleep"), 5)
        assert _ignored_signals(proc.pid) & (1 << (signal.SIGINT - 1)) == 0
    finally:
        proc.stop(1)


def test_waiting_for_readiness_fails_at_once_with_the_log_tail_when_the_process_exits(tmp_path: Path) -> None:
    proc = Process.start("crasher", ["sh", "-c", "echo cannot bind; exit 3"], tmp_path / "c.log")
    began = time.monotonic()
    with pytest.raises(ProcessExited, match=r"(?s)crasher exited with code 3.*\ncannot bind"):
        proc.wait_ready(lambda: False, 30)
    assert time.monotonic() - began < 5


def test_waiting_for_readiness_also_watches_other_processes(tmp_path: Path) -> None:
    sleeper = Process.start("sleeper", ["sleep", "30"], tmp_path / "s.log")
    other = Process.start("dependency", ["sh", "-c", "exit 1"], tmp_path / "d.log")
    try:
        with pytest.raises(ProcessExited, match="dependency exited with code 1"):
            sleeper.wait_ready(lambda: False, 30, watch=[other])
    finally:
        sleeper.stop(1)


def test_a_timeout_names_what_was_awaited_and_the_last_error(tmp_path: Path) -> None:
    proc = Process.start("slow", ["sleep", "30"], tmp_path / "s.log")

    def refused() -> bool:
        raise ConnectionRefusedError("port 8000")

    try:
        with pytest.raises(ProcessTimeout, match=r"slow was not ready within 0 s: /healthz \(port 8000\)"):
            proc.wait_ready(refused, 0.3, what="/healthz")
    finally:
        proc.stop(1)


def test_stop_kills_the_whole_group_after_the_grace_period_when_term_is_ignored(tmp_path: Path) -> None:
    # A wrapper shell that ignores TERM and a grandchild: both must go.
    script = "trap '' TERM; sleep 60 & echo $!; wait"
    proc = Process.start("stubborn", ["sh", "-c", script], tmp_path / "s.log", header=False)
    grandchild = proc.wait_ready(lambda: int(tail(proc.log, 1) or 0) if tail(proc.log, 1).isdigit() else 0, 5)
    began = time.monotonic()
    proc.stop(0.5)
    assert 0.4 < time.monotonic() - began < 5
    deadline = time.monotonic() + 5
    while alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(grandchild)
    assert not alive(proc.pid)


def test_stop_pid_stops_a_process_started_elsewhere(tmp_path: Path) -> None:
    proc = Process.start("elsewhere", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "e.log")
    said: list[str] = []
    stop_pid(proc.pid, 5, say=said.append, name="elsewhere")
    proc.wait(5)
    assert not alive(proc.pid)
    assert said == [f"stopping elsewhere (pid {proc.pid})"]
