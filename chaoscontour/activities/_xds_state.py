"""What the xDS fault's activities read from Envoy: its xDS state before the fault, confirming the fault through it
and what it accepted since; and this process's block and heal times.

`chaos run` executes the block, the background timeline and the heal in one process, so the timeline learns when
the fault started and ended from here, without any state kept in the cluster.
"""

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities._common import Progress
from chaoscontour.activities.envoy import STATS_EXAMPLE, STATS_FILTER
from chaoscontour.domain.clock import format_utc
from chaoscontour.domain.envoy_stats import XdsState, parse_stats, xds_state
from chaoscontour.domain.inputs import InvalidInput, parse_http_url, parse_seconds, redact_url
from chaoscontour.edges import http, stop
from chaoscontour.edges.clock import poll_until
from chaoscontour.edges.run_state import RUN

__all__ = [
    "KEEPALIVE_BOUND_S",
    "EnvoyEvidence",
    "envoy_since_confirmed",
    "parse_evidence",
    "accepted_updates",
    "confirmed_updates",
    "failed_updates",
    "fault_events",
    "healed",
    "not_confirmed_message",
    "read_xds_state",
    "wait_until_established",
    "record_block",
    "record_confirmed",
    "record_heal",
    "wait_until_disconnected",
]

# Contour's bootstrap: 30 s idle + 3 keepalive probes 5 s apart (internal/envoy/v3/bootstrap.go, v1.33.6).
KEEPALIVE_BOUND_S = 45.0
POLL_S = 0.5
# How long a block waits for Envoy's xDS stream to be up before it refuses: Envoy retries a failed stream after a
# jittered back-off that grows to 30 s, and each attempt may take Contour's 5 s connect timeout.
ESTABLISH_WAIT_S = 40.0


def record_block(namespace: str, run_id: str, at: float) -> None:
    RUN.xds_events.pop((namespace, run_id), None)
    RUN.xds_events[(namespace, run_id)] = {"blocked_at": at, "healed_at": None, "updates_when_confirmed": None}


def record_confirmed(namespace: str, run_id: str, updates: int | None) -> None:
    """Envoy's accepted-update count when the fault was confirmed: any later update means something got through."""
    if (namespace, run_id) in RUN.xds_events:
        RUN.xds_events[(namespace, run_id)]["updates_when_confirmed"] = updates


def confirmed_updates(namespace: str, run_id: str) -> int | None:
    value = RUN.xds_events.get((namespace, run_id), {}).get("updates_when_confirmed")
    return None if value is None else int(value)


def record_heal(namespace: str, run_id: str, at: float) -> None:
    """Mark this run's fault (every run's in ``namespace`` when ``run_id`` is empty) healed, once."""
    for key, events in RUN.xds_events.items():
        if key[0] == namespace and (not run_id or key[1] == run_id) and events.get("healed_at") is None:
            events["healed_at"] = at


def healed(namespace: str, run_id: str, removed_a_policy: bool) -> dict[str, Any]:
    """``unblock_xds_egress``'s ``healed_at``: when the policy went (``None`` when there was none to remove), kept
    for the timeline."""
    if not removed_a_policy:
        return {"healed_at": None}
    at = time.time()
    record_heal(namespace, run_id, at)
    return {"healed_at": format_utc(at, "microseconds")}


def fault_events() -> dict[str, float | None]:
    """``blocked_at`` and ``healed_at`` of the latest xDS fault of this process (``{}`` when there was none)."""
    return dict(list(RUN.xds_events.values())[-1]) if RUN.xds_events else {}


def accepted_updates(state: XdsState) -> int | None:
    """CDS + LDS ``update_success``: how many configurations Envoy has accepted (``None`` without the counters)."""
    counts = [s.update_success for s in (state.cds, state.lds) if s is not None and s.update_success is not None]
    return sum(counts) if counts else None


def failed_updates(state: XdsState) -> int | None:
    """CDS + LDS ``update_failure``: fetches that failed on a network error (a stream that died or never came up)."""
    counts = [s.update_failure for s in (state.cds, state.lds) if s is not None and s.update_failure is not None]
    return sum(counts) if counts else None


def read_xds_state(url: str, timeout_s: float) -> XdsState:
    """Envoy's xDS state from its ``/stats``; raises ``http.RequestFailed`` (no answer) or ``ActivityFailed``
    (an answer without Envoy's connected-state gauges, so the state cannot be known)."""
    answer = http.get(url, timeout_s=timeout_s, params={"filter": STATS_FILTER})
    if answer.status != 200:
        raise ActivityFailed(f"{redact_url(url)} answered {answer.status}; point stats_url at Envoy's /stats")
    state = xds_state(parse_stats(answer.text))
    if state.connected is None:
        raise ActivityFailed(
            f"{redact_url(url)} has no control-plane connected_state gauge: is it the /stats of an Envoy "
            "configured by Contour over gRPC?"
        )
    return state


