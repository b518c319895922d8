"""The sandbox's OpenTelemetry Collector configuration (the pure part of chaoscontour_sandbox.collector)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaoscontour_sandbox import binaries, collector


def test_the_collector_receives_otlp_http_on_loopback_and_logs_every_span_in_detail() -> None:
    config = collector.collector_config("127.0.0.1", 43181)
    assert config["receivers"] == {"otlp": {"protocols": {"http": {"endpoint": "127.0.0.1:43181"}}}}
    assert config["exporters"] == {"debug": {"verbosity": "detailed"}}
    assert config["service"]["pipelines"]["traces"] == {
        "receivers": ["otlp"],
        "processors": ["batch"],
        "exporters": ["debug"],
    }
    # Its own metrics would listen on a fixed port (8888) that a second Collector cannot have.
    assert config["service"]["telemetry"] == {"metrics": {"level": "none"}}


def test_without_the_binary_starting_says_how_to_build_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSCONTOUR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(binaries.BinaryNotFound, match="chaoscontour-sandbox binaries build otelcol"):
        collector.start_collector(tmp_path / "otelcol")
    assert not (tmp_path / "otelcol" / collector.CONFIG_FILE).exists()
