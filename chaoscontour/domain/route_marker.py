"""The route marker's record on its route object: what was there before, whose marker it is, and until when.

The route object is an HTTPProxy (the marker is a ``responseHeadersPolicy.set`` entry of one of its ``routes``) or a
Gateway API HTTPRoute (a ``set`` entry of the ``ResponseHeaderModifier`` filter of one of its ``rules``, the filter
added when the rule has none and removed again when it held only our entry); everything else is the same.

`route_change_propagation` writes a marker value into a response header of a route; its rollback must put back what
the route had, even when it runs in another process after the runner died. So the write also stores, on the
HTTPProxy itself, an annotation ``chaoscontour.io/route-marker-<header>`` whose JSON value holds the run, the
header, per route index the marker written there and the entries of that header the route had before the first
write of the run, and an expiry time. Restoring puts those entries back on each route still carrying our marker and
deletes the annotation.

A field edit cannot be garbage-collected the way a fault's NetworkPolicy is (the expiry Job owns the policy and
Kubernetes deletes it): nothing in the cluster acts on ``expires_at`` by itself. The expiry says when the marker is
stale, so that the next `route_change_propagation` on that header, `remove_route_marker` and ``chaoscontour
cleanup`` may restore it without asking; a marker of another run that has not expired is refused instead.

Pure functions on API-shaped mappings; they edit the mapping given, which the caller then writes back.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from chaoscontour.domain.lease import format_api_time, parse_api_time

__all__ = [
    "ANNOTATION_PREFIX",
    "DEFAULT_EXPIRE_AFTER_S",
    "MAX_EXPIRE_AFTER_S",
    "MIN_EXPIRE_AFTER_S",
    "InvalidRecord",
    "MarkerRecord",
    "Restored",
    "annotation_key",
    "header_entries",
    "read_record",
    "records",
    "restore",
    "route_list",
    "write_marker",
]

MARKER_PREFIX = "x-chaoscontour-"
ANNOTATION_PREFIX = "chaoscontour.io/route-marker-"
DEFAULT_EXPIRE_AFTER_S = 600.0
MIN_EXPIRE_AFTER_S = 10.0
# Long enough for any experiment (each write of the run pushes the expiry forward), short enough that a typo does not
# leave a marker that counts as live for days.
MAX_EXPIRE_AFTER_S = 14_400.0

_NAME_SUFFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# An annotation key's name part is at most 63 characters; ``route-marker-`` takes 13 of them.
_MAX_SUFFIX = 63 - len("route-marker-")


class InvalidRecord(ValueError):
    """An annotation of ours that cannot be read (hand-edited, or truncated): nothing can be restored from it."""


@dataclass
class MarkerRecord:
    """One run's marker on one header of one HTTPProxy. ``routes`` maps a route index to the marker written there
    (``marker``) and the entries of the header that route had before (``previous``, a list of ``{name, value}``)."""

    run_id: str
    header: str
    written_at: datetime
    expires_at: datetime
    routes: dict[int, dict[str, Any]] = field(default_factory=dict)

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def to_json(self) -> str:
        return json.dumps(
            {
                "run_id": self.run_id,
                "header": self.header,
                "written_at": format_api_time(self.written_at),
                "expires_at": format_api_time(self.expires_at),
                "routes": {str(i): r for i, r in sorted(self.routes.items())},
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def describe(self) -> str:
        return (
            f"route marker of run {self.run_id} on header {self.header} (route(s) "
            f"{', '.join(str(i) for i in sorted(self.routes)) or 'none'}), written at "
            f"{format_api_time(self.written_at)}, expires at {format_api_time(self.expires_at)}"
        )


@dataclass(frozen=True)
class Restored:
    """What a restore did: the routes put back, the routes that no longer carried our marker (left as they are)."""

    record: MarkerRecord
    restored_routes: tuple[int, ...]
    missing_routes: tuple[int, ...]


def annotation_key(header: str) -> str:
    """``chaoscontour.io/route-marker-<rest of the header>``, or a digest of the header when that is no valid key."""
    suffix = header[len(MARKER_PREFIX) :] if header.startswith(MARKER_PREFIX) else header
    if len(suffix) > _MAX_SUFFIX or not _NAME_SUFFIX.match(suffix):
        suffix = "h" + hashlib.sha256(header.encode()).hexdigest()[:16]
    return ANNOTATION_PREFIX + suffix


def _annotations(proxy: Mapping[str, Any]) -> dict[str, Any]:
    return dict((proxy.get("metadata") or {}).get("annotations") or {})


def _parse(key: str, text: object) -> MarkerRecord:
    try:
        data = json.loads(str(text))
        routes = {int(i): dict(r) for i, r in dict(data["routes"]).items()}
        written, expires = parse_api_time(data["written_at"]), parse_api_time(data["expires_at"])
        if written is None or expires is None:
            raise ValueError("no time")
        for route in routes.values():
            previous = route.get("previous")
            if not isinstance(route.get("marker"), str) or not isinstance(previous, list):
                raise ValueError("a route without marker or previous")
            if not all(isinstance(e, dict) and isinstance(e.get("name"), str) for e in previous):
                raise ValueError("a saved entry without a name")
        return MarkerRecord(str(data["run_id"]), str(data["header"]), written, expires, routes)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InvalidRecord(
            f"the annotation {key} cannot be read ({type(exc).__name__}: {exc}): it was edited or truncated, so the "
            "header values it saved are lost. Fix the route's response headers by hand, then delete the annotation"
        ) from None


def read_record(proxy: Mapping[str, Any], header: str) -> MarkerRecord | None:
    """The record of ``header`` on the HTTPProxy, ``None`` when there is none; ``InvalidRecord`` when unreadable."""
    key = annotation_key(header)
    text = _annotations(proxy).get(key)
    if text is None:
        return None
    record = _parse(key, text)
    if record.header != header:
        raise InvalidRecord(f"the annotation {key} is about header {record.header!r}, not {header!r}")
    return record


def records(proxy: Mapping[str, Any]) -> list[tuple[str, MarkerRecord | InvalidRecord]]:
    """Every route-marker annotation on the HTTPProxy, each with its record or why it cannot be read."""
    found: list[tuple[str, MarkerRecord | InvalidRecord]] = []
    for key, text in sorted(_annotations(proxy).items()):
        if key.startswith(ANNOTATION_PREFIX):
            try:
                found.append((key, _parse(key, text)))
            except InvalidRecord as exc:
                found.append((key, exc))
    return found


HTTPROUTE = "HTTPRoute"
_MODIFIER = "ResponseHeaderModifier"


def route_list(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The routes of an HTTPProxy (``spec.routes``) or the rules of an HTTPRoute (``spec.rules``), by index."""
    return list((obj.get("spec") or {}).get("rules" if obj.get("kind") == HTTPROUTE else "routes") or [])


