"""Envoy's read-only admin (``/clusters``, ``/stats``: the listener Contour gives every Envoy on 127.0.0.1:9001, in
the release manifest's Envoy as in a provisioned Gateway's) made reachable from the host: a TCP relay from the Envoy
pod's own address, started in the pod's network namespace with ``nsenter``. It stands in for
``kubectl port-forward``, which the sandbox does not have."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from tests.support.sandbox import Sandbox, wait_until

__all__ = ["RELAY_PORT", "admin_relay"]

RELAY_PORT = 19001

_RELAY = """
import socket, sys, threading
def pump(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
server = socket.create_server((sys.argv[1], int(sys.argv[2])), reuse_port=False)
while True:
    client, _ = server.accept()
    upstream = socket.create_connection(("127.0.0.1", 9001))
    threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
"""


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def admin_relay(sandbox: Sandbox, namespace: str, pod: str) -> Iterator[str]:
    """The URL of ``/clusters`` of the Envoy in ``namespace/pod``, relayed from the pod's address while the block
    runs; the relay is stopped after it."""
    found = sandbox.get(f"/api/v1/namespaces/{namespace}/pods/{pod}")
    ip = found["status"]["podIP"]
    pid = sandbox.container_pid(namespace, pod, "envoy")
    relay = subprocess.Popen(
        ["nsenter", "-t", str(pid), "-n", sys.executable, "-c", _RELAY, ip, str(RELAY_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{ip}:{RELAY_PORT}/clusters"
    try:
        wait_until(f"the admin relay to {namespace}/{pod}", lambda: _answers(url), 15)
        yield url
    finally:
        relay.terminate()
        relay.wait(10)
