"""The scheduled game day of ``deploy/`` runs in the sandbox as a user runs it, in-cluster, end to end.

``kubectl apply -k deploy/`` (the pinned kustomize builds it; the user's edit of where Envoy answers), then
``kubectl create job --from=cronjob/chaoscontour-gameday``: the runner image is ``deploy/Dockerfile``'s, built
from this checkout (Python, chaostoolkit and this project's wheel), the pod authenticates with its
ServiceAccount's projected token
(``CHAOSTOOLKIT_IN_POD=true``), and its files land on the journals claim, bound to the sandbox's static
``hostPath`` PersistentVolume.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.activities.envoy import envoy_serving
from chaoscontour_sandbox import gameday
from tests.support.sandbox import Sandbox, leftovers
from tests.support.waiting import wait_for

NS = "projectcontour"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
GAME_DAY_TIMEOUT_S = 900
# chaoscontour report names its files after the journal's stem: <name>.journal.png and .html.
FILES = ("journal.json", "log", "junit.xml", "summary.md", "journal.png", "journal.html")


@pytest.fixture(scope="module")
def cronjob(sandbox: Sandbox) -> dict[str, Any]:
    """``kubectl apply -k deploy/`` with the CronJob pointed at the sandbox's Envoy; the claim bound."""
    settings = sandbox.settings
    where = {k: settings[k] for k in ("ENVOY_URL", "ENVOY_HOST", "ENVOY_STATS_URL")}
    gameday.apply(sandbox.api, gameday.for_cluster(gameday.build(), where))
    claim = f"/api/v1/namespaces/{NS}/persistentvolumeclaims/chaoscontour-journals"
    wait_for("the journals claim to be Bound", 60, lambda: sandbox.get(claim).get("status", {}).get("phase") == "Bound")
    return sandbox.get(f"/apis/batch/v1/namespaces/{NS}/cronjobs/{gameday.CRONJOB}")


def journals(sandbox: Sandbox) -> Path:
    pv = sandbox.get(f"/api/v1/namespaces/{NS}/persistentvolumeclaims/chaoscontour-journals")["spec"]["volumeName"]
    return Path(sandbox.get(f"/api/v1/persistentvolumes/{pv}")["spec"]["hostPath"]["path"])


def runs(sandbox: Sandbox) -> set[Path]:
    root = journals(sandbox)
    return set(root.iterdir()) if root.exists() else set()


def start(sandbox: Sandbox, job: dict[str, Any]) -> dict[str, Any]:
    """Create ``job`` and return its pod once it runs, after checking what it runs as."""
    name = job["metadata"]["name"]
    sandbox.api.create(JOBS, job)

    def pod() -> dict[str, Any] | None:
        items = sandbox.get(f"/api/v1/namespaces/{NS}/pods", labelSelector=f"job-name={name}")["items"]
        return (
            items[0]
            if items and items[0].get("status", {}).get("phase") in ("Running", "Succeeded", "Failed")
            else None
        )

    found: dict[str, Any] = wait_for(f"the pod of Job {name} to run", 120, pod)
    labels = found["metadata"].get("labels") or {}
    assert labels.get("app") != "contour", "the game-day pod must not be selected by the fault"
    spec = found["spec"]
    assert spec["serviceAccountName"] == "chaoscontour"
    assert spec["nodeName"] == "sandbox"
    token_volumes = [v for v in spec["volumes"] if v["name"].startswith("kube-api-access-")]
    assert token_volumes, "the API server's ServiceAccount admission adds the projected token volume"
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["CHAOSTOOLKIT_IN_POD"] == "true"
    return found


def finished(sandbox: Sandbox, name: str) -> str:
    """Wait for Job ``name`` to complete or fail; return ``Complete`` or ``Failed``."""

    def state() -> str:
        conditions = sandbox.get(f"{JOBS}/{name}").get("status", {}).get("conditions") or []
        done = [c["type"] for c in conditions if c["type"] in ("Complete", "Failed") and c["status"] == "True"]
        return done[0] if done else ""

    return str(wait_for(f"Job {name} to finish", GAME_DAY_TIMEOUT_S, state, interval_s=2.0))


def test_the_game_day_job_runs_in_cluster_and_keeps_its_files_on_the_claim(
    sandbox: Sandbox, cronjob: dict[str, Any], healthy_contour: dict[str, str], k: Any, figures: dict[str, Any]
) -> None:
    before = runs(sandbox)
    began = time.monotonic()
    pod = start(sandbox, gameday.job_from_cronjob(cronjob, "gameday-now"))
    outcome = finished(sandbox, "gameday-now")
    log = sandbox.container_logs(NS, pod["metadata"]["name"], "chaos")
    assert outcome == "Complete", log
    assert "PASSED" in log
    (run,) = runs(sandbox) - before
    experiments = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    names = next(e["value"] for e in experiments if e["name"] == "EXPERIMENTS").split()
    for experiment in (n.removesuffix(".json") for n in names):
        for suffix in FILES:
            assert (run / f"{experiment}.{suffix}").stat().st_size > 0, f"{experiment}.{suffix} missing in {run}"
        journal = json.loads((run / f"{experiment}.journal.json").read_text())
        assert journal["status"] == "completed"
    # Authenticated in-cluster as the game-day ServiceAccount: its projected token reached the activities.
    chaos_log = (run / "apiserver-outage.log").read_text()
    assert "block_apiserver_egress" in chaos_log
    # The fault is gone: the rollback removed the policy and its expiry Job.
    assert leftovers(k) == []
    assert sandbox.get(f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies")["items"] == []
    figures["game_day"] = {"job_s": round(time.monotonic() - began, 1), "files": sorted(p.name for p in run.iterdir())}


def test_a_game_day_below_its_availability_floor_fails_the_job(
    sandbox: Sandbox, cronjob: dict[str, Any], healthy_contour: dict[str, str], k: Any
) -> None:
    # Every request must succeed, and the backend goes away for a few seconds while the game day samples.
    variant = {"EXPERIMENTS": "leader-kill.json", "MIN_AVAILABILITY": "1"}
    before = runs(sandbox)
    start(sandbox, gameday.job_from_cronjob(cronjob, "gameday-floor", variant))
    run = wait_for("the run's directory", 60, lambda: next(iter(runs(sandbox) - before), None))
    chaos_log = run / "leader-kill.log"
    wait_for(
        "the game day to kill the leader",
        180,
        lambda: chaos_log.exists() and "Action: kill-the-contour-leader" in chaos_log.read_text(),
        interval_s=0.2,
    )
    echo = "/apis/apps/v1/namespaces/demo/deployments/echo/scale"
    sandbox.api.merge_patch(echo, {"spec": {"replicas": 0}})
    time.sleep(5)
    sandbox.api.merge_patch(echo, {"spec": {"replicas": 2}})
    assert finished(sandbox, "gameday-floor") == "Failed"
    summary = (run / "leader-kill.summary.md").read_text()
    assert "below min_availability" in summary, summary
    assert leftovers(k) == []
    # Leave the route as the next tests expect it: Envoy must have the new backends' endpoints.
    settings = sandbox.settings
    wait_for(
        "the route to answer through Envoy again",
        120,
        lambda: envoy_serving(settings["ENVOY_URL"], host=settings["ENVOY_HOST"], timeout_s=2.0),
    )