def _modifier(route: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The mapping that holds the route's response-header ``set`` list (empty when there is none)."""
    if kind != HTTPROUTE:
        return route.get("responseHeadersPolicy") or {}
    found = [f for f in route.get("filters") or [] if f.get("type") == _MODIFIER]
    return (found[0].get("responseHeaderModifier") or {}) if found else {}


def header_entries(route: Mapping[str, Any], header: str, kind: str = "HTTPProxy") -> list[dict[str, Any]]:
    """The route's response-header ``set`` entries named ``header`` (any case), as written."""
    entries = _modifier(route, kind).get("set") or []
    return [dict(e) for e in entries if str(e.get("name", "")).lower() == header]


def _holder(route: dict[str, Any], kind: str) -> dict[str, Any]:
    """The route's ``set`` holder, created when missing (an HTTPRoute rule gets a ResponseHeaderModifier filter)."""
    if kind != HTTPROUTE:
        return route.setdefault("responseHeadersPolicy", {})
    filters = route.setdefault("filters", [])
    found = [f for f in filters if f.get("type") == _MODIFIER]
    if not found:
        found = [{"type": _MODIFIER, "responseHeaderModifier": {}}]
        filters.append(found[0])
    return found[0].setdefault("responseHeaderModifier", {})


def _prune(route: dict[str, Any], kind: str) -> None:
    """Remove the holder we may have created, once it holds nothing."""
    if kind != HTTPROUTE:
        if not route.get("responseHeadersPolicy"):
            route.pop("responseHeadersPolicy", None)
        return
    route["filters"] = [
        f for f in route.get("filters") or [] if f.get("type") != _MODIFIER or f.get("responseHeaderModifier")
    ]
    if not route["filters"]:
        route.pop("filters")


def _replace_entries(route: dict[str, Any], header: str, entries: list[dict[str, Any]], kind: str) -> None:
    """Put ``entries`` in place of every ``set`` entry named ``header``, where the first of them was (appended when
    there was none), so a write and its restore keep the order of the list; empty parts are removed."""
    policy = _holder(route, kind)
    current = list(policy.get("set") or [])
    named = [i for i, e in enumerate(current) if str(e.get("name", "")).lower() == header]
    at = named[0] if named else len(current)
    kept = [e for i, e in enumerate(current[:at]) if i not in named] + entries
    kept += [e for i, e in enumerate(current[at:], start=at) if i not in named]
    if kept:
        policy["set"] = kept
    else:
        policy.pop("set", None)
    _prune(route, kind)


def write_marker(
    proxy: dict[str, Any],
    *,
    index: int,
    header: str,
    marker: str,
    run_id: str,
    now: datetime,
    expire_after_s: float,
) -> MarkerRecord:
    """Write ``header: marker`` into route ``index`` and record it in the annotation.

    The entries the route had are saved only on the run's first write to that route (a later write of the run
    finds its own marker there, not the user's value). The caller has already dealt with another run's record:
    here one is a ``ValueError``, as is a route index out of range.
    """
    routes, kind = route_list(proxy), str(proxy.get("kind") or "HTTPProxy")
    if index >= len(routes):
        raise ValueError(f"route_index {index} is out of range: the {kind} has {len(routes)} route(s)")
    record = read_record(proxy, header)
    if record is not None and record.run_id != run_id:
        raise ValueError(f"the {kind} already carries a {record.describe()}")
    if record is None:
        record = MarkerRecord(run_id, header, now, now)
    if index not in record.routes:
        record.routes[index] = {"marker": marker, "previous": header_entries(routes[index], header, kind)}
    record.routes[index]["marker"] = marker
    record.written_at = now
    record.expires_at = now + timedelta(seconds=expire_after_s)
    _replace_entries(routes[index], header, [{"name": header, "value": marker}], kind)
    proxy.setdefault("metadata", {}).setdefault("annotations", {})[annotation_key(header)] = record.to_json()
    return record


def _carries(route: Mapping[str, Any], header: str, marker: str, kind: str) -> bool:
    return any(str(e.get("value")) == marker for e in header_entries(route, header, kind))


def restore(proxy: dict[str, Any], record: MarkerRecord) -> Restored:
    """Put back, on each route that carries the record's marker, the entries it had before; drop the annotation.

    The route is found at its recorded index, or (routes were inserted or removed since) as the one route carrying
    that marker value. A route whose marker is gone (someone changed the header since) is left as it is.
    """
    routes, kind = route_list(proxy), str(proxy.get("kind") or "HTTPProxy")
    restored: list[int] = []
    missing: list[int] = []
    for index, saved in sorted(record.routes.items()):
        marker = str(saved["marker"])
        if index < len(routes) and _carries(routes[index], record.header, marker, kind):
            where = index
        else:
            found = [i for i, route in enumerate(routes) if _carries(route, record.header, marker, kind)]
            if len(found) != 1:
                missing.append(index)
                continue
            where = found[0]
        _replace_entries(routes[where], record.header, [dict(e) for e in saved["previous"]], kind)
        restored.append(where)
    annotations = (proxy.get("metadata") or {}).get("annotations") or {}
    annotations.pop(annotation_key(record.header), None)
    return Restored(record, tuple(restored), tuple(missing))
