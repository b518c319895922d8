"""The fault framework: the life of every fault of ours, from a small declaration.

Each fault is a NetworkPolicy owned by a pod-less expiry Job (Kubernetes' own controllers end it at the Job's
deadline), kept alive by this process's dead-man heartbeat, and removed per run by its labels. A fault module
declares a :class:`FaultSpec` (how its objects are named, labelled and built, what it forgets when removed) and
supplies its own target discovery, preflight refusals, policy and evidence; this module owns the rest, once:
refusing a run id in use, creating the Job (and refusing a suspended one), starting the heartbeat, creating the
owned policy or undoing the Job, verifying with removal on failure or interruption, the unblock with its report of
other runs, and reading what is left of a fault at the end of its window.
"""

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import process_run_id
from chaoscontour.activities._expiry import (
    ExpiryJob,
    create_expiry_job,
    create_owned_policy,
    job_finished,
    refuse_run_in_use,
    remove_objects,
    unblock_result,
)
from chaoscontour.domain.inputs import InvalidInput, parse_bool, parse_seconds, require_namespace, require_run_id
from chaoscontour.domain.lease import parse_api_time
from chaoscontour.domain.policy import EXPIRES_AT_ANNOTATION
from chaoscontour.domain.selectors import format_label_selector
from chaoscontour.edges import heartbeat
from chaoscontour.edges.kube import Kube, call, kube, list_pods, read_if_present, to_dict

__all__ = [
    "MAX_FAULT_S",
    "FaultInputs",
    "FaultSpec",
    "Injected",
    "WindowState",
    "engage",
    "inject",
    "parse_fault_inputs",
    "refuse_defeated",
    "refuse_in_use",
    "remove",
    "namespace_policies",
    "require_pods",
    "running_pods",
    "unblock",
    "window_state",
]

# A fault longer than a few hours is a typo, not an experiment.
MAX_FAULT_S = 4 * 3600.0


def _nothing(namespace: str, run_id: str) -> None:
    """The default ``FaultSpec.forget``: a fault that keeps no in-process evidence."""


@dataclass(frozen=True)
class FaultSpec:
    """What one fault declares for the lifecycle: the activities' names (for messages), how its objects are named
    and found per run (``selector("")`` finds every run's), how its expiry Job is built, and the in-process
    evidence to forget when a run's objects are removed."""

    kind: str
    block: str
    unblock: str
    selector: Callable[[str], str]
    policy_name: Callable[[str], str]
    job_name: Callable[[str], str]
    build_job: Callable[..., dict[str, Any]]
    forget: Callable[[str, str], None] = field(default=_nothing)

    def key(self, run_id: str) -> str:
        """The heartbeat key of a run of this fault (``""``: every run's)."""
        return heartbeat.key_of(self.kind, run_id)


@dataclass(frozen=True)
class FaultInputs:
    """The arguments every fault takes, parsed strictly."""

    duration_s: float
    run_id: str
    force: bool
    verify: bool
    dead_man_s: float


def parse_fault_inputs(
    duration_s: Any, run_id: Any, force: Any, verify: Any, dead_man_s: Any, maximum_s: float = MAX_FAULT_S
) -> FaultInputs:
    return FaultInputs(
        duration_s=parse_seconds(duration_s, "duration_s", minimum=1, maximum=maximum_s),
        run_id=require_run_id(run_id or process_run_id()),
        force=parse_bool(force, "force"),
        verify=parse_bool(verify, "verify"),
        dead_man_s=parse_seconds(dead_man_s, "dead_man_s", minimum=10, maximum=maximum_s, allow_zero=True),
    )


def refuse_in_use(k: Kube, spec: FaultSpec, namespace: str, run_id: str) -> None:
    """Refuse, before anything is created, a run id that already has this fault's objects in ``namespace``."""
    refuse_run_in_use(k, namespace, spec.selector(run_id), spec.block, run_id)


def refuse_defeated(spec: FaultSpec, reasons: list[str], force: bool, allows: str) -> None:
    """Refuse, before anything is created, a fault that other policies defeat (policies are additive): ``reasons``
    says which and how, ``allows`` what they allow; with ``force`` warn instead."""
    if reasons and not force:
        raise ActivityFailed(
            f"another NetworkPolicy already {allows}, and policies are additive, so the fault would do nothing: "
            + "; ".join(reasons)
            + ". Nothing was created; set force=true to create it anyway"
        )
    for reason in reasons:
        logger.warning(f"{spec.block}: force=true despite: {reason}")


