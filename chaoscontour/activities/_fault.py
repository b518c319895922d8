"""The fault framework: the life of every fault of ours, from a small declaration.

Each fault is a NetworkPolicy owned by a pod-less expiry Job (Kubernetes' own controllers end it at the Job's
deadline), kept alive by this process's dead-man heartbeat, and removed per run by its labels. A fault module
declares a :class:`FaultSpec` (its kind, how its objects are named, what it forgets when removed) and a
:class:`Fault` (its target discovery and preflight refusals, the policies that would defeat it, its policy, its
evidence); :func:`block` drives every fault through one lifecycle: refusing a run id in use and a defeated fault,
creating the Job (and refusing a suspended one), starting the heartbeat, creating the owned policy or undoing the
Job, verifying with removal on failure or interruption. :func:`unblock` is the whole of every unblock activity,
:func:`window_state` the opening and :meth:`WindowState.result` the end of every end-of-window probe.
"""

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from chaoslib.exceptions import ActivityFailed
from chaoslib.types import Secrets
from logzero import logger

from chaoscontour.activities._common import process_run_id
from chaoscontour.activities._expiry import (
    ExpiryJob,
    create_expiry_job,
    create_owned_policy,
    job_finished,
    remove_objects,
    unblock_result,
)
from chaoscontour.activities._preflight import refuse_defeated, refuse_run_in_use
from chaoscontour.domain.clock import parse_api_time
from chaoscontour.domain.inputs import InvalidInput, parse_bool, parse_seconds, require_namespace, require_run_id
from chaoscontour.domain.policy import EXPIRES_AT_ANNOTATION, build_expiry_job, fault_labels, fault_selector
from chaoscontour.edges import heartbeat
from chaoscontour.edges.kube import Kube, kube, read_if_present

__all__ = [
    "MAX_FAULT_S",
    "Fault",
    "FaultInputs",
    "FaultSpec",
    "Injected",
    "WindowState",
    "block",
    "engage",
    "inject",
    "parse_fault_inputs",
    "read_policy",
    "remove",
    "unblock",
    "window_state",
]

# A fault longer than a few hours is a typo, not an experiment.
MAX_FAULT_S = 4 * 3600.0


def _nothing(namespace: str, run_id: str) -> None:
    """The default ``FaultSpec.forget``: a fault that keeps no in-process evidence."""


