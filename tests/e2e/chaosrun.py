"""The real ``chaos`` CLI against the sandbox: run an experiment (or start one to signal it) and read its journal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAOS = str(Path(sys.executable).with_name("chaos"))
ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "experiments"
# endpoint-churn-during-outage.json's windows for the e2e runs, every value a string as a user passes it with --var:
# the window after the kill is as short as what each outcome needs, ten seconds with one of two endpoints gone.
CHURN_WINDOWS = {
    "fault_window_s": "10",
    "freeze_wait_s": "30",
    "sample_rate_per_s": "50",
    "sampling_s": "90",
    "convergence_bound_s": "60",
    "convergence_successes": "10",
    "request_timeout_s": "5",
}
HERE = Path(__file__).resolve().parent


def default_signal_dispositions() -> None:
    for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_DFL)


# chaoslib logs "Action: <name>" as it starts an action; the shipped experiments hold the fault with this one.
HOLD = "hold-the-fault-window"
HOLDING = f"Action: {HOLD}"


@dataclass
class ChaosRun:
    """One ``chaos run`` process writing its journal and log into ``workdir``."""

    experiment: Path
    workdir: Path
    env: dict[str, str]
    name: str = "run"
    variables: dict[str, str] = field(default_factory=dict)
    rollback_strategy: str = ""
    proc: subprocess.Popen[str] | None = field(default=None, init=False)

    @property
    def journal_path(self) -> Path:
        return self.workdir / f"journal-{self.name}.json"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"chaostoolkit-{self.name}.log"

    def start(self) -> ChaosRun:
        environ = dict(os.environ, **self.env)
        environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), environ.get("PYTHONPATH", "")) if p)
        options = [arg for key, value in self.variables.items() for arg in ("--var", f"{key}={value}")]
        if self.rollback_strategy:
            options += ["--rollback-strategy", self.rollback_strategy]
        self.proc = subprocess.Popen(
            [
                *(CHAOS, "--no-version-check", "--log-file", str(self.log_path), "run", *options),
                *("--journal-path", str(self.journal_path), str(self.experiment)),
            ],
            env=environ,
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            # A suite started from a background shell inherits SIGINT (and SIGQUIT) ignored; a user's `chaos` has
            # the defaults, and the signal tests must see what a user sees.
            preexec_fn=default_signal_dispositions,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, timeout_s: float) -> float:
        """Wait until the chaos log contains ``text``; return the monotonic time it was seen."""
        deadline = time.monotonic() + timeout_s
        while text not in self.log():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"chaos exited ({self.proc.returncode}) before logging {text!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"chaos did not log {text!r} within {timeout_s:.0f} s:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        return time.monotonic()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"chaos run {self.name} did not finish within {timeout_s:.0f} s:\n{self.log()[-3000:]}"
            ) from exc

    def journal(self) -> dict[str, Any]:
        assert self.journal_path.exists(), f"no journal written; log:\n{self.log()[-3000:]}"
        return dict(json.loads(self.journal_path.read_text()))

    def run(self, timeout_s: float) -> dict[str, Any]:
        self.start()
        self.wait(timeout_s)
        return self.journal()


def keep_journal(run: ChaosRun) -> None:
    """Copy the journal where test_journals_report.py (and CI) judges and renders it
    (`CHAOSCONTOUR_SANDBOX_JOURNALS`)."""
    target = os.environ.get("CHAOSCONTOUR_SANDBOX_JOURNALS")
    if target and run.journal_path.exists():
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(run.journal_path, Path(target) / run.journal_path.name)


def activity(journal: dict[str, Any], name: str, where: str = "run") -> dict[str, Any]:
    """The journal entry of the activity called ``name`` in ``run`` or ``rollbacks``."""
    for entry in journal.get(where) or []:
        if entry["activity"]["name"] == name:
            return dict(entry)
    names = [e["activity"]["name"] for e in journal.get(where) or []]
    raise AssertionError(f"no activity {name!r} in the journal's {where}: {names}")


def hold(duration_s: float | str) -> dict[str, Any]:
    """The shipped experiments' interruptible wait (``chaoscontour.activities.timing.wait``)."""
    return {
        "type": "action",
        "name": HOLD,
        "provider": {
            "type": "python",
            "module": "chaoscontour.activities.timing",
            "func": "wait",
            "arguments": {"duration_s": duration_s},
        },
    }


def variant(
    *, title: str, method_tail: list[dict[str, Any]], block_pause_s: float | str = 0, extra_probes: list | None = None
) -> dict[str, Any]:
    """The shipped apiserver-outage experiment's configuration, runtime, steady state, fault and rollbacks, with a
    short method ending in ``method_tail``: the way to force one outcome while keeping what is under test (the
    shipped rollback). The fault is not verified here (``verify: false``) so that it stays shorter than Contour's
    10 s renew deadline and the leader survives it."""
    shipped = json.loads((EXPERIMENTS / "apiserver-outage.json").read_text())
    block = next(a for a in shipped["method"] if a["name"] == "block-apiserver-egress")
    block = json.loads(json.dumps(block))
    block["provider"]["arguments"]["verify"] = False
    hypothesis = json.loads(json.dumps(shipped["steady-state-hypothesis"]))
    hypothesis["probes"] += extra_probes or []
    return {
        "version": shipped["version"],
        "title": title,
        "description": "a variant of experiments/apiserver-outage.json made by tests/e2e (same rollbacks)",
        "configuration": shipped["configuration"],
        "runtime": shipped["runtime"],
        "steady-state-hypothesis": hypothesis,
        "method": [block, *([hold(block_pause_s)] if block_pause_s else []), *method_tail],
        "rollbacks": shipped["rollbacks"],
    }


def as_vars(experiment: Path, overrides: dict[str, str]) -> dict[str, str]:
    """Every configuration key of ``experiment`` as a ``--var key=value`` string: ``overrides`` first, else its
    environment variable (the sandbox's settings), else its default. What a user typing ``chaos run --var``
    passes, and what chaostoolkit hands the activities as is, with no type coercion."""
    configuration = json.loads(experiment.read_text())["configuration"]
    values = {}
    for key, entry in configuration.items():
        value = os.environ.get(entry.get("key", ""), entry.get("default", "")) if isinstance(entry, dict) else entry
        values[key] = overrides.get(key, str(value))
    return values


def write(experiment: dict[str, Any], path: Path) -> Path:
    path.write_text(json.dumps(experiment, indent=2))
    return path
