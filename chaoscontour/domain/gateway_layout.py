"""Where a Gateway's Contour and Envoy are: the settings of the experiments, read from the provisioner's objects.

Contour's Gateway provisioner creates, in the Gateway's namespace and labelled
``gateway.networking.k8s.io/gateway-name=<gateway>``, a Contour Deployment (its pods selected by
``app=contour-<gateway>``, its Lease named by its ``--leader-election-resource-name`` argument), an Envoy DaemonSet
or Deployment (the workload with a container ``envoy``, ``app=envoy-<gateway>``) and the Envoy Service whose ports
are named ``<protocol>-<port>`` after the Gateway's listeners, as are Envoy's listeners and their stats prefixes
(``http-80``). The names are read from these objects, not assumed: a Gateway from another controller, or a provisioner
that names things otherwise, gets an error that says what was not found.

Pure: API-shaped mappings in, a :class:`GatewayLayout` out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaoscontour.domain.inputs import InvalidInput
from chaoscontour.domain.selectors import format_label_selector

__all__ = ["GATEWAY_LABEL", "GatewayLayout", "GatewayLayoutError", "layout_of", "parse_gateway_ref"]

GATEWAY_LABEL = "gateway.networking.k8s.io/gateway-name"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_LEASE_NAME_ARG = "--leader-election-resource-name"
_LEASE_NAMESPACE_ARG = "--leader-election-resource-namespace"
Obj = Mapping[str, Any]


class GatewayLayoutError(ValueError):
    """The Gateway's objects do not say where its Contour or Envoy are; the message names what is missing."""


def parse_gateway_ref(value: object) -> tuple[str, str]:
    """``NAMESPACE/NAME`` as (namespace, name), strictly: a namespace is a DNS label, a name a DNS subdomain."""
    text = value.strip() if isinstance(value, str) else ""
    namespace, slash, name = text.partition("/")
    if not slash or not _DNS_LABEL.fullmatch(namespace) or len(namespace) > 63:
        raise InvalidInput(f"gateway must be NAMESPACE/NAME (e.g. projectcontour/contour), got {value!r}")
    if not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
        raise InvalidInput(f"gateway must be NAMESPACE/NAME with a valid Gateway name, got {value!r}")
    return namespace, name


@dataclass(frozen=True)
class GatewayLayout:
    """Where one Gateway's Contour and Envoy are, as the experiments' settings name them."""

    gateway: str
    namespace: str
    contour_selector: str
    envoy_selector: str
    lease_name: str
    lease_namespace: str
    listener_prefixes: tuple[str, ...]
    envoy_http_port: int | None
    envoy_stats_port: int
    contour_service: str | None = None  # the Service Envoy reaches Contour's xDS through

    def settings(self, envoy_ip: str | None) -> dict[str, str]:
        """The experiments' environment for this layout; Envoy's URLs only when a Ready Envoy pod's address is
        known (from outside the cluster you give your own load balancer's address instead)."""
        found = {
            "CONTOUR_GATEWAY": self.gateway,
            "CONTOUR_NAMESPACE": self.namespace,
            "CONTOUR_SELECTOR": self.contour_selector,
            "ENVOY_SELECTOR": self.envoy_selector,
            "ENVOY_NAMESPACE": self.namespace,
            "CONTOUR_LEASE": self.lease_name,
            "CONTOUR_LEASE_NAMESPACE": self.lease_namespace,
            "ENVOY_LISTENER_PREFIXES": ",".join(self.listener_prefixes),
            # as prometheus-operator's PodMonitor labels the targets; another Contour's restarts are not this one's
            "CONTOUR_METRICS_SELECTOR": f'container="contour",namespace="{self.namespace}"',
            # the ports of an Envoy pod itself, for restart_envoy_pod's replacement
            "ENVOY_POD_STATS_PORT": str(self.envoy_stats_port),
        }
        if self.contour_service:
            found["CONTOUR_SERVICE"] = self.contour_service
        if self.envoy_http_port:
            found["ENVOY_POD_PORT"] = str(self.envoy_http_port)
        if envoy_ip:
            host = f"[{envoy_ip}]" if ":" in envoy_ip else envoy_ip
            if self.envoy_http_port:
                found["ENVOY_URL"] = f"http://{host}:{self.envoy_http_port}/"
            found["ENVOY_STATS_URL"] = f"http://{host}:{self.envoy_stats_port}/stats"
        return found


