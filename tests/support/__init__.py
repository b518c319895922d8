"""Helpers that start real components for tests and the benchmark: a local HTTP backend and a real Envoy."""

import subprocess


def stop_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> None:  # type: ignore[type-arg]
    """Terminate ``proc`` if it still runs, kill it after ``timeout_s``, and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