@dataclass(frozen=True)
class FaultSpec:
    """How one fault's objects are known to the lifecycle: its kind (``chaoscontour/fault=<kind>`` on every object,
    and so its label selectors; its activities are ``block_<kind>``, ``unblock_<kind>`` and ``<kind>_fault`` with
    ``_`` for ``-``), how its policy and expiry Job are named per run, and the in-process evidence to forget when a
    run's objects are removed."""

    kind: str
    policy_name: Callable[[str], str]
    job_name: Callable[[str], str]
    forget: Callable[[str, str], None] = field(default=_nothing)

    @property
    def activity(self) -> str:
        return self.kind.replace("-", "_")

    @property
    def block(self) -> str:
        return f"block_{self.activity}"

    @property
    def unblock(self) -> str:
        return f"unblock_{self.activity}"

    def selector(self, run_id: str) -> str:
        """The label selector of one run's objects (``""``: every run's)."""
        return fault_selector(self.kind, run_id)

    def build_job(self, run_id: str, **timing: Any) -> dict[str, Any]:
        """The run's expiry Job (``timing``: ``namespace``, ``duration_s``, ``now``, ``deadline_s``), under this
        fault's name and labels."""
        return build_expiry_job(
            run_id=run_id, name=self.job_name(run_id), labels=fault_labels(self.kind, run_id), **timing
        )

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
) -> Injected:
    """Create the expiry Job (with its heartbeat), then the policy ``build_policy(namespace=, run_id=, expires_at=,
    owner=)`` owned by it."""
    now = datetime.now(UTC)
    job = create_expiry_job(
        k,
        namespace=namespace,
        body=spec.build_job(
            inputs.run_id,
            namespace=namespace,
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


@dataclass
class Fault(ABC):
    """One fault's declaration, made by its block activity from the parsed arguments (``namespace``: where its
    policy goes): finding its target and its preflight refusals, the policies that would defeat it, its policy, its
    evidence. :func:`block` drives it, as a Chaos Mesh controller drives a chaos kind's ``Apply``; :func:`remove`
    is its ``Recover``."""

    spec: ClassVar[FaultSpec]
    # What a defeating policy allows, for the refusal: "another NetworkPolicy already <allows>".
    allows: ClassVar[str]
    namespace: str
    inputs: FaultInputs

    @abstractmethod
    def discover(self, k: Kube) -> list[dict[str, Any]]:
        """Find the target, refusing (creating nothing) what could not work; return the pods the policy selects."""

    @abstractmethod
    def defeating(self, k: Kube) -> list[str]:
        """Why other policies would defeat the fault, one reason each (read once the run id is known free)."""

    @abstractmethod
    def policy(self, *, namespace: str, run_id: str, expires_at: datetime, owner: Mapping[str, Any]) -> dict[str, Any]:
        """The fault's NetworkPolicy, owned by ``owner`` (the expiry Job)."""

    @abstractmethod
    def describe(self, injected: "Injected", result: dict[str, Any]) -> str:
        """Add the fault's own keys to ``result``; say in one line what was put in place."""

    @abstractmethod
    def verify(self, k: Kube, injected: "Injected", result: dict[str, Any]) -> dict[str, Any] | None:
        """What follows the creation, ending with the verification (``None`` when not verifying)."""

    @abstractmethod
    def refusal(self, verification: dict[str, Any]) -> str:
        """Why the block fails when ``verification`` did not confirm the fault (the policy is removed by then)."""

    @abstractmethod
    def confirmed(self, verification: dict[str, Any]) -> None:
        """Keep, in this process, what the end-of-window evidence will compare against."""


def block(fault: Fault, secrets: Secrets) -> dict[str, Any]:
    """The whole of a block activity once its arguments are parsed: discover and refuse, refuse a run id in use and
    a defeated fault, inject, describe, verify (removing the fault when that fails or is interrupted), finish."""
    spec, namespace, inputs = fault.spec, fault.namespace, fault.inputs
    k = kube(secrets)
    selected = fault.discover(k)
    refuse_run_in_use(k, namespace, spec.selector(inputs.run_id), spec.block, inputs.run_id)
    refuse_defeated(spec.block, fault.defeating(k), inputs.force, fault.allows)
    injected = inject(k, spec, namespace, inputs, fault.policy)
    result = injected.result(namespace, inputs, selected)
    logger.info(f"{spec.block}: {fault.describe(injected, result)}")
    verification = engage(k, spec, namespace, inputs.run_id, lambda: fault.verify(k, injected, result), fault.refusal)
    if verification is not None:
        result["verification"] = verification
        fault.confirmed(verification)
    return injected.finish(result)


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

    spec: FaultSpec
    namespace: str
    run_id: str
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

    def result(self, reasons: list[str], uncovered: list[str], **evidence: Any) -> dict[str, Any]:
        """What an end-of-window probe returns (``held`` only without ``reasons``, each logged as an error), with
        the fault's own ``evidence``; it never raises for a fault that did not hold: the journal keeps why."""
        for reason in reasons:
            logger.error(f"{self.spec.activity}_fault: {reason}")
        policy = f"{self.namespace}/{self.spec.policy_name(self.run_id)}" if self.policy is not None else None
        return {
            "held": not reasons,
            "reasons": reasons,
            "run_id": self.run_id,
            "policy": policy,
            "uncovered_addresses": uncovered,
            **evidence,
            "expires_at": self.expires_at,
            "dead_man_switch": self.beat.summary() if self.beat is not None else None,
        }


def read_policy(k: Kube, spec: FaultSpec, namespace: str, run_id: str) -> dict[str, Any] | None:
    """The run's NetworkPolicy of this fault, or ``None`` once it is gone."""
    name = spec.policy_name(run_id)
    return read_if_present(
        f"read NetworkPolicy {namespace}/{name}", k.networking.read_namespaced_network_policy, name, namespace
    )


def window_state(spec: FaultSpec, namespace: Any, run_id: Any, secrets: Secrets) -> tuple[Kube, WindowState]:
    """The opening of an end-of-window probe: parse ``namespace`` and ``run_id`` (default: this process's), then
    read the run's policy, its expiry Job and its heartbeat."""
    require_namespace(namespace)
    run = require_run_id(run_id or process_run_id())
    k = kube(secrets)
    found = read_policy(k, spec, namespace, run)
    job_name = spec.job_name(run)
    job = read_if_present(f"read Job {namespace}/{job_name}", k.batch.read_namespaced_job, job_name, namespace)
    annotations = ((job or {}).get("metadata") or {}).get("annotations") or {}
    return k, WindowState(
        spec=spec,
        namespace=namespace,
        run_id=run,
        policy=found,
        finished=job_finished(job),
        beat=heartbeat.running(namespace, spec.key(run)),
        expires_at=annotations.get(EXPIRES_AT_ANNOTATION),
    )
