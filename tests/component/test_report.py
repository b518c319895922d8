"""``chaoscontour report`` on a journal written by the real ``chaos run``.

The fixture experiment samples a local fake Envoy with the real ``envoy_availability`` probe for 3 s while stand-in
fault activities (named like the real ones) make it answer 503 for about a second; see
``tests/fixtures/experiments/availability-fault.json``.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.cli import main as cli_main
from chaoscontour.tools.journal import epoch_of
from chaoscontour.tools.report_png import MISSING_MATPLOTLIB, label_levels
from chaoscontour.tools.timeline import report_data, restart_times
from tests.support.chaosrun import CHAOS, FIXTURE_EXPERIMENTS, run_chaos
from tests.support.fake_envoy import FakeEnvoy

pytest.importorskip("matplotlib", reason="the [report] extra is not installed")


@pytest.fixture(scope="module")
def fault_journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not CHAOS.exists():
        pytest.skip(f"the chaos CLI is not installed next to {sys.executable}")
    journal = tmp_path_factory.mktemp("report") / "availability-fault.json"
    with FakeEnvoy() as envoy:
        code = run_chaos(FIXTURE_EXPERIMENTS / "availability-fault.json", journal, env={"FAKE_ENVOY_URL": envoy.url})
    assert code == 0, journal.read_text(encoding="utf-8")[-3000:]
    return journal


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def run_named(journal: dict[str, Any], key: str, name: str) -> dict[str, Any]:
    (run,) = [r for r in journal[key] if r["activity"]["name"] == name]
    return run


def test_markers_sit_at_the_journal_times(fault_journal):
    journal = load(fault_journal)
    sampler = run_named(journal, "run", "sample-envoy")["output"]
    origin = sampler["timeline"][0]["epoch_s"]
    block = epoch_of(run_named(journal, "run", "block-apiserver")["start"])
    unblock = epoch_of(run_named(journal, "run", "unblock-apiserver")["start"])
    rollback = epoch_of(run_named(journal, "rollbacks", "unblock-apiserver-rollback")["start"])
    restarts = run_named(journal, "run", "contour-restarts")["output"]["terminations"]
    assert block is not None and unblock is not None and rollback is not None and len(restarts) == 1
    restart = epoch_of(restarts[0]["finished_at"])
    assert restart is not None

    data = report_data(journal)
    assert data.origin_epoch_s == pytest.approx(origin)
    by_kind = {(m.kind, m.label): m for m in data.markers}
    fault = by_kind[("fault", "block-apiserver starts")]
    assert fault.epoch_s == pytest.approx(block, abs=1e-6)
    assert fault.offset_s == pytest.approx(block - origin, abs=1e-3)
    method_end = by_kind[("fault-end", "unblock-apiserver (method)")]
    assert method_end.offset_s == pytest.approx(unblock - origin, abs=1e-3)
    rollback_end = by_kind[("fault-end", "unblock-apiserver-rollback (rollback)")]
    assert rollback_end.offset_s == pytest.approx(rollback - origin, abs=1e-3)
    (restart_marker,) = [m for m in data.markers if m.kind == "restart"]
    assert restart_marker.offset_s == pytest.approx(restart - origin, abs=1e-3)
    assert restart_marker.label == "Contour restart contour-0/contour"
    # The shaded window runs from the fault's start to its first removal, not to the rollback.
    assert data.fault_window == pytest.approx((block - origin, unblock - origin), abs=1e-3)
    # Time order, and plausible against the experiment's pauses (0.8 s before the block, 1.2 s before the unblock).
    assert [m.epoch_s for m in data.markers] == sorted(m.epoch_s for m in data.markers)
    assert 0.5 < fault.offset_s < 1.5 and 1.0 < method_end.offset_s - fault.offset_s < 2.0


def test_series_shows_the_outage_the_fake_envoy_served(fault_journal):
    data = report_data(load(fault_journal))
    assert data.series is not None and data.source == "sample-envoy"
    assert data.series.offset_s == [float(i) for i in range(len(data.series.offset_s))]
    availability = [a for a in data.series.availability_pct if a is not None]
    # The fake answers 503 for ~1.2 s of the 3 s window: one second is mostly failures, another mostly successes.
    assert min(availability) < 50 < max(availability)
    assert data.summary["requests"] == sum(data.series.requests)


def test_report_writes_png_and_html_with_the_outcome_and_activities(fault_journal, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["report", str(fault_journal), "--out", str(out)]) == 0
    png = out / "availability-fault.png"
    page = out / "availability-fault.html"
    raw = png.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", raw[16:24])
    assert width >= 1000 and height >= 800
    text = page.read_text(encoding="utf-8")
    assert "<h1>Fixture: a fault under sampled traffic</h1>" in text
    assert "Chaos gate PASSED" in text
    # The fixture blocks without the end-of-window probe: the page says what the verdict did not check.
    assert "not checked: the method has no apiserver_egress_fault probe" in text
    # Neither endpoint-churn nor xDS probes here: no lane panel, no timeline section.
    assert "Timeline of endpoints and xDS state" not in text
    assert report_data(load(fault_journal)).tracks.empty
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', text)
    assert embedded is not None and base64.b64decode(embedded.group(1)) == raw
    for name in ("envoy-serving", "sample-envoy", "block-apiserver", "unblock-apiserver-rollback"):
        assert f"<code>{name}</code>" in text
    assert f"wrote {png}" in capsys.readouterr().out


def test_journal_without_timeline_still_gets_a_report(tmp_path, capsys):
    journal = {
        "experiment": {"title": "no sampler <here>", "method": []},
        "status": "failed",
        "start": "2026-01-01T00:00:00+00:00",
        "run": [],
    }
    path = tmp_path / "j.json"
    path.write_text(json.dumps(journal), encoding="utf-8")
    assert cli_main(["report", str(path), "--out", str(tmp_path)]) == 0
    assert "no envoy_availability timeline" in capsys.readouterr().out
    page = (tmp_path / "j.html").read_text(encoding="utf-8")
    assert "no sampler &lt;here&gt;" in page and "Chaos gate FAILED" in page


def test_a_failed_sampler_is_named_instead_of_a_blank_plot():
    sampler = {
        "type": "probe",
        "name": "sample",
        "provider": {"type": "python", "module": "chaoscontour.activities.envoy", "func": "envoy_availability"},
    }
    journal = {
        "experiment": {"title": "t", "method": [sampler]},
        "status": "completed",
        "start": "2026-01-01T00:00:00+00:00",
        "run": [
            {
                "activity": sampler,
                "output": None,
                "status": "failed",
                "exception": ["chaoslib.exceptions.ActivityFailed: availability 0.91 below min_availability 0.999\n"],
            }
        ],
    }
    data = report_data(journal)
    assert data.series is None
    assert data.note == "envoy_availability failed: availability 0.91 below min_availability 0.999"


def test_unusable_journal_exits_2(tmp_path, capsys):
    path = tmp_path / "cut.json"
    path.write_text('{"experiment": {"title": "x"}, "status": "compl', encoding="utf-8")
    assert cli_main(["report", str(path), "--out", str(tmp_path)]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))


def test_missing_matplotlib_says_which_extra_to_install(fault_journal, tmp_path, capsys, monkeypatch):
    # Hiding an installed package is the one failure that cannot be caused for real in this venv.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert cli_main(["report", str(fault_journal), "--out", str(tmp_path)]) == 2
    assert MISSING_MATPLOTLIB in capsys.readouterr().err
    assert "pip install 'chaostoolkit-contour[report]'" in MISSING_MATPLOTLIB


def test_restart_times_read_both_api_and_probe_shapes_once_each():
    output = {
        "terminations": [{"pod": "contour-a", "container": "contour", "finished_at": "2026-01-01T00:00:05Z"}],
        "pods": [
            {
                "containers": [
                    {"last_terminated": {"finished_at": "2026-01-01T00:00:05Z"}},
                    {"lastState": {"terminated": {"finishedAt": "2026-01-01T00:00:09.5Z"}}},
                ]
            }
        ],
    }
    t0 = epoch_of("2026-01-01T00:00:00Z")
    assert t0 is not None
    assert [(round(t - t0, 3), who) for t, who in restart_times(output)] == [
        (5.0, "contour-a/contour"),
        (9.5, ""),
    ]


def test_epoch_of_reads_journal_and_api_times_alike():
    assert epoch_of("2026-11-26T19:15:31.872336+00:00") == pytest.approx(epoch_of("2026-11-26T19:15:31.872336Z"))
    assert epoch_of("2026-11-26T19:15:31") == epoch_of("2026-11-26T19:15:31Z")
    assert epoch_of("not a time") is None and epoch_of(True) is None


def test_label_levels_separate_close_markers_only():
    assert label_levels([0.0, 0.1, 5.0, 5.05, 5.1], width=10.0) == [0, 1, 0, 1, 2]


def test_no_credential_in_a_journal_reaches_the_gate_or_the_report(fault_journal, tmp_path, capsys):
    """Issue 21: credentials in URLs and `Authorization: Basic` got through to the summary and the HTML report."""
    secrets = ("hunter2", "dXNlcjpwYXNz", "s3cr3t-t0ken")
    journal = load(fault_journal)
    journal["experiment"]["title"] = "outage via https://admin:hunter2@api.example.test:6443"
    probe = run_named(journal, "run", "sample-envoy")
    probe["output"]["url"] = "http://ops:hunter2@envoy.example.test/"
    failed = journal["run"][-1]
    failed.update(
        status="failed",
        exception=["requests.exceptions.HTTPError: 401 for Authorization: Basic dXNlcjpwYXNz\n"],
        output={"note": "retried with token=s3cr3t-t0ken"},
    )
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(journal), encoding="utf-8")
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    cli_main(["gate", str(path), "--junit", str(junit), "--summary", str(summary)])
    assert cli_main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    written = [capsys.readouterr().out, junit.read_text(), summary.read_text()]
    written += [p.read_text(encoding="utf-8") for p in (tmp_path / "out").glob("*.html")]
    assert len(written) == 4
    leaked = [(s, i) for s in secrets for i, text in enumerate(written) if s in text]
    assert leaked == []
    assert "https://&lt;redacted&gt;@api.example.test:6443" in written[3]
    assert "Basic &lt;redacted&gt;" in written[1] and "Basic <redacted>" in written[0] + written[2]
