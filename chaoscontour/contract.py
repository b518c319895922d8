"""The activity contract: every activity chaoscontour offers, declared once.

Each :class:`Activity` names a function of ``chaoscontour.activities.<module>``, a probe or an action, and its
output's type: ``bool``, or a ``TypedDict`` of the keys chaoscontour's tools (``gate``, ``report``) read from it in a
journal (docs/activities.md lists them all). The TypedDicts are not ``total``: a journal may come from an older
release. From this declaration come discovery's probe/action types and module order, the names and output types
:mod:`chaoscontour.tools.journal` reads, and each activity's "Output" line in docs/activities.md;
``tests/unit/test_contract.py`` fails when the declaration and the activity modules disagree.
"""

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypedDict, TypeVar

__all__ = [
    "ACTIVITIES",
    "ACTIVITY_PACKAGE",
    "APISERVER_EGRESS_FAULT",
    "BLOCK_APISERVER_EGRESS",
    "BLOCK_XDS_EGRESS",
    "CONTOUR_RESTART_COUNT",
    "CONTOUR_XDS_CLIENTS",
    "ENVOY_AVAILABILITY",
    "ENVOY_BACKEND_VIEW",
    "ENVOY_ENDPOINTS_CONVERGED",
    "ENVOY_SERVING",
    "ENVOY_SUCCESS_RATIO",
    "ENVOY_XDS_CONNECTED",
    "ENVOY_XDS_TIMELINE",
    "KILL_LEADER",
    "RESTART_ENVOY_POD",
    "LEASE_HOLDER",
    "MODULES",
    "PROMETHEUS_SUCCESS_RATIO",
    "REMOVE_ROUTE_MARKER",
    "ROUTE_CHANGE_PROPAGATION",
    "ROUTE_CONFIG_CONVERGED",
    "UNBLOCK_APISERVER_EGRESS",
    "UNBLOCK_OF",
    "UNBLOCK_XDS_EGRESS",
    "WAIT",
    "XDS_EGRESS_FAULT",
    "Activity",
    "AvailabilityOutput",
    "AvailabilitySecond",
    "BackendViewOutput",
    "BlockOutput",
    "BlockXdsOutput",
    "EndpointChange",
    "EndpointComparison",
    "EndpointsConvergedOutput",
    "EnvoyRestartOutput",
    "FaultHeldOutput",
    "FaultVerification",
    "KillLeaderOutput",
    "Kind",
    "Latency",
    "LeaseHolderOutput",
    "LeaderXds",
    "NoKeysRead",
    "PrometheusRatioOutput",
    "RestartCountOutput",
    "RouteConvergedOutput",
    "RoutePropagationOutput",
    "SuccessRatioOutput",
    "Termination",
    "TrafficInterval",
    "UnblockOutput",
    "XdsClientsOutput",
    "XdsConnectedOutput",
    "XdsStream",
    "XdsSubscription",
    "XdsTimelineOutput",
    "XdsTransition",
    "by_name",
]

# The package whose modules hold the activities (what `chaos discover chaostoolkit-contour` lists).
ACTIVITY_PACKAGE = "chaoscontour.activities"

Kind = Literal["probe", "action"]
Output = TypeVar("Output")


@dataclass(frozen=True)
class Activity(Generic[Output]):
    """One activity: ``chaoscontour.activities.<module>.<name>``, a probe or an action, returning ``output`` (generic
    in it: a tool reading a journal gets the output as declared, :func:`chaoscontour.tools.journal.output_as`)."""

    name: str
    kind: Kind
    module: str
    output: type[Output]

    @property
    def module_path(self) -> str:
        """The module an experiment's ``python`` provider names."""
        return f"{ACTIVITY_PACKAGE}.{self.module}"


# -- outputs: the keys the tools read ------------------------------------------------------------------------------


class FaultVerification(TypedDict, total=False):
    confirmed: bool
    confirmed_after_s: float | None
    evidence: str | None
    evidence_text: str | None
    lease: str | None


class BlockOutput(TypedDict, total=False):
    """``block_apiserver_egress`` and ``block_xds_egress``."""

    selected_pods: list[str]
    blocked_cidrs: list[str]
    verification: FaultVerification


class BlockXdsOutput(BlockOutput, total=False):
    xds_port: int


class UnblockOutput(TypedDict, total=False):
    removed_policies: list[str]


class FaultHeldOutput(TypedDict, total=False):
    """``apiserver_egress_fault`` and ``xds_egress_fault``: whether the fault held to the end of its window."""

    held: bool
    reasons: list[str]


class LeaseHolderOutput(TypedDict, total=False):
    namespace: str
    name: str
    holder_identity: str | None
    pod_name: str | None
    seconds_since_renewal: float | None
    held: bool


