"""The stop condition's bound on the real kube-apiserver: from the safeguard probe's failing result to the fault's
NetworkPolicy deleted, at most 2 s plus the control's check interval (its ``frequency``).

The real ``chaos run`` CLI, as a subprocess with ``--rollback-strategy always``, plays an experiment whose safeguard
is the real ``envoy_availability`` sampling a local HTTP server for 1 s every ``check_s``; the method is the real
``block_apiserver_egress`` (``verify: false``: no CNI runs here, the API server only stores the policy) on two
Contour-labelled pods, then the real ``wait`` for 60 s; the rollback is the real ``unblock_apiserver_egress``. The
test watches the namespace's NetworkPolicies through the API, makes the server answer 503 two seconds after the
policy appears, and reads the failing result's time from the journal (``safeguards.run.end``; chaostoolkit-addons
0.12 records it, so the test needs it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch

from bench.contour_like import create_pod
from chaoscontour.tools.journal import epoch_of, load_journal
from chaoscontour.tools.verdict import judge
from chaoscontour_sandbox.controlplane import ControlPlane
from tests.support.chaosrun import CHAOS
from tests.support.fake_envoy import FakeEnvoy

SAFEGUARD = "stop-when-availability-drops"
# The bound the docs state: the rollback starts once the main thread's step is cut short and the background
# activities have stopped (about a second for ours), then one DELETE; 2 s covers that on 2 busy cores.
BOUND_AFTER_CHECK_S = 2.0


def _experiment(url: str, namespace: str, run_id: str, check_s: float) -> dict[str, Any]:
    network = "chaoscontour.activities.network"
    return {
        "version": "1.0.0",
        "title": "Integration: a stop condition removes the API-server fault",
        "description": "see tests/integration/test_stop_condition_bound.py",
        "runtime": {"rollbacks": {"strategy": "always"}},
        "controls": [
            {
                "name": "safeguard",
                "provider": {
                    "type": "python",
                    "module": "chaosaddons.controls.safeguards",
                    "arguments": {
                        "probes": [
                            {
                                "type": "probe",
                                "name": SAFEGUARD,
                                "frequency": check_s,
                                "tolerance": {"type": "jsonpath", "path": "$.meets_min_availability", "expect": True},
                                "provider": {
                                    "type": "python",
                                    "module": "chaoscontour.activities.envoy",
                                    "func": "envoy_availability",
                                    "arguments": {
                                        "url": url,
                                        "duration_s": "1",
                                        "rate_per_s": "50",
                                        "timeout_s": "1",
                                        "min_availability": "0.99",
                                    },
                                },
                            }
                        ]
                    },
                },
            }
        ],
        "steady-state-hypothesis": {
            "title": "the route serves",
            "probes": [
                {
                    "type": "probe",
                    "name": "serving",
                    "tolerance": True,
                    "provider": {
                        "type": "python",
                        "module": "chaoscontour.activities.envoy",
                        "func": "envoy_serving",
                        "arguments": {"url": url, "timeout_s": 2},
                    },
                }
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "block-apiserver-egress",
                "provider": {
                    "type": "python",
                    "module": network,
                    "func": "block_apiserver_egress",
                    "arguments": {"namespace": namespace, "run_id": run_id, "duration_s": 300, "verify": "false"},
                },
            },
            {
                "type": "action",
                "name": "hold-the-fault-window",
                "provider": {
                    "type": "python",
                    "module": "chaoscontour.activities.timing",
                    "func": "wait",
                    "arguments": {"duration_s": 60},
                },
            },
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "unblock-apiserver-egress",
                "provider": {
                    "type": "python",
                    "module": network,
                    "func": "unblock_apiserver_egress",
                    "arguments": {"namespace": namespace, "run_id": run_id},
                },
            }
        ],
    }


class PolicyWatch(threading.Thread):
    """Records when each NetworkPolicy of ``namespace`` was seen added and deleted (this process's clock)."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        super().__init__(daemon=True)
        self.net, self.namespace = client.NetworkingV1Api(api), namespace
        self.added: dict[str, float] = {}
        self.deleted: dict[str, float] = {}
        self.seen_added = threading.Event()
        self.seen_deleted = threading.Event()
        self.ready = threading.Event()
        self._watch = watch.Watch()

    def run(self) -> None:
        version = self.net.list_namespaced_network_policy(self.namespace).metadata.resource_version
        self.ready.set()
        for event in self._watch.stream(
            self.net.list_namespaced_network_policy, self.namespace, resource_version=version, timeout_seconds=120
        ):
            name = event["object"].metadata.name
            if event["type"] == "ADDED":
                self.added[name] = time.time()
                self.seen_added.set()
            elif event["type"] == "DELETED":
                self.deleted[name] = time.time()
                self.seen_deleted.set()
                return

    def stop(self) -> None:
        self._watch.stop()


@pytest.mark.skipif(
    tuple(int(p) for p in importlib.metadata.version("chaostoolkit-addons").split(".")[:2]) < (0, 12),
    reason="chaostoolkit-addons before 0.12 does not record the failing result's time in the journal",
)
@pytest.mark.parametrize("check_s", [0.5, 2.0])
def test_a_tripped_stop_condition_removes_the_policy_within_the_bound(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str, tmp_path: Path, check_s: float
) -> None:
    core = client.CoreV1Api(api)
    for pod in ("contour-a", "contour-b"):
        create_pod(core, namespace, pod)
    journal_path = tmp_path / "journal.json"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_CONTEXT", "CHAOSTOOLKIT_IN_POD")}
    env["KUBECONFIG"] = str(control_plane.kubeconfig)

    with FakeEnvoy() as envoy:
        experiment = tmp_path / "experiment.json"
        experiment.write_text(json.dumps(_experiment(envoy.url + "/", namespace, "stop1", check_s)))
        policies = PolicyWatch(api, namespace)
        policies.start()
        assert policies.ready.wait(10)
        started = time.time()
        proc = subprocess.Popen(
            [
                *(str(CHAOS), "--no-version-check", "--no-log-file", "run", "--rollback-strategy", "always"),
                *("--journal-path", str(journal_path), str(experiment)),
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert policies.seen_added.wait(30), "the block created no NetworkPolicy"
            time.sleep(2.0)
            request = urllib.request.Request(envoy.url + "/fault", method="POST", data=b"")
            urllib.request.urlopen(request, timeout=5).read()
            broken = time.time()
            output, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            policies.stop()
    assert policies.seen_deleted.wait(5), f"the policy was never deleted:\n{output}"
    ran_s = time.time() - started

    journal = load_journal(journal_path)
    assert (proc.returncode, journal["status"]) == (1, "interrupted"), output
    assert journal["safeguards"]["triggered_by"] == SAFEGUARD
    [(name, deleted)] = policies.deleted.items()
    result = epoch_of(journal["safeguards"]["run"]["end"])
    assert result is not None
    trip_to_removed = deleted - result
    print(
        f"\ncheck_s={check_s:g}: 503 from t=0; failing result at +{result - broken:.2f} s; policy {name} deleted "
        f"{trip_to_removed:.2f} s after the failing result (bound {check_s + BOUND_AFTER_CHECK_S:g} s), "
        f"{deleted - broken:.2f} s after the 503s began; chaos run took {ran_s:.1f} s in all"
    )
    assert 0 < trip_to_removed <= check_s + BOUND_AFTER_CHECK_S
    [rollback] = journal["rollbacks"]
    assert (rollback["status"], rollback["output"]["removed_policies"]) == ("succeeded", [name])
    verdict = judge(journal)
    assert verdict.reasons[0].startswith(f"ABORTED by stop condition '{SAFEGUARD}': ")
    assert any(f"removed by the rollback 'unblock-apiserver-egress' (deleted {name}" in f for f in verdict.findings)
