"""Probe and hook handlers run against real local servers (no root needed); the deadline that cuts a hook off."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator

import pytest

from chaoscontour.sandbox.handlers import named_port, run_handler, run_within
from chaoscontour.sandbox.podspec import Image, resolve_command

CONTAINERS = [{"name": "shutdown-manager", "ports": [{"name": "admin", "containerPort": 8090}]}]


@pytest.fixture
def server() -> Iterator[tuple[int, list[str]]]:
    """A local HTTP server on 127.0.0.1 that records the paths it is asked for; /fail answers 500."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers['User-Agent']}")
            self.send_response(500 if self.path == "/fail" else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], seen
    httpd.shutdown()
    httpd.server_close()


def test_an_http_get_hook_reaches_the_pod_ip_at_the_path_and_reports_the_status(server: tuple[int, list[str]]) -> None:
    port, seen = server
    common = {"pod_ip": "127.0.0.1", "containers": CONTAINERS, "image": None, "pid": 0, "timeout_s": 2.0}
    ok, _ = run_handler({"httpGet": {"path": "/shutdown", "port": port}}, user_agent="kube-lifecycle/x", **common)
    assert ok
    failed, detail = run_handler({"httpGet": {"path": "/fail", "port": port}}, **common)
    assert not failed and "statuscode: 500" in detail
    assert seen == ["/shutdown kube-lifecycle/x", "/fail kube-probe/sandbox"]


def test_a_tcp_handler_fails_on_a_closed_port_and_named_ports_resolve_against_the_pods_containers(
    server: tuple[int, list[str]],
) -> None:
    port, _ = server
    common = {"pod_ip": "127.0.0.1", "containers": CONTAINERS, "image": None, "pid": 0, "timeout_s": 1.0}
    assert run_handler({"tcpSocket": {"port": port}}, **common)[0]
    with pytest.raises(ValueError, match="not declared"):
        named_port("metrics", CONTAINERS)
    assert named_port("admin", CONTAINERS) == 8090
    assert named_port("8002", CONTAINERS) == 8002


def test_exec_hooks_name_the_images_program_as_container_commands_do() -> None:
    contour = Image("contour", "/cache/contour-v1.33.6/contour")
    # The release manifest's shutdown-manager preStop hook.
    assert resolve_command(contour, ["/bin/contour", "envoy", "shutdown"]) == [
        "/cache/contour-v1.33.6/contour",
        *("envoy", "shutdown"),
    ]
    assert resolve_command(contour, ["/bin/sh", "-c", "contour"]) == ["/bin/sh", "-c", "contour"]


def test_a_hook_still_running_at_the_deadline_is_cut_off_and_the_caller_goes_on() -> None:
    began = time.monotonic()
    ok, detail, cut_off = run_within(0.3, lambda timeout_s: (time.sleep(5), (True, ""))[1])
    assert (ok, cut_off) == (False, True) and "0 s" in detail
    assert time.monotonic() - began < 1.0
    assert run_within(2.0, lambda timeout_s: (True, f"given {timeout_s}")) == (True, "given 2.0", False)
