"""Envoy's ``/stats`` text format, and the xDS state it tells: is Envoy connected, how old is its configuration.

The text format is one stat per line, ``name: value``: counters and gauges are integers, text readouts are quoted
strings (``cluster_manager.cds.version_text: "v1"``), histograms are summaries (``P0(...) P25(...)`` or
``No recorded values``). Stat names never contain ``": "``, so a line is split at its first one.

Where the connected state lives depends on how Envoy subscribes (checked on Envoy 1.38.3, the version Contour
v1.33 supports):

* ``contour bootstrap`` writes plain gRPC ``api_config_source`` CDS and LDS (Contour's ``ConfigSource``): each
  subscription has its own gRPC stream and its own gauge, ``cluster_manager.cds.control_plane.connected_state``
  and ``listener_manager.lds.control_plane.connected_state``;
* an ADS bootstrap (and older Envoys) report one ``control_plane.connected_state``.

Both are read; Envoy counts as connected when every one of these gauges that exists is 1. Envoy sets a gauge to 1
when it starts a stream, before the TCP connection is made, and to 0 when the stream fails: a connection attempt
that hangs (packets to an address that never answers) reads 1 until its connect timeout (5 s in Contour's
bootstrap); one that is refused reads 0 at once. So a 1 alone does not prove a stream is up. What does is the
static cluster Envoy dials Contour through: Contour's bootstrap names it ``contour`` and gives it the stat name
``<namespace>_contour_<xds port>`` (``projectcontour_contour_8001`` with the release manifest). Each xDS stream is a
request on it: ``upstream_rq_pending_active`` counts the streams still waiting for a connection (the 1 above, while
Envoy dials a dead address), ``upstream_rq_active`` those on an open connection. Envoy's stream is *established*
when the gauges read 1 and no stream waits for a connection; without that cluster's stats only the gauges are known.

Per subscription (prefixes ``cluster_manager.cds.`` and ``listener_manager.lds.``): ``update_time`` is the wall
clock time (ms since the epoch) of the last accepted update, 0 before the first one; ``update_success``,
``update_rejected`` (config refused by Envoy), ``update_failure`` (fetch failed, e.g. the stream broke) and
``update_attempt`` are counters; ``version`` is a hash of the accepted ``version_text``.
"""

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CDS",
    "LDS",
    "XDS_CLUSTER_FILTER",
    "StatValue",
    "Subscription",
    "XdsState",
    "control_plane_identifier",
    "describe_xds_stats",
    "parse_stats",
    "subscription",
    "xds_state",
]

CDS = "cluster_manager.cds"
LDS = "listener_manager.lds"
TOP_LEVEL_CONNECTED = "control_plane.connected_state"
# The request gauges of the xDS cluster: ``contour`` (a bare bootstrap) or ``<namespace>_contour_<port>`` (Contour's
# stat name; Kubernetes namespaces hold no ``_`` or ``.``). For Envoy's /stats ``filter`` and to pick them out here.
XDS_CLUSTER_FILTER = r"^cluster\.([a-z0-9-]+_)?contour(_[0-9]+)?\.upstream_rq_(pending_)?active$"
_XDS_CLUSTER = re.compile(r"cluster\.((?:[a-z0-9-]+_)?contour(?:_[0-9]+)?)\.upstream_rq_(pending_active|active)")

StatValue = int | str


def parse_stats(text: str) -> dict[str, StatValue]:
    """Every stat in an Envoy ``/stats`` text body: integers as ``int``, quoted text readouts unquoted, anything
    else (histogram summaries) as the raw string. Blank and malformed lines are skipped."""
    stats: dict[str, StatValue] = {}
    for line in text.splitlines():
        name, sep, raw = line.partition(": ")
        name = name.strip()
        if not sep or not name or " " in name:
            continue
        raw = raw.strip()
        value: StatValue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            value = raw[1:-1]
        else:
            try:
                value = int(raw)
            except ValueError:
                value = raw
        stats[name] = value
    return stats


def control_plane_identifier(stats: dict[str, StatValue]) -> str | None:
    """The management server named in Envoy's last CDS or LDS response (``control_plane.identifier``, a text
    readout), or ``None`` when it names none: Contour's xDS server leaves the field empty."""
    for name in (f"{CDS}.control_plane.identifier", f"{LDS}.control_plane.identifier", "control_plane.identifier"):
        value = stats.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def _int(stats: dict[str, StatValue], name: str) -> int | None:
    value = stats.get(name)
    return value if isinstance(value, int) else None


@dataclass(frozen=True)
class Subscription:
    """The state of one xDS subscription (CDS or LDS) as its stats show it; ``None`` for a stat that is absent."""

    prefix: str
    connected_state: int | None
    update_time_ms: int | None
    update_attempt: int | None
    update_success: int | None
    update_rejected: int | None
    update_failure: int | None
    version: int | None
    version_text: str | None

    @property
    def last_update_s(self) -> float | None:
        """Epoch seconds of the last accepted update; ``None`` when none was ever accepted (``update_time`` 0)."""
        if not self.update_time_ms:
            return None
        return self.update_time_ms / 1000.0

    def update_age_s(self, now_s: float) -> float | None:
        """Seconds between the last accepted update and ``now_s``; ``None`` when none was ever accepted.

        Envoy's clock and the caller's are compared: a tiny negative difference (clock skew) reads as 0.
        """
        last = self.last_update_s
        return None if last is None else max(0.0, now_s - last)

    def as_dict(self, now_s: float) -> dict[str, Any]:
        age = self.update_age_s(now_s)
        return {
            "connected_state": self.connected_state,
            "update_age_s": None if age is None else round(age, 3),
            "update_time_ms": self.update_time_ms,
            "update_attempt": self.update_attempt,
            "update_success": self.update_success,
            "update_rejected": self.update_rejected,
            "update_failure": self.update_failure,
            "version": self.version,
            "version_text": self.version_text,
        }


