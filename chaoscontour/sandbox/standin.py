"""A user's Deployment made runnable on the sandbox: the echo backend in place of images with no local program (pure).

:func:`for_sandbox` returns a copy of a Deployment from ``sandbox up --manifests`` and notes on what changed:

- a container whose image has no local program (:func:`chaoscontour.sandbox.podspec.program_for_image` returns
  ``None``) is stood in for by the sandbox's echo backend, listening on the container's TCP ``containerPort``\\ s,
  the ports its probes use and the numeric ``targetPort``\\ s of Services selecting its pods that no container
  declares (those go to the first stand-in). The echo backend answers 200 to every GET, so ``httpGet`` probes and a
  ``healthCheckPolicy`` pass whatever their path. An ``exec`` or ``grpc`` probe of a stand-in becomes a
  ``tcpSocket`` probe on its first declared port: the command or the gRPC health service belong to the real image;
- an init container with no local program exits 0 (what it prepared, the echo backend does not need);
- the pod template gets the annotation :data:`STAND_IN_ANNOTATION` naming the
  stand-ins and their ports: the node agent runs a stand-in only for a pod that carries it, so an unknown image in
  the sandbox's own workloads stays an error;
- ``nodeSelector`` and ``schedulerName`` are dropped: the sandbox has one node, and only the default kube-scheduler
  runs, which would leave a pod naming another scheduler or another node's labels unplaced.

The node agent reads the annotation back (:func:`stand_ins`) and runs :func:`stand_in_container` in place of the
container.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaoscontour.sandbox import podspec

__all__ = ["STAND_IN_ANNOTATION", "StandIn", "for_sandbox", "stand_ins", "stand_in_annotation", "stand_in_container"]

Obj = dict[str, Any]
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")


# --- stand-ins for a user's images (`chaoscontour sandbox up --manifests`) ----------------------------------------
# An image with no local program is an error, except in a pod whose template carries this annotation (written by
# chaoscontour.sandbox.manifests for the user's Deployments only): then the echo backend stands in for the named
# containers, on the ports listed. The sandbox's own workloads never carry it, so a typo in them still fails.
STAND_IN_ANNOTATION = "sandbox.chaoscontour.io/stand-in"


@dataclass(frozen=True)
class StandIn:
    """The echo backend in place of container ``container``: listening on ``ports``, or exiting 0 if ``init``."""

    container: str
    ports: tuple[int, ...] = ()
    init: bool = False


def stand_in_annotation(stand_ins: Sequence[StandIn]) -> str:
    """The annotation's value: ``{"<container>": {"ports": [...]}}``, ``{"init": true}`` for an init container."""
    return json.dumps(
        {s.container: ({"init": True} if s.init else {"ports": list(s.ports)}) for s in stand_ins}, sort_keys=True
    )


def stand_ins(annotations: Mapping[str, str] | None) -> dict[str, StandIn]:
    """The stand-ins a pod's annotations ask for (none without the annotation); ``ValueError`` if malformed."""
    text = (annotations or {}).get(STAND_IN_ANNOTATION)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"annotation {STAND_IN_ANNOTATION} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"annotation {STAND_IN_ANNOTATION} must map container names to their stand-in")
    found = {}
    for name, entry in value.items():
        ports = entry.get("ports", []) if isinstance(entry, dict) else None
        if not isinstance(ports, list) or not all(isinstance(p, int) and 0 < p < 65536 for p in ports):
            raise ValueError(f"annotation {STAND_IN_ANNOTATION}: container {name!r} needs ports 1-65535, got {entry!r}")
        found[name] = StandIn(name, tuple(ports), bool(entry.get("init")))
    return found


def stand_in_container(container: Obj, stand_in: StandIn) -> dict[str, Any]:
    """``container`` as the echo backend runs it: the image's own command and arguments replaced (the rest kept).

    An init container's stand-in exits 0 at once (``true``): the real one would have prepared something the echo
    backend does not need.
    """
    replaced = {k: v for k, v in container.items() if k not in ("command", "args")}
    if stand_in.init:
        replaced["command"] = ["true"]
    else:
        replaced["args"] = [f"--port={port}" for port in stand_in.ports]
    return replaced


def _tcp_ports(container: Mapping[str, Any]) -> list[int]:
    return [
        int(p["containerPort"])
        for p in container.get("ports") or []
        if p.get("protocol", "TCP") == "TCP" and "containerPort" in p
    ]


