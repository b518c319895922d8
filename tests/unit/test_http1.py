"""The sampler's HTTP/1.1 answer reader on bytes cut at every possible place: no sockets, no mocks."""

import pytest

from chaoscontour.edges.http1 import MAX_HEADER_BYTES, AnswerReader, build_request

CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
LENGTH_LAST = b"HTTP/1.1 503 Service Unavailable\r\nServer: envoy\r\ncontent-length: 4\r\n\r\nbusy"


def read_in_pieces(answer: bytes, cut: int) -> tuple[AnswerReader, list[bool]]:
    reader = AnswerReader()
    done = [reader.feed(answer[i : i + cut]) for i in range(0, len(answer), cut)]
    return reader, done


def test_the_request_is_built_once_with_host_and_user_agent():
    request = build_request("/healthz?x=1", "echo.local")
    assert request.startswith(b"GET /healthz?x=1 HTTP/1.1\r\nHost: echo.local\r\nUser-Agent: chaoscontour/")
    assert request.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("answer", [CHUNKED, LENGTH_LAST], ids=["chunked", "content-length-last"])
@pytest.mark.parametrize("cut", [1, 2, 3, 7, 1000])
def test_an_answer_is_complete_only_at_its_last_byte_however_it_is_cut(answer, cut):
    reader, done = read_in_pieces(answer, cut)
    assert done[-1] is True and not any(done[:-1])
    assert reader.status in (200, 503) and reader.close_after is False


def test_chunked_trailers_end_with_an_empty_line():
    reader = AnswerReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Checksum: 1\r\n") is False
    assert reader.feed(b"\r\n") is True


def test_interim_answers_are_skipped():
    reader = AnswerReader()
    assert reader.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: x\r\n\r\n") is True
    assert reader.status == 204


def test_an_answer_without_length_lasts_until_the_connection_closes():
    reader = AnswerReader()
    assert reader.feed(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello") is False
    assert reader.end() is True and reader.close_after is True


def test_a_close_before_the_end_of_a_sized_answer_is_not_an_answer():
    reader = AnswerReader()
    assert reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhal") is False
    assert reader.end() is False


@pytest.mark.parametrize(
    ("head", "closes"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", False),
    ],
)
def test_whether_the_connection_can_carry_another_request(head, closes):
    reader = AnswerReader()
    assert reader.feed(head) is True
    assert reader.close_after is closes


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 2xx OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
)
def test_what_is_not_http_is_refused(garbage):
    with pytest.raises(ValueError):
        AnswerReader().feed(garbage)


def test_endless_headers_are_refused():
    reader = AnswerReader()
    with pytest.raises(ValueError, match="no end of headers"):
        reader.feed(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADER_BYTES // 6 + 1))


def test_reset_readies_the_reader_for_the_next_answer():
    reader = AnswerReader()
    assert reader.feed(LENGTH_LAST) is True
    reader.reset()
    assert reader.status == 0 and reader.feed(CHUNKED) is True and reader.status == 200
