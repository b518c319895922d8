"""The traces control against a real OpenTelemetry Collector and the real kube-apiserver.

The pinned ``otelcol`` (built by ``chaoscontour-sandbox binaries build otelcol``) listens for OTLP/HTTP on a free
loopback port and writes every span it receives, with its attributes, to its log (debug exporter, ``detailed``). The
real ``chaos run`` CLI plays an experiment with the control: the real ``block_apiserver_egress`` on two
Contour-labelled pods (``verify: false``: no CNI runs here, the API server only stores the policy), a background and
a foreground ``wait``, the real ``unblock_apiserver_egress``, and the same unblock again as the rollback. The test
reads the spans back from the Collector's log and compares them with the journal: the root, every activity, and the
fault window from the block's start to the method's unblock's end (not the rollback's), all with the run's id.
Then the same run cut short by chaostoolkit's graceful exit (what a tripped stop condition sends), whose window ends
with the rollback's unblock; and a run against an endpoint nothing listens on, which succeeds and says so once.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.tools.journal import load_journal
from chaoscontour_sandbox.collector import LOG_FILE, start_collector
from chaoscontour_sandbox.process import Process
from tests.support.chaosrun import CHAOS, default_signal_dispositions
from tests.support.otel_log import MS, journal_ns, wait_for_spans

NETWORK = "chaoscontour.activities.network"
TIMING = "chaoscontour.activities.timing"


def _experiment(namespace: str, run_id: str, hold_s: float) -> dict[str, Any]:
    scope = {"namespace": namespace, "run_id": run_id}
    return {
        "version": "1.0.0",
        "title": "Integration: the run's spans reach an OpenTelemetry Collector",
        "description": "see tests/integration/test_traces.py",
        "controls": [{"name": "traces", "provider": {"type": "python", "module": "chaoscontour.controls.traces"}}],
        "method": [
            {
                "type": "action",
                "name": "block-apiserver-egress",
                "provider": {
                    "type": "python",
                    "module": NETWORK,
                    "func": "block_apiserver_egress",
                    "arguments": {**scope, "duration_s": 300, "verify": "false"},
                },
            },
            {
                "type": "action",
                "name": "wait-in-the-background",
                "background": True,
                "provider": {"type": "python", "module": TIMING, "func": "wait", "arguments": {"duration_s": 1}},
            },
            {
                "type": "action",
                "name": "hold-the-fault-window",
                "provider": {"type": "python", "module": TIMING, "func": "wait", "arguments": {"duration_s": hold_s}},
            },
            {
                "type": "action",
                "name": "unblock-apiserver-egress",
                "provider": {
                    "type": "python",
                    "module": NETWORK,
                    "func": "unblock_apiserver_egress",
                    "arguments": scope,
                },
            },
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "unblock-apiserver-egress-again",
                "provider": {
                    "type": "python",
                    "module": NETWORK,
                    "func": "unblock_apiserver_egress",
                    "arguments": scope,
                },
            }
        ],
    }


@dataclass
class Played:
    code: int
    output: str
    journal: dict[str, Any]
    took_s: float


def play(tmp_path: Path, kubeconfig: Path, namespace: str, endpoint: str, *, interrupt: bool = False) -> Played:
    """``chaos run`` of the experiment above with the control pointed at ``endpoint``; with ``interrupt``, a 60 s
    hold that chaostoolkit's own graceful exit (``SIGUSR1``: ``SystemExit(20)``, as a tripped stop condition sends
    it) cuts short a second into it."""
    experiment = tmp_path / "experiment.json"
    experiment.write_text(json.dumps(_experiment(namespace, "traces1", 60 if interrupt else 1.5)))
    journal = tmp_path / "journal.json"
    log = tmp_path / "chaostoolkit.log"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_CONTEXT", "CHAOSTOOLKIT_IN_POD")}
    env = {k: v for k, v in env.items() if not k.startswith("OTEL_")}
    env.update(KUBECONFIG=str(kubeconfig), OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_SERVICE_NAME="chaoscontour-it")
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            *(str(CHAOS), "--no-version-check", "--log-file", str(log), "run"),
            *("--rollback-strategy", "always", "--journal-path", str(journal), str(experiment)),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_signal_dispositions,
    )
    try:
        if interrupt:
            deadline = time.monotonic() + 60
            while "wait: 60 s" not in (log.read_text(errors="replace") if log.exists() else ""):
                assert proc.poll() is None and time.monotonic() < deadline, "the hold never started"
                time.sleep(0.1)
            time.sleep(1.0)
            proc.send_signal(signal.SIGUSR1)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return Played(proc.returncode, output, load_journal(journal), time.monotonic() - started)


@pytest.fixture
def collector(require: Any, tmp_path: Path) -> Iterator[tuple[Process, str]]:
    require("otelcol")
    proc, endpoint = start_collector(tmp_path / "otelcol")
    yield proc, endpoint
    proc.stop(5.0)


def test_the_collector_receives_the_run_the_activities_and_the_fault_window(
    control_plane: Any, contour: str, collector: tuple[Process, str], tmp_path: Path
) -> None:
    proc, endpoint = collector
    played = play(tmp_path, control_plane.kubeconfig, contour, endpoint)
    journal = played.journal
    assert (played.code, journal["status"]) == (0, "completed"), played.output
    record = journal["traces"]
    assert record["exported"] is True, played.output
    run_id = record["run_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id)

    spans = wait_for_spans(tmp_path / "otelcol" / "logs" / LOG_FILE, run_id, record["spans"], proc)
    assert len(spans) == record["spans"] == 1 + len(journal["run"]) + len(journal["rollbacks"]) + 1
    assert {s.trace_id for s in spans} == {record["trace_id"]}

    [root] = [s for s in spans if s.name == "experiment"]
    assert root.parent_id == ""
    assert (root.start_ns, root.end_ns) == (journal_ns(journal["start"]), journal_ns(journal["end"]))
    assert root.attributes["chaostoolkit.experiment.status"] == "completed"
    assert root.attributes["chaostoolkit.experiment.interrupted"] == "false"
    assert root.attributes["chaostoolkit.experiment.deviated"] == "false"

    by_name = {s.name: s for s in spans}
    for entry in [*journal["run"], *journal["rollbacks"]]:
        span = by_name[f"activity: {entry['activity']['name']}"]
        assert span.parent_id == root.span_id
        assert abs(span.start_ns - journal_ns(entry["start"])) <= MS
        assert abs(span.end_ns - journal_ns(entry["end"])) <= MS
        assert span.attributes["chaostoolkit.activity.status"] == "succeeded"
        assert span.attributes["chaostoolkit.activity.type"] == "action"
    assert by_name["activity: wait-in-the-background"].attributes["chaostoolkit.activity.background"] == "true"
    assert by_name["activity: hold-the-fault-window"].attributes["chaostoolkit.activity.background"] == "false"

    block = next(e for e in journal["run"] if e["activity"]["name"] == "block-apiserver-egress")
    unblock = next(e for e in journal["run"] if e["activity"]["name"] == "unblock-apiserver-egress")
    assert block["output"]["selected_pods"] == ["contour-a", "contour-b"]
    assert unblock["output"]["removed_policies"], "the method's unblock removed nothing"
    window = by_name["fault window"]
    assert window.parent_id == root.span_id
    assert abs(window.start_ns - journal_ns(block["start"])) <= MS
    assert abs(window.end_ns - journal_ns(unblock["end"])) <= MS
    assert window.attributes["chaoscontour.fault.kind"] == "block_apiserver_egress"
    assert window.attributes["chaoscontour.fault.removed"] == "true"
    assert window.attributes["chaoscontour.fault.removed_by"] == "unblock-apiserver-egress"

    # The control's two lines in the run's output, neither a warning.
    assert [line.split("] ", 1)[1] for line in traces_lines(played.output, "INFO")] == [
        f"traces: run {run_id}: its spans go to {endpoint}/v1/traces as service 'chaoscontour-it'",
        f"traces: {record['spans']} spans of run {run_id} (trace {record['trace_id']}) exported to "
        f"{endpoint}/v1/traces",
    ]
    assert traces_lines(played.output, "WARNING") == [], played.output


def traces_lines(output: str, level: str) -> list[str]:
    """The control's lines of ``level`` in chaostoolkit's console output."""
    return [line for line in output.splitlines() if f" {level}] traces: " in line]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_with_the_endpoint_down_the_run_succeeds_and_says_so_once(
    control_plane: Any, contour: str, tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    played = play(tmp_path, control_plane.kubeconfig, contour, endpoint)
    assert (played.code, played.journal["status"]) == (0, "completed"), played.output
    record = played.journal["traces"]
    assert record["exported"] is False
    [warning] = traces_lines(played.output, "WARNING")
    assert f"did not reach {endpoint}/v1/traces ([Errno 111] Connection refused); the run itself" in warning
    # Nothing else about it: no retry or exception lines of the OpenTelemetry exporter, no traceback.
    assert played.output.count(endpoint) == 2, played.output
    assert [line for line in played.output.splitlines() if "export" in line.lower()] == [], played.output
    assert "Traceback" not in played.output
    # The block, a 1.5 s hold and two unblocks on a local API server: well inside the export's bound on top.
    assert played.took_s < 60


def test_an_interrupted_run_exports_its_spans_with_the_cut_activity_and_the_window(
    control_plane: Any, contour: str, collector: tuple[Process, str], tmp_path: Path
) -> None:
    proc, endpoint = collector
    played = play(tmp_path, control_plane.kubeconfig, contour, endpoint, interrupt=True)
    journal = played.journal
    # chaostoolkit exits 1 on an interrupted run; the rollback (strategy always) still removed the fault.
    assert (played.code, journal["status"]) == (1, "interrupted"), played.output
    assert played.took_s < 40, played.output
    record = journal["traces"]
    assert record["exported"] is True, played.output
    spans = wait_for_spans(tmp_path / "otelcol" / "logs" / LOG_FILE, record["run_id"], record["spans"], proc)
    by_name = {s.name: s for s in spans}
    root = by_name["experiment"]
    assert root.attributes["chaostoolkit.experiment.interrupted"] == "true"
    assert root.status == "Error"
    cut = by_name["activity: hold-the-fault-window"]
    assert cut.attributes["chaostoolkit.activity.status"] == "interrupted"
    assert cut.parent_id == root.span_id
    assert "activity: unblock-apiserver-egress" not in by_name  # the method never got there
    # The fault window ends with the rollback's unblock, the one that removed it.
    block = next(e for e in journal["run"] if e["activity"]["name"] == "block-apiserver-egress")
    [rollback] = journal["rollbacks"]
    assert rollback["output"]["removed_policies"], played.output
    window = by_name["fault window"]
    assert abs(window.start_ns - journal_ns(block["start"])) <= MS
    assert abs(window.end_ns - journal_ns(rollback["end"])) <= MS
    assert window.attributes["chaoscontour.fault.removed_by"] == "unblock-apiserver-egress-again"