def wait_until_established(url: str, timeout_s: float, what: str) -> tuple[XdsState, float]:
    """Read Envoy's xDS state every ``POLL_S`` until its stream is established (see ``XdsState.established``) or
    ``timeout_s`` passes; returns the last state read and the seconds waited. A connected-state gauge reads 1 while
    Envoy still dials (after Contour's pods were replaced, towards a pod that is gone), and a fault whose evidence is
    the stream dying must not start then: the dial's own timeout would look like the fault. Raises
    ``http.RequestFailed`` when the stats cannot be read at first."""
    started = time.monotonic()
    state = read_xds_state(url, 2.0)
    progress = Progress()
    first = True

    def established() -> bool:
        nonlocal state, first
        if not first:
            with contextlib.suppress(http.RequestFailed):
                state = read_xds_state(url, 2.0)
        first = False
        return bool(state.established)

    def report(waited: float) -> None:
        progress(
            f"{what}: waiting for Envoy's xDS stream to Contour ({waited:.0f}/{timeout_s:g} s): "
            + state.not_established_text()
        )

    poll_until(established, timeout_s, POLL_S, started=started, on_wait=report, check_after_stop=True)
    return state, round(time.monotonic() - started, 1)


def wait_until_disconnected(
    url: str, timeout_s: float, blocked_at: float, failures_before: int | None
) -> dict[str, Any]:
    """Read Envoy's xDS stats every ``POLL_S`` until they show the stream gone, or ``timeout_s`` passes.

    Gone means a ``connected_state`` gauge at 0, or more failed updates (CDS + LDS ``update_failure``, counted on
    every stream that dies or cannot be established) than ``failures_before``. The counter is what cannot be missed:
    once Envoy retries, its gauges read 0 only for the back-off between attempts (about 0.5 s on the sandbox, where
    a 0.5 s poll once saw the first 0 five seconds late).
    """
    progress = Progress()
    failures = 0
    last: bool | None = None

    def disconnected() -> dict[str, Any] | None:
        nonlocal failures, last
        try:
            state = read_xds_state(url, min(2.0, timeout_s))
            last = state.connected
            failed = failed_updates(state)
            more_failures = failed is not None and failures_before is not None and failed > failures_before
            if state.connected is False or more_failures:
                seen = (
                    f"Envoy's connected_state gauges went to 0 ({state.connected_states})"
                    if state.connected is False
                    else f"Envoy counted {(failed or 0) - (failures_before or 0)} failed CDS/LDS update(s) "
                    "(update_failure)"
                )
                return {
                    "confirmed": True,
                    "evidence": "envoy-reported-xds-disconnected",
                    "evidence_text": f"{seen} {time.monotonic() - blocked_at:.1f} s after the policy was created",
                    "confirmed_after_s": round(time.monotonic() - blocked_at, 1),
                    "accepted_updates": accepted_updates(state),
                    "read_failures": failures,
                }
        except (http.RequestFailed, ActivityFailed):
            failures += 1
        return None

    def report(elapsed: float) -> None:
        progress(f"block_xds_egress: waiting for Envoy to notice the dead stream: {elapsed:.0f}/{timeout_s:g} s")

    polled = poll_until(disconnected, timeout_s, POLL_S, started=blocked_at, on_wait=report, check_after_stop=True)
    if polled.value:
        return polled.value
    if polled.stopped:
        return {"confirmed": False, "evidence": "interrupted", "why": stop.reason(), "read_failures": failures}
    return {
        "confirmed": False,
        "evidence": "envoy-still-connected" if last else "xds-state-unknown",
        "checked_for_s": round(polled.elapsed_s, 1),
        "read_failures": failures,
    }