def running_pods(k: Kube, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """The pods of ``labels`` that are running or about to: the ones a fault must select."""
    return [
        pod
        for pod in list_pods(k, namespace, format_label_selector(dict(labels)))
        if not pod["metadata"].get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


@dataclass(frozen=True)
class Injected:
    """A fault just put in place: its policy's name, its expiry Job, and when (wall clock and monotonic)."""

    name: str
    job: ExpiryJob
    expires_at: str
    created: datetime
    blocked_at: float

    def result(self, namespace: str, inputs: FaultInputs, selected: list[dict[str, Any]]) -> dict[str, Any]:
        """The output keys every block shares; the fault adds its own."""
        return {
            "name": self.name,
            "namespace": namespace,
            "run_id": inputs.run_id,
            "selected_pods": sorted(p["metadata"]["name"] for p in selected),
            "expires_at": self.expires_at,
            "expiry_job": self.job.name,
            "dead_man_s": inputs.dead_man_s,
            "verification": {"confirmed": None, "evidence": "not verified (verify=false)"},
        }

    def finish(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.job.beat is not None:
            result["dead_man_switch"] = self.job.beat.summary()
        return result


def inject(
    k: Kube,
    spec: FaultSpec,
    namespace: str,
    inputs: FaultInputs,
    build_policy: Callable[..., dict[str, Any]],
    **policy_args: Any,
) -> Injected:
    """Create the expiry Job (with its heartbeat), then the policy ``build_policy(namespace=, run_id=, expires_at=,
    owner=, **policy_args)`` owned by it."""
    now = datetime.now(UTC)
    job = create_expiry_job(
        k,
        namespace=namespace,
        body=spec.build_job(
            namespace=namespace,
            run_id=inputs.run_id,
            duration_s=inputs.duration_s,
            now=now,
            deadline_s=inputs.dead_man_s or None,
        ),
        duration_s=inputs.duration_s,
        dead_man_s=inputs.dead_man_s,
        heartbeat_key=spec.key(inputs.run_id),
        started=time.monotonic(),
    )
    expires_at = job.meta["annotations"][EXPIRES_AT_ANNOTATION]
    body = build_policy(
        namespace=namespace,
        run_id=inputs.run_id,
        expires_at=parse_api_time(expires_at) or now,
        owner=job.owner,
        **policy_args,
    )
    create_owned_policy(k, namespace, body, job, spec.key(inputs.run_id))
    return Injected(body["metadata"]["name"], job, expires_at, now, time.monotonic())


def engage(
    k: Kube,
    spec: FaultSpec,
    namespace: str,
    run_id: str,
    steps: Callable[[], dict[str, Any] | None],
    refusal: Callable[[dict[str, Any]], str],
) -> dict[str, Any] | None:
    """Run what follows the fault's creation: ``steps`` returns the verification (``None`` when not verifying).
    Remove the run's objects and fail (``refusal(verification)``) when it did not confirm the fault, and remove
    them too when ``steps`` raised or was interrupted."""
    try:
        verification = steps()
    except BaseException:
        remove(k, spec, namespace, run_id)
        raise
    if verification is None:
        return None
    if not verification["confirmed"]:
        remove(k, spec, namespace, run_id)
        raise ActivityFailed(refusal(verification))
    logger.info(f"{spec.block}: fault confirmed: {verification['evidence_text']}")
    return verification


def remove(k: Kube, spec: FaultSpec, namespace: str, run_id: str) -> dict[str, list[str]]:
    """Forget the run's evidence, stop its heartbeat and delete its policies and expiry Jobs (every run's when
    ``run_id`` is empty)."""
    spec.forget(namespace, run_id)
    return remove_objects(k, namespace, spec.selector(run_id), spec.key(run_id))


def unblock(
    spec: FaultSpec,
    namespace: Any,
    run_id: Any,
    all_runs: Any,
    secrets: Secrets,
    extra_keys: Callable[[str, str, bool], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The whole of an unblock activity: parse, remove, report. ``extra_keys(namespace, run, removed_a_policy)``
    adds the fault's own keys to the result."""
    require_namespace(namespace)
    every_run = parse_bool(all_runs, "all_runs")
    if every_run and run_id:
        raise InvalidInput("give either run_id or all_runs=true, not both")
    run = "" if every_run else require_run_id(run_id or process_run_id())
    k = kube(secrets)
    removed = remove(k, spec, namespace, run)
    extra = extra_keys(namespace, run, bool(removed["policies"])) if extra_keys else {}
    return {**unblock_result(k, spec.unblock, namespace, run, spec.selector(""), removed), **extra}


@dataclass(frozen=True)
class WindowState:
    """What is left of a run's fault at the end of its window, as the cluster and the heartbeat tell it."""

    policy: dict[str, Any] | None
    finished: str
    beat: heartbeat.Heartbeat | None
    expires_at: str | None

    def reasons(self) -> list[str]:
        """Why the fault did not hold, as far as its objects tell."""
        reasons = []
        if self.policy is None:
            reasons.append("the NetworkPolicy is gone: the fault ended before the window did")
        if self.finished:
            reasons.append(f"the expiry Job has finished ({self.finished}): the fault is being removed")
        if self.beat is not None and self.beat.expires_in_s() <= 0:
            reasons.append("the fault's deadline has passed: Kubernetes is removing it")
        return reasons


def window_state(k: Kube, spec: FaultSpec, namespace: str, run_id: str) -> WindowState:
    name = spec.policy_name(run_id)
    found = read_if_present(
        f"read NetworkPolicy {namespace}/{name}", k.networking.read_namespaced_network_policy, name, namespace
    )
    job_name = spec.job_name(run_id)
    job = read_if_present(f"read Job {namespace}/{job_name}", k.batch.read_namespaced_job, job_name, namespace)
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    return WindowState(
        policy=found,
        finished=job_finished(job),
        beat=heartbeat.running(namespace, spec.key(run_id)),
        expires_at=annotations.get(EXPIRES_AT_ANNOTATION),
    )


def require_pods(k: Kube, namespace: str, labels: Mapping[str, str], hint: str) -> list[dict[str, Any]]:
    """The running pods of ``labels``; none is a refusal, before anything is created, ending with ``hint``."""
    pods = running_pods(k, namespace, labels)
    if not pods:
        raise ActivityFailed(
            f"no running pod in namespace {namespace!r} matches {format_label_selector(dict(labels))!r}; nothing "
            f"was created. {hint}"
        )
    return pods


def namespace_policies(k: Kube, namespace: str) -> list[dict[str, Any]]:
    """Every NetworkPolicy of ``namespace``: what could defeat a fault there."""
    found = call(f"list NetworkPolicies in {namespace}", k.networking.list_namespaced_network_policy, namespace)
    return list(to_dict(k, found).get("items") or [])
