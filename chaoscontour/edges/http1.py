"""The little of HTTP/1.1 the sampler speaks: one prebuilt ``GET``, and an answer read incrementally as bytes come.

No I/O here: :class:`AnswerReader` is fed what a socket returned and says when the answer is complete, however it
is delimited (``Content-Length``, chunked, the end of the connection, or no body for 204/304), skipping interim
1xx answers. Malformed answers raise ``ValueError``.
"""

from chaoscontour.edges.http import USER_AGENT

__all__ = ["MAX_HEADER_BYTES", "AnswerReader", "build_request"]

MAX_HEADER_BYTES = 65_536
_CONTENT_LENGTH = b"\r\ncontent-length:"


def build_request(path: str, host: str) -> bytes:
    """The bytes of one ``GET`` (HTTP/1.1, keep-alive): built once, sent as is."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n".encode("latin-1")


class AnswerReader:
    """The answer to one request, as its bytes arrive: :meth:`feed` until it returns ``True`` (or :meth:`end` when
    the connection closes); then ``status`` and ``close_after`` (the connection cannot carry another request)."""

    __slots__ = ("_buf", "_chunk_at", "_length", "body_start", "chunked", "close_after", "status")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._buf = b""
        self.status = 0
        self.body_start = -1  # where the body starts in the buffer, once the headers are read
        self._length = -1  # body length; -1 = until the connection closes
        self._chunk_at = 0  # chunked: where the next chunk's size line starts
        self.chunked = False
        self.close_after = False

    def feed(self, data: bytes) -> bool:
        """Add bytes; ``True`` once the answer is complete."""
        self._buf = self._buf + data if self._buf else data
        if self.body_start < 0 and not self._headers():
            return False
        if self.chunked:
            return self._chunks_done()
        return self._length >= 0 and len(self._buf) - self.body_start >= self._length

    def end(self) -> bool:
        """The connection closed: ``True`` when that completes the answer (a body delimited by the close)."""
        return self.body_start >= 0 and self._length < 0 and not self.chunked

    def _headers(self) -> bool:
        while True:
            buf = self._buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise ValueError("no end of headers")
                return False
            if not buf.startswith(b"HTTP/1."):
                raise ValueError(f"not an HTTP/1.x answer: {buf[:20]!r}")
            status = int(buf[9:12])
            if 100 <= status < 200 and status != 101:  # an interim answer (100 Continue...): the real one follows
                self._buf = buf[end + 4 :]
                continue
            break
        head = buf[:end].lower()
        self.status = status
        self.body_start = end + 4
        self.close_after = b"\r\nconnection: close" in head or (
            buf.startswith(b"HTTP/1.0") and b"\r\nconnection: keep-alive" not in head
        )
        at = head.find(_CONTENT_LENGTH)
        if status in (204, 304):
            self._length = 0
        elif b"\r\ntransfer-encoding:" in head and b"chunked" in head:
            self.chunked = True
            self._chunk_at = self.body_start
        elif at >= 0:
            line_end = head.find(b"\r\n", at + 2)
            self._length = int(head[at + len(_CONTENT_LENGTH) : line_end if line_end >= 0 else len(head)])
            if self._length < 0:
                raise ValueError(f"negative Content-Length {self._length}")
        else:
            self._length = -1
            self.close_after = True
        return True

    def _chunks_done(self) -> bool:
        buf = self._buf
        pos = self._chunk_at
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return False
            size = int(buf[pos:line_end].split(b";", 1)[0], 16)
            if size == 0:
                # The last chunk; then optional trailers, then an empty line.
                if buf.startswith(b"\r\n", line_end + 2):
                    return True
                return buf.find(b"\r\n\r\n", line_end) >= 0
            after = line_end + 2 + size + 2
            if len(buf) < after:
                return False
            pos = self._chunk_at = after