@dataclass
class EnvoyEvidence:
    """How a block proves the xDS fault from Envoy's stats at ``url``: its stream to Contour up before the fault
    (waited for up to ``connect_wait_s``), then seen gone within ``timeout_s`` of the policy's creation."""

    url: str
    timeout_s: float
    connect_wait_s: float
    before: XdsState | None = None
    waited_s: float = 0.0

    def stream_up(self) -> None:
        """Wait for Envoy's stream to be up; refuse, creating nothing, when the stats cannot be read or the stream
        is not up: the stats could not show the fault."""
        try:
            self.before, self.waited_s = wait_until_established(self.url, self.connect_wait_s, "block_xds_egress")
        except http.RequestFailed as failed:
            raise ActivityFailed(
                f"Envoy's stats endpoint {redact_url(self.url)} could not be read ({failed.kind}), so the fault could "
                "not be verified; nothing was created. Check stats_url, or set verify=false"
            ) from failed
        if not self.before.established:
            raise ActivityFailed(
                f"Envoy's xDS stream to Contour was not up before the fault ({self.before.not_established_text()}; "
                f"waited {self.waited_s:g} s), so its stats could not show the fault; nothing was created. Check "
                "that Contour is Ready and that Envoy reaches it"
            )

    def stream_before(self) -> dict[str, Any]:
        """The block's ``stream_before``: the stream as Envoy's stats showed it, and how long it took to be up."""
        return {**((self.before and self.before.stream_check()) or {}), "waited_s": self.waited_s}

    def stream_gone(self, blocked_at: float) -> dict[str, Any]:
        """The verification: wait until Envoy's stats show the stream gone (see :func:`wait_until_disconnected`)."""
        failures = failed_updates(self.before) if self.before is not None else None
        return wait_until_disconnected(self.url, self.timeout_s, blocked_at, failures)

    def refusal(self, verification: dict[str, Any]) -> str:
        return not_confirmed_message(verification, self.timeout_s)


def parse_evidence(stats_url: Any, verify_timeout_s: Any, connect_wait_s: Any, verify: bool) -> EnvoyEvidence:
    """The block's ``stats_url``, ``verify_timeout_s`` (longer than Contour's keepalive bound when verifying) and
    ``connect_wait_s``, strictly."""
    url = parse_http_url(stats_url, "stats_url", STATS_EXAMPLE)
    verify_timeout = parse_seconds(verify_timeout_s, "verify_timeout_s", maximum=3600)
    connect_wait = parse_seconds(connect_wait_s, "connect_wait_s", maximum=600, allow_zero=True)
    if verify and verify_timeout <= KEEPALIVE_BOUND_S:
        raise InvalidInput(
            f"verify_timeout_s ({verify_timeout:g}) must be longer than the {KEEPALIVE_BOUND_S:g} s after which "
            "Contour's bootstrap keepalive lets Envoy notice a dead stream"
        )
    return EnvoyEvidence(url, verify_timeout, connect_wait)


def envoy_since_confirmed(
    url: str, namespace: str, run_id: str, reasons: list[str]
) -> tuple[dict[str, int] | None, int | None]:
    """Envoy's ``connected_state`` gauges now, and how many configuration updates it accepted since the block of
    this run confirmed the fault (``None`` when either is unknown); adds to ``reasons`` why the fault leaked."""
    states: dict[str, int] | None = None
    since = None
    before = confirmed_updates(namespace, run_id)
    try:
        state = read_xds_state(url, 2.0)
        states = state.connected_states
        now_updates = accepted_updates(state)
        if before is not None and now_updates is not None:
            since = now_updates - before
    except (http.RequestFailed, ActivityFailed) as exc:
        reasons.append(f"Envoy's xDS state could not be read: {exc}")
    if since:
        reasons.append(
            f"Envoy accepted {since} configuration update(s) after the fault was confirmed: a stream to Contour "
            "worked during the fault, so the black hole leaks"
        )
    return states, since


def not_confirmed_message(check: dict[str, Any], timeout_s: float) -> str:
    if check["evidence"] == "interrupted":
        return f"the fault was not confirmed: the run was interrupted ({check.get('why')}). The policy was removed."
    if check["evidence"] == "xds-state-unknown":
        return (
            f"the fault was not confirmed: Envoy's stats could not be read for {timeout_s:g} s "
            f"({check['read_failures']} failed reads). The policy was removed."
        )
    return (
        f"the fault was not confirmed: Envoy still reported its xDS stream to Contour connected "
        f"{check['checked_for_s']:.0f} s after the policy was created, longer than the {KEEPALIVE_BOUND_S:g} s "
        "Contour's bootstrap keepalive allows an idle dead stream. The policy was removed. Either it did not take "
        "effect: the cluster's CNI does not enforce NetworkPolicy (flannel, kindnet without policies), or lets "
        "connections open before a policy live on (Calico, Antrea), or a policy we could not see allows the "
        "traffic; or Envoy had data in flight on the stream when it was cut: TCP sends keepalive probes only on an "
        "idle connection, so Envoy then waits for TCP's retransmission timeout (about 15 minutes with Linux's "
        "defaults), as when the block comes seconds after Contour's pods were replaced. Run it again once the "
        "stream has been quiet for a while."
    )
