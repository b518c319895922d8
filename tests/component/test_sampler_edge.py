"""The sampler's own HTTP/1.1 client against a real socket server that answers in each shape HTTP allows: chunked,
delimited by the end of the connection, with an interim 100, split across packets, with ``Connection: close``,
garbage, and over TLS. No mocks: real sockets on 127.0.0.1.
"""

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoscontour.domain.availability import summarize
from chaoscontour.edges import poller
from chaoscontour.edges.sampler import NeverServed, SamplerResult, TrafficSampler

OK = frozenset({200})


class RawServer:
    """Answers every request it reads with ``parts`` (sent with ``gap_s`` between them), then closes the
    connection if ``close``. Optionally over TLS."""

    def __init__(
        self, parts: list[bytes], close: bool = False, gap_s: float = 0.0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.parts = parts
        self.close = close
        self.gap_s = gap_s
        self.tls = tls
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(4096)
                    if not data:
                        return
                    buf += data
                buf = buf.split(b"\r\n\r\n", 1)[1]
                for i, part in enumerate(self.parts):
                    if i and self.gap_s:
                        time.sleep(self.gap_s)
                    conn.sendall(part)
                if self.close:
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop = True
        self.listener.close()


@pytest.fixture
def serve() -> Iterator:
    servers: list[RawServer] = []

    def start(*parts: bytes, **kwargs) -> RawServer:
        server = RawServer(list(parts), **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def sample(url: str, **kwargs) -> SamplerResult:
    options = {"rate_per_s": 40, "duration_s": 1.0, "timeout_s": 1.0, "expected_status": OK, **kwargs}
    return TrafficSampler(url, **options).run()


def outcomes(result: SamplerResult) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in result.series:
        counts[s.outcome] = counts.get(s.outcome, 0) + 1
    return counts


def test_chunked_answers_split_across_packets_are_read_whole_on_one_connection(serve):
    server = serve(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        b"lo\r\n6;ext=1\r\n world\r\n",
        b"0\r\n\r\n",
        gap_s=0.002,
    )
    result = sample(f"http://127.0.0.1:{server.port}/")
    assert outcomes(result) == {"http_200": 40}
    assert server.connections == result.connections_opened <= 3  # reused (a slow first answer may need a second)


def test_an_answer_delimited_by_the_end_of_the_connection_counts(serve):
    server = serve(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello", close=True)
    result = sample(f"http://127.0.0.1:{server.port}/")
    assert outcomes(result) == {"http_200": 40}
    assert server.connections == 40


def test_connection_close_is_honoured_and_interim_answers_skipped(serve):
    server = serve(
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
        close=True,
        gap_s=0.001,
    )
    result = sample(f"http://127.0.0.1:{server.port}/")
    assert outcomes(result) == {"http_200": 40}
    assert result.connections_opened == 40


def test_headers_and_body_in_separate_packets_and_a_last_content_length_header(serve):
    server = serve(b"HTTP/1.1 503 Service Unavailable\r\nServer: x\r\ncontent-length: 4", b"\r\n\r\nbusy", gap_s=0.003)
    with pytest.raises(NeverServed, match="HTTP 503"):
        sample(f"http://127.0.0.1:{server.port}/")
    result = sample(f"http://127.0.0.1:{server.port}/", expected_status=frozenset({503}))
    assert outcomes(result) == {"http_503": 40}
    assert result.kernel_timestamps is True


def test_something_that_is_not_http_is_a_bad_answer(serve):
    server = serve(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    with pytest.raises(NeverServed, match="bad_answer"):
        sample(f"http://127.0.0.1:{server.port}/")


def test_latency_comes_from_the_kernel_receive_time_not_from_when_the_loop_woke(serve):
    # At 4 requests/s the loop sleeps 250 ms between due times and reads answers only then; an answer that takes
    # about 20 ms must still be reported as about 20 ms.
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0", b"\r\n\r\n", gap_s=0.02)
    result = sample(f"http://127.0.0.1:{server.port}/", rate_per_s=4, duration_s=1.5)
    p50 = summarize(result.series, result.window_start, result.window_end).latency_ms["p50"]
    assert p50 is not None and 19 <= p50 < 120


def test_a_refused_connection_is_named(serve):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(NeverServed, match="connection_refused"):
        sample(f"http://127.0.0.1:{port}/")


@pytest.fixture(scope="module")
def tls_server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    from chaoscontour_sandbox.pki import CertificateAuthority

    pair = CertificateAuthority().issue("localhost", server=True, dns_names=["localhost"], ip_addresses=["127.0.0.1"])
    folder: Path = tmp_path_factory.mktemp("tls")
    pair.write(folder / "tls.crt", folder / "tls.key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "tls.crt", folder / "tls.key")
    return context


def test_https_with_verification_off_is_sampled_and_an_unknown_ca_is_a_tls_error(serve, tls_server_context):
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", tls=tls_server_context)
    url = f"https://127.0.0.1:{server.port}/"
    result = sample(url, verify_tls=False)
    assert outcomes(result) == {"http_200": 40}
    assert result.connections_opened <= 3 and result.kernel_timestamps is False
    with pytest.raises(NeverServed, match="tls_error"):
        sample(url, verify_tls=True)


def test_without_epoll_poll_stands_in_and_answers_are_timed_when_they_come(serve, monkeypatch):
    # macOS has no epoll: poll() and user-space timing take over (forced here on Linux).
    monkeypatch.setattr(poller, "USE_EPOLL", False)
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0", b"\r\n\r\n", gap_s=0.02)
    result = sample(f"http://127.0.0.1:{server.port}/", rate_per_s=4, duration_s=1.5)
    assert result.kernel_timestamps is False
    assert outcomes(result) == {"http_200": 6}
    p50 = summarize(result.series, result.window_start, result.window_end).latency_ms["p50"]
    assert p50 is not None and 19 <= p50 < 120
    assert result.achieved_rate_per_s == pytest.approx(4, rel=0.05)