def subscription(stats: dict[str, StatValue], prefix: str) -> Subscription | None:
    """The subscription under ``prefix`` (``CDS`` or ``LDS``), or ``None`` when Envoy has no stat for it at all
    (a static-only configuration)."""
    if not any(name.startswith(prefix + ".") for name in stats):
        return None
    text = stats.get(f"{prefix}.version_text")
    return Subscription(
        prefix=prefix,
        connected_state=_int(stats, f"{prefix}.{TOP_LEVEL_CONNECTED}"),
        update_time_ms=_int(stats, f"{prefix}.update_time"),
        update_attempt=_int(stats, f"{prefix}.update_attempt"),
        update_success=_int(stats, f"{prefix}.update_success"),
        update_rejected=_int(stats, f"{prefix}.update_rejected"),
        update_failure=_int(stats, f"{prefix}.update_failure"),
        version=_int(stats, f"{prefix}.version"),
        version_text=text if isinstance(text, str) else None,
    )


@dataclass(frozen=True)
class XdsState:
    """Envoy's connection to its control plane and its CDS/LDS subscriptions."""

    control_plane_connected_state: int | None
    cds: Subscription | None
    lds: Subscription | None
    # The xDS cluster's stat name and request gauges (``None`` when Envoy's stats have no such cluster).
    xds_cluster: str | None = None
    streams_pending: int | None = None
    streams_active: int | None = None

    @property
    def connected_states(self) -> dict[str, int]:
        """Every connected-state gauge present, by where it was found (``control_plane``, ``cds``, ``lds``)."""
        found = {
            "control_plane": self.control_plane_connected_state,
            "cds": self.cds.connected_state if self.cds else None,
            "lds": self.lds.connected_state if self.lds else None,
        }
        return {k: v for k, v in found.items() if v is not None}

    @property
    def connected(self) -> bool | None:
        """True when every connected-state gauge present is 1; ``None`` when Envoy has none (no gRPC xDS)."""
        states = self.connected_states
        if not states:
            return None
        return all(v == 1 for v in states.values())

    @property
    def established(self) -> bool | None:
        """True when the gauges read 1 and, where the xDS cluster's stats show it, no stream waits for a connection
        and one is open; ``None`` as for :attr:`connected`."""
        connected = self.connected
        if connected is not True or self.streams_pending is None:
            return connected
        return self.streams_pending == 0 and (self.streams_active or 0) > 0

    def stream_check(self) -> dict[str, Any] | None:
        """The xDS cluster's request gauges, for an activity's output (``None`` without them)."""
        if self.xds_cluster is None:
            return None
        return {
            "xds_cluster": self.xds_cluster,
            "streams_waiting_for_connection": self.streams_pending,
            "streams_open": self.streams_active,
        }

    def not_established_text(self) -> str:
        """Why :attr:`established` is not true, in words."""
        if self.connected is not True:
            return f"its connected_state gauges read {self.connected_states}"
        return (
            f"its connected_state gauges read 1 but {self.streams_pending} xDS stream(s) still wait for a connection "
            f"to Contour and {self.streams_active or 0} are open (cluster {self.xds_cluster}): Envoy is dialing, "
            "and a gauge reads 1 from the moment a stream is started"
        )

    @property
    def has_xds(self) -> bool:
        return self.control_plane_connected_state is not None or self.cds is not None or self.lds is not None


def xds_state(stats: dict[str, StatValue]) -> XdsState:
    """The xDS state in parsed ``stats`` (see :func:`parse_stats`)."""
    gauges: dict[str, dict[str, int]] = {}
    for name, value in stats.items():
        found = _XDS_CLUSTER.fullmatch(name)
        if found and isinstance(value, int):
            gauges.setdefault(found.group(1), {})[found.group(2)] = value
    # Several matches (a Service named contour routed by this Envoy as well): the sum keeps a waiting stream visible.
    return XdsState(
        control_plane_connected_state=_int(stats, TOP_LEVEL_CONNECTED),
        cds=subscription(stats, CDS),
        lds=subscription(stats, LDS),
        xds_cluster=", ".join(sorted(gauges)) if gauges else None,
        streams_pending=sum(g.get("pending_active", 0) for g in gauges.values()) if gauges else None,
        streams_active=sum(g.get("active", 0) for g in gauges.values()) if gauges else None,
    )


def describe_xds_stats(stats: dict[str, StatValue], limit: int = 12) -> str:
    """What xDS stats ``stats`` holds, for an error that must say what was read: each prefix (``control_plane``,
    ``cluster_manager.cds``, ``listener_manager.lds``) with the stat names under it, or that it was absent."""
    parts = []
    for prefix in ("control_plane", CDS, LDS):
        names = sorted(name[len(prefix) + 1 :] for name in stats if name.startswith(prefix + "."))
        if prefix == "control_plane":
            names = [n for n in names if f"{prefix}.{n}" == TOP_LEVEL_CONNECTED or not n.startswith(("cds", "lds"))]
        if not names:
            parts.append(f"no {prefix}.* stats")
            continue
        shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
        parts.append(f"{prefix}.* ({shown})")
    return "; ".join(parts)
