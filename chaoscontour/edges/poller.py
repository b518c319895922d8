"""Readiness and receive times for the sampler: epoll waited on with ``select()`` (microsecond timers; ``epoll_wait``
alone rounds to milliseconds, which at 2,000 requests/s would send in bursts), ``poll()`` where there is no epoll
(macOS), and the kernel's receive timestamp of what a socket read (Linux ``SO_TIMESTAMPNS``).
"""

import select
import socket
import struct
import sys

__all__ = [
    "IN",
    "OUT",
    "Poller",
    "enable_kernel_timestamps",
    "kernel_timestamps_available",
    "recv_timestamped",
    "wait",
]

IN, OUT = select.POLLIN, select.POLLOUT  # the same bits as EPOLLIN and EPOLLOUT
USE_EPOLL = hasattr(select, "epoll")

# Linux's SO_TIMESTAMPNS (asm-generic value, the one of x86-64 and arm64); Python does not name it.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@ll")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if sys.platform == "linux" else 0


class Poller:
    """The descriptors of one kind of readiness: epoll where there is one, else ``poll()``."""

    def __init__(self) -> None:
        self._epoll = USE_EPOLL
        self._poll = select.epoll() if self._epoll else select.poll()
        self.fd = self._poll.fileno() if self._epoll else -1  # type: ignore[union-attr]

    def register(self, fd: int, events: int) -> None:
        self._poll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._poll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        self._poll.unregister(fd)

    def ready(self) -> list[tuple[int, int]]:
        return self._poll.poll(0)

    def close(self) -> None:
        if self._epoll:
            self._poll.close()  # type: ignore[union-attr]


def wait(pollers: tuple[Poller, ...], timeout_s: float) -> bool:
    """Sleep up to ``timeout_s`` or until one of ``pollers`` has a ready descriptor; ``True`` if one has."""
    if pollers[0].fd >= 0:
        return bool(select.select(tuple(p.fd for p in pollers), (), (), timeout_s)[0])
    # poll() takes whole milliseconds: round down (a little early is better than late).
    ready = pollers[0]._poll.poll(max(0, int(timeout_s * 1000)))
    return bool(ready) or any(p.ready() for p in pollers[1:])


def kernel_timestamps_available() -> bool:
    """Whether answers can be timed by the kernel; without it they must wake the loop to be timed when read."""
    return sys.platform == "linux" and USE_EPOLL


def enable_kernel_timestamps(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)


def recv_timestamped(sock: socket.socket, size: int) -> tuple[bytes, float | None]:
    """Read up to ``size`` bytes, with the kernel's receive time of the last of them (epoch s), if it gave one."""
    data, ancillary, _, _ = sock.recvmsg(size, _ANC_SIZE)
    stamp = None
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(raw)
            stamp = seconds + nanoseconds * 1e-9
    return data, stamp
