"""What the route-marker activities share: the route object they work on (an HTTPProxy or an HTTPRoute), their
arguments checked, and the marker's resourceVersion-safe write and read."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Dict

from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities._common import process_run_id
from chaoscontour.activities.envoy import LISTENER_EXAMPLE
from chaoscontour.domain import route_marker
from chaoscontour.domain.inputs import (
    InvalidInput,
    parse_host,
    parse_http_url,
    parse_seconds,
    require_name,
    require_namespace,
    require_run_id,
)
from chaoscontour.edges.clock import poll_until
from chaoscontour.edges.route_objects import HTTPPROXY, HTTPROUTE, RouteKind, read_at, update_route
from chaoscontour.edges.served_header import served_header

__all__ = ["DEFAULT_HEADER", "MARKER_PREFIX", "RouteTarget", "expiry_args", "route_args", "wait_served"]

POLL_S = 0.1
MARKER_PREFIX = route_marker.MARKER_PREFIX
DEFAULT_HEADER = MARKER_PREFIX + "config"
Written = tuple[route_marker.MarkerRecord, route_marker.Restored | None]


@dataclass(frozen=True)
class RouteTarget:
    """The route object an activity works on."""

    kind: RouteKind
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind.kind} {self.namespace}/{self.name}"

    @property
    def key(self) -> Dict[str, str]:
        """How the outputs name it: ``{"httpproxy": "ns/name"}`` or ``{"httproute": "ns/name"}``."""
        return {self.kind.kind.lower(): f"{self.namespace}/{self.name}"}

    def not_found(self) -> str:
        return f"{self} not found; set namespace and {self.kind.kind.lower()} to the test route"

    def record(self, obj: Dict[str, Any], header: str, activity: str) -> route_marker.MarkerRecord | None:
        try:
            return route_marker.read_record(obj, header)
        except route_marker.InvalidRecord as exc:
            raise ActivityFailed(f"{activity}: {exc}") from None

    def update(self, k: Any, change: Callable[[Dict[str, Any] | None, datetime], Any]) -> Any:
        return update_route(k, self.namespace, self.name, change, self.kind)

    def refusal(self, record: route_marker.MarkerRecord) -> ActivityFailed:
        return ActivityFailed(
            f"route_change_propagation: {self} already carries a {record.describe()}, not expired: another run is "
            "measuring on this route, and the two would overwrite each other's marker. Nothing was written. Wait "
            f"until it ends, use another header_name, or, if that run is dead, restore the route with "
            f"remove_route_marker(run_id={record.run_id!r}) or `chaoscontour cleanup --namespace {self.namespace}`"
        )

    def write(self, k: Any, header: str, index: int, marker: str, run: str, expire: float) -> Written:
        """Write the marker and its record in one resourceVersion-safe update; an expired record of another run is
        restored first, in the same update; an unexpired one is refused before anything is written."""

        def change(obj: Dict[str, Any] | None, now: datetime) -> tuple[Written, bool]:
            if obj is None:
                raise ActivityFailed(self.not_found())
            stale = None
            record = self.record(obj, header, "route_change_propagation")
            if record is not None and record.run_id != run:
                if not record.expired(now):
                    raise self.refusal(record)
                stale = route_marker.restore(obj, record)
            try:
                written = route_marker.write_marker(
                    obj, index=index, header=header, marker=marker, run_id=run, now=now, expire_after_s=expire
                )
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            return (written, stale), True

        return self.update(k, change)

    def marker(self, k: Any, header: str, index: int) -> str | None:
        """The marker value route ``index`` carries now, ``None`` when it sets no such header."""
        obj, _ = read_at(k, self.namespace, self.name, self.kind)
        if obj is None:
            raise ActivityFailed(self.not_found())
        routes = route_marker.route_list(obj)
        entries = route_marker.header_entries(routes[index], header, self.kind.kind) if index < len(routes) else []
        return str(entries[-1].get("value")) if entries else None


def route_args(
    namespace: str, httpproxy: str, httproute: str, url: str, host: str, header_name: str
) -> tuple[RouteTarget, str, str, str]:
    """The route object (exactly one of ``httpproxy`` and ``httproute``), Envoy's URL, the Host and the header."""
    header = header_name.strip().lower() if isinstance(header_name, str) else ""
    if not header or not all(c.isascii() and (c.isalnum() or c == "-") for c in header):
        raise InvalidInput(f"header_name must be a header name such as {DEFAULT_HEADER!r}, got {header_name!r}")
    # Only headers of our own prefix: a typo naming a real header such as strict-transport-security would have the
    # marker overwrite it, and any mistake in restoring it would touch what the routes really serve.
    if not header.startswith(MARKER_PREFIX) or header == MARKER_PREFIX:
        raise InvalidInput(
            f"header_name must start with {MARKER_PREFIX!r} (e.g. {DEFAULT_HEADER!r}), got {header_name!r}: the marker "
            "and its removal would otherwise touch a header your routes really set"
        )
    if httpproxy and httproute:
        raise InvalidInput("give either httpproxy or httproute (the test route), not both")
    kind, name = (HTTPROUTE, require_name(httproute, "httproute")) if httproute else (HTTPPROXY, httpproxy)
    target = RouteTarget(kind, require_namespace(namespace), require_name(name, "httpproxy (or httproute)"))
    return target, parse_http_url(url, "url", LISTENER_EXAMPLE), parse_host(host, "host"), header


def expiry_args(run_id: str, expire_after_s: float) -> tuple[str, float]:
    run = require_run_id(run_id or process_run_id())
    expire = parse_seconds(
        expire_after_s,
        "expire_after_s",
        minimum=route_marker.MIN_EXPIRE_AFTER_S,
        maximum=route_marker.MAX_EXPIRE_AFTER_S,
    )
    return run, expire


def wait_served(url: str, host: str, header: str, value: str, timeout_s: float, verify_tls: bool) -> float | None:
    """Seconds until Envoy serves ``header: value`` (``None`` after ``timeout_s`` or a stop request)."""
    polled = poll_until(
        lambda: served_header(url, host, header, min(2.0, timeout_s), verify_tls) == value, timeout_s, POLL_S
    )
    return polled.elapsed_s if polled.done else None
