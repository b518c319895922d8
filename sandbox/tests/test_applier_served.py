"""``sandbox apply`` waits until Envoy serves the route as applied, not as it was (applier._wait_served).

A re-applied HTTPProxy whose retry or health-check policy changed is a new cluster in Envoy, and Envoy swaps it in
a moment after Contour pushes it: seen on the sandbox, one 503 0.3 s after ``apply`` started, while a single 200
had already passed. Envoy here is a small HTTP server whose answers and stats the test scripts: these are the
orderings a real Envoy cannot be made to show on demand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chaoscontour_sandbox.applier import SERVES_IN_A_ROW, SETTLED_S, ApplyError, _proxy_state, _wait_served
from chaoscontour_sandbox.manifests import Document


@dataclass
class Envoy:
    """What the scripted Envoy answers: the route's status codes in turn (the last one repeats) and its stats."""

    codes: list[int] = field(default_factory=lambda: [200])
    warming: int = 0
    cds_updates: int = 1
    answered: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_code(self) -> int:
        with self.lock:
            code = self.codes.pop(0) if len(self.codes) > 1 else self.codes[0]
            self.answered.append(code)
            return code

    def stats(self) -> str:
        return (
            f"cluster_manager.cds.update_success: {self.cds_updates}\n"
            f"cluster_manager.warming_clusters: {self.warming}\n"
            "listener_manager.lds.update_success: 1\n"
            "http.ingress_http.rds.ingress_http.update_success: 1\n"
        )


@pytest.fixture
def envoy() -> Iterator[tuple[Envoy, str, str]]:
    state = Envoy()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/stats"):
                code, body = 200, state.stats().encode()
            else:
                code, body = state.next_code(), b"x"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state, f"{base}/cart", f"{base}/stats"
    finally:
        server.shutdown()
        server.server_close()


def test_a_503_between_200s_starts_the_count_again(envoy: tuple[Envoy, str, str]) -> None:
    state, url, stats = envoy
    state.codes = [200] * 5 + [503] + [200]
    _wait_served("shop/cart", url, "shop.example.com", stats, timeout_s=30)
    after = state.answered[state.answered.index(503) + 1 :]
    assert len(after) >= SERVES_IN_A_ROW and set(after) == {200}, state.answered


def test_a_warming_cluster_holds_the_wait_until_envoy_has_been_quiet_for_a_second(
    envoy: tuple[Envoy, str, str],
) -> None:
    state, url, stats = envoy
    state.warming = 1
    flipped: list[float] = []

    def settle() -> None:
        time.sleep(1.0)
        state.warming, state.cds_updates = 0, 2
        flipped.append(time.monotonic())

    threading.Thread(target=settle, daemon=True).start()
    _wait_served("shop/cart", url, "shop.example.com", stats, timeout_s=30)
    returned = time.monotonic()
    assert flipped, "returned while a cluster was warming"
    # Served all along, so only Envoy's quiet second after the last update can have held it.
    assert returned - flipped[0] >= SETTLED_S * 0.9, (returned - flipped[0], state.answered)


def test_a_route_envoy_never_settles_on_fails_with_what_it_waited_for(envoy: tuple[Envoy, str, str]) -> None:
    state, url, stats = envoy
    state.warming = 2
    with pytest.raises(ApplyError) as caught:
        _wait_served("shop/cart", url, "shop.example.com", stats, timeout_s=1.5)
    message = str(caught.value)
    assert "shop/cart is valid, but Envoy did not serve it steadily in 2 s" in message, message
    assert f"time(s) in a row of {SERVES_IN_A_ROW}" in message, message
    assert "not settled: 2 cluster(s) warming" in message, message


def test_without_stats_ten_200s_in_a_row_are_enough(envoy: tuple[Envoy, str, str]) -> None:
    state, url, _ = envoy
    state.codes = [503, 503, 200]
    _wait_served("shop/cart", url, "shop.example.com", "", timeout_s=30)
    assert state.answered == [503, 503] + [200] * SERVES_IN_A_ROW


class _Api:
    def __init__(self, proxy: dict[str, Any]) -> None:
        self.proxy = proxy

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        return self.proxy


def _proxy(generation: int, observed: int | None) -> dict[str, Any]:
    condition: dict[str, Any] = {"type": "Valid", "status": "True", "reason": "Valid", "message": "Valid HTTPProxy"}
    if observed is not None:
        condition["observedGeneration"] = observed
    return {
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": "cart", "namespace": "shop", "generation": generation},
        "status": {"currentStatus": "valid", "description": "Valid HTTPProxy", "conditions": [condition]},
    }


@pytest.mark.parametrize(
    ("generation", "observed", "expected"),
    [
        (4, 4, ("valid", "Valid HTTPProxy")),
        (5, 4, ("", "Contour has judged generation 4, not yet 5")),
        (5, None, ("valid", "Valid HTTPProxy")),  # a Contour that writes no observedGeneration: its word is all
    ],
)
def test_an_httpproxy_is_valid_only_for_the_generation_contour_judged(
    generation: int, observed: int | None, expected: tuple[str, str]
) -> None:
    proxy = _proxy(generation, observed)
    doc = Document(obj=proxy, file="httpproxy.yaml", index=1)
    assert _proxy_state(_Api(proxy), doc) == expected  # type: ignore[arg-type]