def _containers(workload: Obj) -> list[Obj]:
    return list(((workload.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [])


def _selector(workload: Obj) -> str:
    return format_label_selector(((workload.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})


def _arg(args: Sequence[str], flag: str) -> str | None:
    for index, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and index + 1 < len(args):
            return args[index + 1]
    return None


def _describe(workloads: Sequence[Obj]) -> str:
    return ", ".join(f"{w.get('kind')} {w['metadata']['name']}" for w in workloads) or "none"


def layout_of(gateway: Obj, workloads: Sequence[Obj], services: Sequence[Obj]) -> GatewayLayout:
    """The layout of ``gateway`` from the Deployments and DaemonSets (``workloads``) and Services labelled with its
    name in its namespace."""
    namespace, name = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
    ref = f"{namespace}/{name}"
    where = f"labelled {GATEWAY_LABEL}={name} in namespace {namespace}"
    contours = [
        w
        for w in workloads
        if w.get("kind") == "Deployment" and any("serve" in (c.get("args") or []) for c in _containers(w))
    ]
    envoys = [w for w in workloads if any(c.get("name") == "envoy" for c in _containers(w))]
    if len(contours) != 1:
        raise GatewayLayoutError(
            f"Gateway {ref}: expected one Contour Deployment (a container running `contour serve`) {where}, found "
            f"{len(contours)} among: {_describe(workloads)}. Is the Gateway's class served by Contour's Gateway "
            "provisioner, and has it reconciled the Gateway?"
        )
    if len(envoys) != 1:
        raise GatewayLayoutError(
            f"Gateway {ref}: expected one Envoy DaemonSet or Deployment (a container named envoy) {where}, found "
            f"{len(envoys)} among: {_describe(workloads)}"
        )
    [contour], [envoy] = contours, envoys
    contour_selector, envoy_selector = _selector(contour), _selector(envoy)
    if not contour_selector or not envoy_selector:
        raise GatewayLayoutError(
            f"Gateway {ref}: {contour['metadata']['name']} or {envoy['metadata']['name']} has "
            "no spec.selector.matchLabels to find its pods by"
        )
    args = [a for c in _containers(contour) for a in (c.get("args") or [])]
    [envoy_container] = [c for c in _containers(envoy) if c.get("name") == "envoy"]
    stats = [p for p in envoy_container.get("ports") or [] if p.get("name") == "metrics"]
    listeners = (gateway.get("spec") or {}).get("listeners") or []
    prefixes = tuple(
        dict.fromkeys(
            f"{str(listener['protocol']).lower()}-{listener['port']}"
            for listener in listeners
            if listener.get("protocol") in ("HTTP", "HTTPS")
        )
    )
    if not prefixes:
        raise GatewayLayoutError(f"Gateway {ref} has no HTTP or HTTPS listener: nothing for Envoy to route")
    return GatewayLayout(
        gateway=ref,
        namespace=namespace,
        contour_selector=contour_selector,
        envoy_selector=envoy_selector,
        lease_name=_arg(args, _LEASE_NAME_ARG) or "leader-elect",
        lease_namespace=_arg(args, _LEASE_NAMESPACE_ARG) or namespace,
        listener_prefixes=prefixes,
        envoy_http_port=_target_port(services, envoy_selector, prefixes),
        envoy_stats_port=int(stats[0]["containerPort"]) if stats else 8002,
        contour_service=next(
            (
                str(s["metadata"]["name"])
                for s in services
                if format_label_selector((s.get("spec") or {}).get("selector") or {}) == contour_selector
            ),
            None,
        ),
    )


def _target_port(services: Sequence[Obj], envoy_selector: str, prefixes: Sequence[str]) -> int | None:
    """Envoy's container port for the first HTTP listener, from the Envoy Service's port of that name."""
    http = [p for p in prefixes if p.startswith("http-")]
    for service in services:
        spec = service.get("spec") or {}
        if format_label_selector(spec.get("selector") or {}) != envoy_selector:
            continue
        for port in spec.get("ports") or []:
            if http and port.get("name") == http[0] and isinstance(port.get("targetPort"), int):
                return int(port["targetPort"])
    return None