def _probe_port(probe: Mapping[str, Any], container: Mapping[str, Any]) -> int | None:
    handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc") or {}
    port = handler.get("port")
    if port is None:
        return None
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    return None


def _service_ports(services: Sequence[Mapping[str, Any]], namespace: str, labels: Mapping[str, str]) -> set[int]:
    """The numeric target ports of the TCP ports of Services in ``namespace`` that select pods with ``labels``."""
    found = set()
    for service in services:
        selector = (service.get("spec") or {}).get("selector") or {}
        if service["metadata"].get("namespace") != namespace or not selector:
            continue
        if any(labels.get(k) != v for k, v in selector.items()):
            continue
        for port in (service.get("spec") or {}).get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if isinstance(target, int) and port.get("protocol", "TCP") == "TCP":
                found.add(target)
    return found


def for_sandbox(deployment: Mapping[str, Any], services: Sequence[Mapping[str, Any]]) -> tuple[Obj, list[str]]:
    """``deployment`` prepared for the sandbox, and one note per change; ``ValueError`` when it cannot run here."""
    obj: Obj = copy.deepcopy(dict(deployment))
    name = f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
    template = (obj.get("spec") or {}).get("template") or {}
    pod = template.get("spec")
    if not isinstance(pod, dict) or not pod.get("containers"):
        raise ValueError("no `spec.template.spec.containers`")
    notes = []
    why = {
        "nodeSelector": "the sandbox's one node carries none of your nodes' labels",
        "schedulerName": "the sandbox runs only the default kube-scheduler",
    }
    for dropped, reason in why.items():
        if pod.pop(dropped, None) is not None:
            notes.append(f"{name}: {dropped} dropped ({reason})")
    labels = (template.get("metadata") or {}).get("labels") or {}
    declared = {port for c in pod["containers"] for port in _tcp_ports(c)}
    unclaimed = sorted(_service_ports(services, obj["metadata"].get("namespace"), labels) - declared)
    stand_ins: list[StandIn] = []
    for container in pod.get("initContainers") or []:
        if not container.get("image"):
            raise ValueError(f"init container {container.get('name')!r} has no image")
        if podspec.program_for_image(container["image"]) is None:
            stand_ins.append(StandIn(container["name"], init=True))
            notes.append(
                f"{name}: init container {container['name']} ({container['image']}) has no local program: "
                "skipped (exits 0)"
            )
    listening: set[int] = set()
    for container in pod["containers"]:
        if not container.get("image"):
            raise ValueError(f"container {container.get('name')!r} has no image")
        if podspec.program_for_image(container["image"]) is not None:
            continue
        ports = set(_tcp_ports(container))
        ports |= {p for kind in PROBES if container.get(kind) for p in [_probe_port(container[kind], container)] if p}
        if not any(not s.init for s in stand_ins):
            ports |= set(unclaimed)
        if ports & listening:
            raise ValueError(f"two stood-in containers would both listen on {sorted(ports & listening)}")
        listening |= ports
        ordered = tuple(sorted(ports))
        stand_ins.append(StandIn(container["name"], ordered))
        # Where a rewritten probe checks: the container's first declared port, as its main one.
        primary = next(iter(_tcp_ports(container)), ordered[0] if ordered else 0)
        for kind in PROBES:
            probe = container.get(kind)
            handler = next((h for h in ("exec", "grpc") if probe and h in probe), None)
            if probe is None or handler is None:
                continue
            if not primary:
                raise ValueError(f"container {container['name']} has an {handler} {kind} but declares no port")
            probe.pop(handler)
            probe["tcpSocket"] = {"port": primary}
            notes.append(
                f"{name}: container {container['name']}'s {handler} {kind} became tcpSocket :{primary} "
                f"(the {handler} check belongs to the real image)"
            )
        on = ", ".join(map(str, ordered)) if ordered else "8080 (it declares no port)"
        notes.append(
            f"{name}: container {container['name']} ({container['image']}) has no local program: the echo backend "
            f"stands in, on {on}; it answers 200 to every GET, not as your app would"
        )
    if stand_ins:
        meta = template.setdefault("metadata", {})
        meta.setdefault("annotations", {})[STAND_IN_ANNOTATION] = stand_in_annotation(stand_ins)
    return obj, notes
