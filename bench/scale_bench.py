#!/usr/bin/env python3
"""Do the Kubernetes probes stay cheap in a big cluster? A benchmark against the real API server, not a test.

Starts its own control plane (:class:`chaoscontour_sandbox.controlplane.ControlPlane`), writes a Contour-like
installation into namespace ``projectcontour`` (three ``app=contour`` pods with kubelet-like statuses and a
``leader-elect`` Lease), and measures each probe on that empty cluster: median latency over ``--runs`` calls and
the number of API requests per call (counted by wrapping the kubernetes client's ``RESTClientObject.request``,
through which every request of every ``ApiClient`` goes). Then it adds ``--pods`` unrelated pods (by default 1,000
of them in ``projectcontour`` itself with other labels, the rest spread over other namespaces), measures again, and
prints the ratios. The probes select by label and read by name, so the request counts must not move at all and
the latencies should stay within 1.2x (the issue's bound); a full list would show up here at once.

``block_apiserver_egress`` + ``unblock_apiserver_egress`` (``verify=false``) are measured too: they are actions,
but they list pods and policies and read the ``default/kubernetes`` endpoints on every run.

Run from the repository root (about 2 minutes on 2 cores, most of it creating the pods):

    python bench/scale_bench.py [--pods 5000] [--same-namespace 1000] [--runs 30]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import logzero  # noqa: E402
from kubernetes import client  # noqa: E402
from kubernetes.client import rest  # noqa: E402

from bench.contour_like import create_lease, create_pod, holder_identity, now  # noqa: E402
from chaoscontour.activities.leader import lease_holder  # noqa: E402
from chaoscontour.activities.network import block_apiserver_egress, unblock_apiserver_egress  # noqa: E402
from chaoscontour.activities.pods import contour_restart_count  # noqa: E402
from chaoscontour_sandbox.controlplane import ControlPlane  # noqa: E402

NAMESPACE = "projectcontour"
BOUND = 1.2


class RequestCounter:
    """Counts the HTTP requests of every kubernetes ``ApiClient`` in this process while active."""

    def __init__(self) -> None:
        self.count = 0

    @contextmanager
    def active(self) -> Iterator[None]:
        original = rest.RESTClientObject.request
        counter = self

        def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
            counter.count += 1
            return original(self, *args, **kwargs)

        rest.RESTClientObject.request = counting  # type: ignore[method-assign]
        try:
            yield
        finally:
            rest.RESTClientObject.request = original  # type: ignore[method-assign]


def block_and_unblock() -> None:
    block_apiserver_egress(namespace=NAMESPACE, run_id="bench", verify=False)
    unblock_apiserver_egress(namespace=NAMESPACE, run_id="bench")


PROBES: dict[str, Callable[[], Any]] = {
    "lease_holder": lambda: lease_holder(namespace=NAMESPACE),
    "contour_restart_count": lambda: contour_restart_count(namespace=NAMESPACE, within_last_s=600),
    "block+unblock (action)": block_and_unblock,
}
# What a probe that listed every pod would cost: proof that the benchmark can see the difference. Not judged.
CONTROL = "control: list all pods"


def measure(runs: int, api: client.ApiClient) -> dict[str, tuple[float, float]]:
    """Per probe: (median latency in ms, API requests per call)."""
    figures = {}
    core = client.CoreV1Api(api)
    for name, probe in {**PROBES, CONTROL: core.list_pod_for_all_namespaces}.items():
        for _ in range(3):  # warm-up: connection set-up, the API server's caches
            probe()
        counter = RequestCounter()
        latencies = []
        with counter.active():
            for _ in range(runs):
                started = time.perf_counter()
                probe()
                latencies.append((time.perf_counter() - started) * 1000)
        figures[name] = (statistics.median(latencies), counter.count / runs)
    return figures


def contour_like_installation(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ensure_namespace(core, NAMESPACE)
    for index, pod in enumerate(("contour-a", "contour-b", "contour-c")):
        create_pod(core, NAMESPACE, pod, restarts=index, last_terminated_at=now() if index else None)
    create_lease(client.CoordinationV1Api(api), NAMESPACE, holder_identity("contour-a"))


def ensure_namespace(core: client.CoreV1Api, name: str) -> None:
    namespace: Any = {"metadata": {"name": name}}
    account: Any = {"metadata": {"name": "default"}}
    core.create_namespace(namespace)
    # No kube-controller-manager here: the `default` ServiceAccount that pod admission needs is ours to create.
    core.create_namespaced_service_account(name, account)


def add_unrelated_pods(api: client.ApiClient, total: int, same_namespace: int) -> float:
    core = client.CoreV1Api(api)
    others = [f"load-{i}" for i in range(4)]
    for name in others:
        ensure_namespace(core, name)
    placements = [NAMESPACE] * min(same_namespace, total)
    placements += [others[i % len(others)] for i in range(total - len(placements))]

    def create(index_and_namespace: tuple[int, str]) -> None:
        index, namespace = index_and_namespace
        body: Any = {
            "metadata": {
                "name": f"web-{index:05d}",
                "labels": {"app": "web", "tier": "frontend", "team": f"team-{index % 17}"},
            },
            "spec": {"containers": [{"name": "web", "image": "web:1.0", "ports": [{"containerPort": 8080}]}]},
        }
        core.create_namespaced_pod(namespace, body)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for done, _ in enumerate(pool.map(create, enumerate(placements)), start=1):
            if done % 1000 == 0:
                print(f"  {done}/{total} pods created, {time.monotonic() - started:.0f} s", flush=True)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=5000, help="unrelated pods to add (default 5000)")
    parser.add_argument(
        "--same-namespace", type=int, default=1000, help="how many of them go into projectcontour (default 1000)"
    )
    parser.add_argument("--runs", type=int, default=30, help="calls per probe and cluster size (default 30)")
    args = parser.parse_args(argv)
    logzero.loglevel(logging.WARNING)

    with ControlPlane(progress=lambda message: print(message, flush=True)) as plane:
        os.environ["KUBECONFIG"] = str(plane.kubeconfig)
        with plane.api_client() as api:
            contour_like_installation(api)
            print(f"measuring {len(PROBES)} probes on the empty cluster, {args.runs} calls each", flush=True)
            empty = measure(args.runs, api)
            print(f"adding {args.pods} unrelated pods ({args.same_namespace} of them in {NAMESPACE})", flush=True)
            took = add_unrelated_pods(api, args.pods, args.same_namespace)
            print(f"  done in {took:.0f} s", flush=True)
            loaded = measure(args.runs, api)

    header = f"{'probe':<24} {'empty ms':>9} {'loaded ms':>10} {'ratio':>6}   {'requests':>8} {'loaded':>7}"
    print(f"\n{header} {'ratio':>6}")
    worst = 0.0
    for name in [*PROBES, CONTROL]:
        (ms0, req0), (ms1, req1) = empty[name], loaded[name]
        latency_ratio, request_ratio = ms1 / ms0, req1 / req0
        if name != CONTROL:
            worst = max(worst, latency_ratio, request_ratio)
        row = f"{name:<24} {ms0:>9.1f} {ms1:>10.1f} {latency_ratio:>6.2f}   {req0:>8.1f} {req1:>7.1f}"
        print(f"{row} {request_ratio:>6.2f}")
    verdict = "within" if worst <= BOUND else "OVER"
    print(f"\nworst probe ratio {worst:.2f}: {verdict} the {BOUND}x bound ", end="")
    print(f"({args.pods} unrelated pods, medians of {args.runs} calls)")
    return 0 if worst <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