class LeaderXds(TypedDict, total=False):
    """Where Envoy's xDS streams were when the leader was killed, and where they went (``kill_leader``'s ``xds``)."""

    known: bool
    reason: str | None
    streams_before: dict[str, int]
    on_killed_pod: int | None
    reconnected_after_s: float | None
    reconnected_to: list[str]


class KillLeaderOutput(TypedDict, total=False):
    old_pod: str
    new_pod: str | None
    failover_s: float | None
    xds: LeaderXds


class XdsClientsOutput(TypedDict, total=False):
    """``contour_xds_clients``: the replicas serving Envoy's xDS streams."""

    serving: list[str]
    envoy_streams: int


class EnvoyRestartOutput(TypedDict, total=False):
    deleted_pod: str
    replacement_pod: str | None
    heal_seen: bool
    served_before_heal: bool
    ready_before_heal: bool
    stats_before_heal: bool
    first_200_after_heal_s: float | None
    ready_after_heal_s: float | None
    availability: float | None
    meets_availability: bool


class Termination(TypedDict, total=False):
    pod: str
    container: str
    finished_at: str


class RestartCountOutput(TypedDict, total=False):
    total_restarts: int
    terminated_since: int
    terminations: list[Termination]


class Latency(TypedDict, total=False):
    p50: float | None
    p95: float | None
    p99: float | None


class AvailabilitySecond(TypedDict, total=False):
    """One second of an ``envoy_availability`` timeline."""

    epoch_s: float
    requests: int
    successes: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class AvailabilityOutput(TypedDict, total=False):
    duration_s: float
    requests: int
    successes: int
    availability: float
    longest_outage_s: float
    longest_outage_started_at: str | None
    latency_ms: Latency
    error_kinds: dict[str, int]
    timeline: list[AvailabilitySecond]
    min_availability: float | None
    meets_min_availability: bool


class TrafficInterval(TypedDict, total=False):
    """One interval between two readings of ``envoy_success_ratio`` (``requests`` and ``rq_5xx`` null for a reset)."""

    epoch_s: float
    duration_s: float
    requests: int | None
    rq_5xx: int | None


class SuccessRatioOutput(TypedDict, total=False):
    """``envoy_success_ratio``: what Envoy's own counters said of the window (``ratio`` null when they cannot say)."""

    requests: int | None
    successes: int | None
    ratio: float | None
    unrouted_5xx: int | None
    clusters: list[str]
    not_computable: str | None
    intervals: list[TrafficInterval]


class PrometheusRatioOutput(SuccessRatioOutput, total=False):
    """``prometheus_success_ratio``: the same figures from a user's Prometheus, Contour's restarts in the window (per
    pod, the start times of processes that started in it) and DAG rebuilds; ``skipped`` when no Prometheus."""

    source: str
    skipped: str | None
    contour_restarts: dict[str, list[str]]
    contour_restart_count: int | None
    dag_rebuilds: int | None


class XdsStream(TypedDict, total=False):
    xds_cluster: str
    streams_open: int | None


class XdsSubscription(TypedDict, total=False):
    update_time_ms: int | None


class XdsConnectedOutput(TypedDict, total=False):
    connected: bool
    control_plane_identifier: str | None
    cds_update_age_s: float | None
    cds: XdsSubscription | None
    lds: XdsSubscription | None
    stream: XdsStream | None


class NoKeysRead(TypedDict, total=False):
    """A mapping none of whose keys the tools read (``wait``, ``remove_route_marker``)."""


class XdsTransition(TypedDict, total=False):
    at_s: float
    connected: bool | None


class XdsTimelineOutput(TypedDict, total=False):
    samples: int
    duration_s: float
    first_reading_at: str
    connected_at_start: bool | None
    transitions: list[XdsTransition]
    updates_at_s: list[float]
    failures_at_s: list[float]
    blocked_at: str | None
    healed_at: str | None
    detected_after_s: float | None
    reconnect_attempts: int
    reconnected_after_s: float | None
    current_after_s: float | None
    keepalive_bound_s: float
    meets_bounds: bool
    bound_misses: list[str]


class RoutePropagationOutput(TypedDict, total=False):
    httpproxy: str
    httproute: str
    marker: str
    written_at: str
    arrived: bool
    propagation_s: float | None
    held_back_s: float | None
    summary: str


class RouteConvergedOutput(TypedDict, total=False):
    httpproxy: str
    httproute: str
    marker: str
    converged_after_s: float
    since_heal_s: float | None
    since_change_s: float | None


class EndpointComparison(TypedDict, total=False):
    method: str
    matches: bool
    envoy_total: int
    endpointslices_ready: list[str]
    stale: list[str]
    missing: list[str]


