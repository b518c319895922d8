"""The node agent's handlers: what probes and lifecycle hooks run (``httpGet``, ``tcpSocket``, ``exec``).

:func:`run_handler` runs one handler from the node's side, as the kubelet's prober and lifecycle handler runner
do: ``httpGet`` and ``tcpSocket`` to the pod's IP (``host`` if given), named ports resolved against the pod's
containers; ``exec`` inside the container's namespaces, root and working directory, its first word mapped to the
local program the way container commands are (:func:`~chaoscontour.sandbox.podspec.resolve_command`: the release
manifest's ``/bin/contour envoy shutdown``). :func:`run_within` bounds a handler by a deadline, as the kubelet
bounds a preStop hook by the grace period.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chaoscontour.sandbox import mounts, podspec

__all__ = ["named_port", "run_handler", "run_within"]

Obj = Mapping[str, Any]


def named_port(port: Any, containers: Sequence[Obj]) -> int:
    """A port number, or the ``containerPort`` of the port named ``port`` in ``containers``."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for container in containers:
        for declared in container.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
    raise ValueError(f"named port {port!r} is not declared by any container")


def run_handler(
    handler: Obj,
    *,
    pod_ip: str,
    containers: Sequence[Obj],
    image: podspec.Image | None,
    pid: int,
    timeout_s: float,
    user_agent: str = "kube-probe/sandbox",
) -> tuple[bool, str]:
    """Run one ``httpGet``, ``tcpSocket`` or ``exec`` handler; return (success, detail)."""
    try:
        if "httpGet" in handler:
            get = handler["httpGet"]
            host = get.get("host") or pod_ip
            conn = http.client.HTTPConnection(host, named_port(get["port"], containers), timeout=timeout_s)
            try:
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                headers.setdefault("User-Agent", user_agent)
                conn.request("GET", get.get("path") or "/", headers=headers)
                response = conn.getresponse()
                body = response.read(200).decode(errors="replace").strip()
            finally:
                conn.close()
            if 200 <= response.status < 400:
                return True, ""
            return False, f"HTTP probe failed with statuscode: {response.status} {body}"
        if "tcpSocket" in handler:
            port = named_port(handler["tcpSocket"]["port"], containers)
            with socket.create_connection((handler["tcpSocket"].get("host") or pod_ip, port), timeout=timeout_s):
                return True, ""
        if "exec" in handler:
            command = list(handler["exec"]["command"])
            if image is not None:
                command = podspec.resolve_command(image, command)
            code, output = _exec(mounts.exec_in_container_argv(pid, command), timeout_s)
            if code == 0:
                return True, output
            return False, f"command {command!r} exited with {code}: {output}"
        return False, f"unsupported handler {', '.join(handler)}"
    except (OSError, subprocess.TimeoutExpired, ValueError, http.client.HTTPException) as exc:
        return False, f"{type(exc).__name__}: {exc}"


def _exec(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run ``argv`` in its own process group; at the timeout the whole group is killed (a shell's children too,
    which would otherwise hold the output pipes open and keep the caller waiting)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, output.decode(errors="replace")[-200:]


def run_within(deadline_s: float, handler: Callable[[float], tuple[bool, str]]) -> tuple[bool, str, bool]:
    """Run ``handler(timeout_s)`` for at most ``deadline_s``; return (success, detail, cut off).

    The handler gets ``deadline_s`` as its own timeout (an exec hook's process is killed at it); a handler that
    ignores it is left behind in its thread, as the kubelet leaves a preStop goroutine when the grace period ends.
    """
    result: list[tuple[bool, str]] = []
    thread = threading.Thread(target=lambda: result.append(handler(deadline_s)), daemon=True)
    thread.start()
    thread.join(deadline_s)
    if not result:
        return False, f"did not finish within {deadline_s:.0f} s", True
    ok, detail = result[0]
    return ok, detail, False
