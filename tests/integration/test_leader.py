"""`lease_holder` and `kill_leader` against the real API server, with Leases shaped like Contour's and replicas
that run client-go's leader-election rules through the API (bench/contour_like.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client
from kubernetes.client.rest import ApiException

from bench.contour_like import Candidate, create_lease, create_pod, holder_identity, names, now
from chaoscontour.activities.leader import kill_leader, lease_holder

pytestmark = pytest.mark.usefixtures("kubeconfig_env")


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def coordination(api: client.ApiClient) -> client.CoordinationV1Api:
    return client.CoordinationV1Api(api)


@pytest.fixture
def candidates(api: client.ApiClient) -> Iterator[list[Candidate]]:
    """Replicas started by a test; stopped after it, and their errors surfaced."""
    started: list[Candidate] = []
    yield started
    for candidate in started:
        candidate.stop()
    errors = [error for candidate in started for error in candidate.errors]
    assert not errors, f"a simulated replica failed: {errors}"


def start_replicas(api: client.ApiClient, namespace: str, pods: list[str], into: list[Candidate], **kw: Any) -> None:
    """Start one Candidate per pod, the first one alone until it holds the Lease (it is the leader)."""
    for pod in pods:
        candidate = Candidate(api, namespace, pod, **kw)
        candidate.start()
        into.append(candidate)
        if len(into) == 1:
            assert candidate.acquired.wait(10), "the first replica never acquired the Lease"


def test_lease_holder_reads_who_holds_a_contour_lease(
    core: client.CoreV1Api, coordination: client.CoordinationV1Api, namespace: str
) -> None:
    create_pod(core, namespace, "contour-6d4f7b9c8-x2k4p")
    holder = holder_identity("contour-6d4f7b9c8-x2k4p")
    create_lease(coordination, namespace, holder, renewed=now() - timedelta(seconds=1), transitions=3)

    summary = lease_holder(namespace=namespace)

    assert summary["holder_identity"] == holder
    assert summary["pod_name"] == "contour-6d4f7b9c8-x2k4p"
    assert summary["held"] is True
    assert summary["lease_duration_s"] == 15
    assert summary["lease_transitions"] == 3
    assert 0.5 < summary["seconds_since_renewal"] < 10


def test_lease_holder_says_a_lease_not_renewed_within_its_duration_is_not_held(
    coordination: client.CoordinationV1Api, namespace: str
) -> None:
    create_lease(coordination, namespace, holder_identity("contour-0"), renewed=now() - timedelta(seconds=60))
    summary = lease_holder(namespace=namespace)
    assert summary["held"] is False
    assert summary["seconds_since_renewal"] >= 59  # the Date header has whole seconds


def test_lease_holder_names_a_missing_lease(namespace: str) -> None:
    with pytest.raises(ActivityFailed, match=f"Lease {namespace}/leader-elect not found"):
        lease_holder(namespace=namespace)


def test_lease_holder_waits_for_a_replica_to_take_an_expired_lease(
    api: client.ApiClient,
    core: client.CoreV1Api,
    coordination: client.CoordinationV1Api,
    namespace: str,
    candidates: list[Candidate],
) -> None:
    # After an outage the Lease is there but stale (its holder died); a replica back from CrashLoopBackOff takes it.
    create_lease(coordination, namespace, holder_identity("contour-old"), renewed=now() - timedelta(seconds=60))
    create_pod(core, namespace, "contour-a")
    late = Candidate(api, namespace, "contour-a")
    candidates.append(late)
    threading_timer = threading.Timer(1.0, late.start)
    threading_timer.start()
    summary = lease_holder(namespace=namespace, wait_for_holder_s=20)
    threading_timer.join()
    assert summary["held"] is True
    assert summary["pod_name"] == "contour-a"


def test_lease_holder_does_not_spend_its_wait_on_a_missing_lease(namespace: str) -> None:
    """A typo in the name or namespace cannot heal: it fails at once with its cause, not after the whole wait."""
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match=r"Lease .*/leader-elect-typo not found"):
        lease_holder(namespace=namespace, lease_name="leader-elect-typo", wait_for_holder_s=60)
    assert time.monotonic() - started < 10


def test_lease_holder_judges_the_lease_on_the_api_servers_clock(
    coordination: client.CoordinationV1Api, namespace: str
) -> None:
    create_lease(coordination, namespace, holder_identity("contour-0"), renewed=now() - timedelta(seconds=2))
    summary = lease_holder(namespace=namespace)
    assert summary["judged_by"] == "api-server-clock"
    assert summary["held"] is True
    # runner and API server share this machine's clock: the offset is the Date header's rounding only
    assert abs(summary["clock_offset_s"]) <= 1.0


def test_kill_leader_deletes_the_leader_pod_and_measures_the_takeover(
    api: client.ApiClient, core: client.CoreV1Api, namespace: str, candidates: list[Candidate]
) -> None:
    for pod in ("contour-a", "contour-b"):
        create_pod(core, namespace, pod)
    # A short lease keeps the test fast; the takeover still waits for the deleted leader's lease to run out.
    start_replicas(api, namespace, ["contour-a", "contour-b"], candidates, duration_s=2)
    leader = candidates[0]

    result = kill_leader(namespace=namespace, timeout_s=30)

    assert result["old_pod"] == "contour-a"
    assert result["old_holder"] == leader.identity
    assert result["new_pod"] == "contour-b"
    assert result["new_holder"] == candidates[1].identity
    assert 0 < result["failover_s"] <= 2 + 2, "takeover comes within a lease duration plus polling"
    assert result["lease_transitions"] == 1
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod("contour-a", namespace)
    assert gone.value.status == 404
    assert names(core.list_namespaced_pod(namespace)) == ["contour-b"]
    print(f"\nkill_leader: failover {result['failover_s']:.2f} s with a 2 s lease")


def test_kill_leader_fails_when_a_takeover_exceeds_max_failover_s(
    api: client.ApiClient, core: client.CoreV1Api, namespace: str, candidates: list[Candidate]
) -> None:
    for pod in ("contour-a", "contour-b"):
        create_pod(core, namespace, pod)
    start_replicas(api, namespace, ["contour-a", "contour-b"], candidates, duration_s=2)
    with pytest.raises(ActivityFailed, match=r"failover took .* more than max_failover_s=0.1"):
        kill_leader(namespace=namespace, timeout_s=30, max_failover_s=0.1)


def test_kill_leader_fails_when_no_other_replica_takes_over(
    api: client.ApiClient, core: client.CoreV1Api, namespace: str, candidates: list[Candidate]
) -> None:
    create_pod(core, namespace, "contour-a")
    start_replicas(api, namespace, ["contour-a"], candidates, duration_s=2)
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match="no other Contour replica took over"):
        kill_leader(namespace=namespace, timeout_s=3)
    assert 3 <= time.monotonic() - started < 10


def test_kill_leader_refuses_a_holder_outside_the_contour_selector(
    core: client.CoreV1Api, coordination: client.CoordinationV1Api, namespace: str
) -> None:
    create_pod(core, namespace, "contour-a")
    create_pod(core, namespace, "billing-api-0", labels={"app": "billing"})
    holder = holder_identity("billing-api-0")
    create_lease(coordination, namespace, holder)

    with pytest.raises(ActivityFailed, match=r"refusing to delete pod .*billing-api-0.*nothing was deleted"):
        kill_leader(namespace=namespace, timeout_s=5)

    assert names(core.list_namespaced_pod(namespace)) == ["billing-api-0", "contour-a"]
    lease: Any = coordination.read_namespaced_lease("leader-elect", namespace)
    assert lease.spec.holder_identity == holder


def test_kill_leader_refuses_a_stale_lease_whose_pod_is_gone(
    core: client.CoreV1Api, coordination: client.CoordinationV1Api, namespace: str
) -> None:
    create_pod(core, namespace, "contour-b")
    create_lease(coordination, namespace, holder_identity("contour-a"), renewed=now() - timedelta(minutes=5))
    with pytest.raises(ActivityFailed, match="does not exist: the Lease is stale"):
        kill_leader(namespace=namespace, timeout_s=5)
    assert names(core.list_namespaced_pod(namespace)) == ["contour-b"]


def test_kill_leader_refuses_a_lease_not_written_by_contour(
    core: client.CoreV1Api, coordination: client.CoordinationV1Api, namespace: str
) -> None:
    create_pod(core, namespace, "contour-a")
    create_lease(coordination, namespace, "contour-a")  # no `_<uuid>`: not controller-runtime's identity
    with pytest.raises(ActivityFailed, match="not '<pod-name>_<uuid>'"):
        kill_leader(namespace=namespace, timeout_s=5)
    assert names(core.list_namespaced_pod(namespace)) == ["contour-a"]