class EndpointChange(TypedDict, total=False):
    """What changed for the backend since an earlier reading (``snapshot``), and its counters since then."""

    snapshot: str
    counters: dict[str, int]
    counters_reset: list[str]
    membership_changed: bool
    endpointslices_changed: bool
    endpointslices_ready_before: list[str]
    failure_causes: list[str]


class BackendViewOutput(TypedDict, total=False):
    checked_at: str
    snapshot: str
    counters: dict[str, int]
    comparison: EndpointComparison
    eds_update_time_ms: int | None
    since: EndpointChange


class EndpointsConvergedOutput(TypedDict, total=False):
    converged_after_s: float | None
    endpoints_matched_after_s: float | None
    failed_requests: dict[str, int]
    comparison: EndpointComparison
    since: EndpointChange


# -- the activities, module by module in discovery's order (so ACTIVITIES lists them) ----------------------------

APISERVER_EGRESS_FAULT = Activity("apiserver_egress_fault", "probe", "network", FaultHeldOutput)
BLOCK_APISERVER_EGRESS = Activity("block_apiserver_egress", "action", "network", BlockOutput)
UNBLOCK_APISERVER_EGRESS = Activity("unblock_apiserver_egress", "action", "network", UnblockOutput)
KILL_LEADER = Activity("kill_leader", "action", "leader", KillLeaderOutput)
LEASE_HOLDER = Activity("lease_holder", "probe", "leader", LeaseHolderOutput)
CONTOUR_XDS_CLIENTS = Activity("contour_xds_clients", "probe", "leader", XdsClientsOutput)
CONTOUR_RESTART_COUNT = Activity("contour_restart_count", "probe", "pods", RestartCountOutput)
ENVOY_AVAILABILITY = Activity("envoy_availability", "probe", "envoy", AvailabilityOutput)
ENVOY_SERVING = Activity("envoy_serving", "probe", "envoy", bool)
ENVOY_XDS_CONNECTED = Activity("envoy_xds_connected", "probe", "envoy", XdsConnectedOutput)
RESTART_ENVOY_POD = Activity("restart_envoy_pod", "action", "envoy_restart", EnvoyRestartOutput)
WAIT = Activity("wait", "action", "timing", NoKeysRead)
BLOCK_XDS_EGRESS = Activity("block_xds_egress", "action", "xds", BlockXdsOutput)
UNBLOCK_XDS_EGRESS = Activity("unblock_xds_egress", "action", "xds", UnblockOutput)
XDS_EGRESS_FAULT = Activity("xds_egress_fault", "probe", "xds", FaultHeldOutput)
ENVOY_XDS_TIMELINE = Activity("envoy_xds_timeline", "probe", "xds_probes", XdsTimelineOutput)
REMOVE_ROUTE_MARKER = Activity("remove_route_marker", "action", "routes", NoKeysRead)
ROUTE_CHANGE_PROPAGATION = Activity("route_change_propagation", "probe", "routes", RoutePropagationOutput)
ROUTE_CONFIG_CONVERGED = Activity("route_config_converged", "probe", "routes", RouteConvergedOutput)
ENVOY_BACKEND_VIEW = Activity("envoy_backend_view", "probe", "endpoints", BackendViewOutput)
ENVOY_ENDPOINTS_CONVERGED = Activity("envoy_endpoints_converged", "probe", "endpoints", EndpointsConvergedOutput)
ENVOY_SUCCESS_RATIO = Activity("envoy_success_ratio", "probe", "traffic", SuccessRatioOutput)
PROMETHEUS_SUCCESS_RATIO = Activity("prometheus_success_ratio", "probe", "metrics", PrometheusRatioOutput)

# Every declaration above, in the order written (discovery's order).
ACTIVITIES: tuple[Activity[Any], ...] = tuple(v for v in list(globals().values()) if isinstance(v, Activity))

# The activity modules, in the order discovery lists them (and docs/activities.md has their sections).
MODULES: tuple[str, ...] = tuple(dict.fromkeys(a.module for a in ACTIVITIES))

# The action that removes the fault each block action puts in place (by name).
_PAIRS = ((BLOCK_APISERVER_EGRESS, UNBLOCK_APISERVER_EGRESS), (BLOCK_XDS_EGRESS, UNBLOCK_XDS_EGRESS))
UNBLOCK_OF: dict[str, str] = {block.name: unblock.name for block, unblock in _PAIRS}


def by_name(name: str) -> Activity[Any] | None:
    """The declared activity called ``name``, ``None`` for a name chaoscontour does not offer."""
    return next((a for a in ACTIVITIES if a.name == name), None)
