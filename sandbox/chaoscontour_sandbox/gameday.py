"""The game day of ``deploy/`` in the sandbox, as a user runs it: ``kubectl apply -k deploy/``, then a Job now.

- :func:`build` is ``kubectl kustomize deploy/``: the pinned kustomize (:mod:`chaoscontour_sandbox.binaries`)
  builds the objects, so the sandbox applies exactly what a user's ``kubectl apply -k deploy/`` would.
- :func:`for_cluster` is the edit docs/operations.md asks of a user before applying: the CronJob's ``ENVOY_URL``,
  ``ENVOY_HOST`` and ``ENVOY_STATS_URL`` set to where this cluster's Envoy answers (the Envoy pod's address).
  Nothing else changes: image, identity,
  security context and the script stay as written.
- :func:`apply` sends them with server-side apply, as ``kubectl apply --server-side`` does.
- :func:`job_from_cronjob` is ``kubectl create job NAME --from=cronjob/chaoscontour-gameday``: the CronJob's
  ``jobTemplate`` with kubectl's annotation ``cronjob.kubernetes.io/instantiate: manual`` and an owner reference
  to the CronJob (kubectl's ``createJobFromCronJob``), with optional environment overrides for a variant.

The sandbox's node has the image ``chaoscontour-gameday`` as ``deploy/Dockerfile`` describes it, built from this
checkout (:mod:`chaoscontour_sandbox.runnerimage`); the pod gets its ServiceAccount token, ``ca.crt`` and namespace at
``/var/run/secrets/kubernetes.io/serviceaccount``, the experiments ConfigMap at ``/experiments`` and the journals
claim, bound to the sandbox's static ``hostPath`` PersistentVolume, at ``/journals``.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import binaries, workloads
from chaoscontour_sandbox.kubeapi import KubeApi

__all__ = ["DEPLOY_DIR", "CRONJOB", "build", "for_cluster", "apply", "job_from_cronjob"]

Obj = dict[str, Any]

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"
CRONJOB = "chaoscontour-gameday"
FIELD_MANAGER = "kubectl"


def build(directory: Path = DEPLOY_DIR) -> list[Obj]:
    """The objects ``kubectl apply -k directory`` would send, built by the pinned kustomize."""
    kustomize = binaries.ensure_binaries(["kustomize"], build=False)["kustomize"]
    done = subprocess.run([str(kustomize), "build", str(directory)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"kustomize build {directory} failed:\n{done.stderr.strip()}")
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _containers(cronjob: Obj) -> list[Obj]:
    return list(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"])


def _set_env(container: Obj, values: Mapping[str, str]) -> None:
    env = container.setdefault("env", [])
    for name, value in values.items():
        for item in env:
            if item["name"] == name:
                item.pop("valueFrom", None)
                item["value"] = value
                break
        else:
            env.append({"name": name, "value": value})


def for_cluster(objects: Sequence[Obj], env: Mapping[str, str]) -> list[Obj]:
    """``objects`` with the game-day CronJob's container environment ``env`` set (copies; the rest untouched)."""
    edited = copy.deepcopy(list(objects))
    for obj in edited:
        if obj["kind"] == "CronJob" and obj["metadata"]["name"] == CRONJOB:
            for container in _containers(obj):
                _set_env(container, env)
    return edited


def apply(api: KubeApi, objects: Sequence[Obj]) -> None:
    """Server-side apply of ``objects``, in order."""
    for obj in objects:
        api.apply(workloads.api_path(obj), obj, field_manager=FIELD_MANAGER)


def job_from_cronjob(cronjob: Obj, name: str, env: Mapping[str, str] | None = None) -> Obj:
    """The Job ``kubectl create job name --from=cronjob/<cronjob>`` creates, with ``env`` overrides if given."""
    template = copy.deepcopy(cronjob["spec"]["jobTemplate"])
    meta = template.get("metadata") or {}
    job: Obj = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cronjob["metadata"]["namespace"],
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual", **(meta.get("annotations") or {})},
            "labels": dict(meta.get("labels") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "CronJob",
                    "name": cronjob["metadata"]["name"],
                    "uid": cronjob["metadata"].get("uid", ""),
                }
            ],
        },
        "spec": template["spec"],
    }
    if env:
        for container in job["spec"]["template"]["spec"]["containers"]:
            _set_env(container, env)
    return job
