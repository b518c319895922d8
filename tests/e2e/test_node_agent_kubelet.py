"""The node agent runs what Contour's release manifest needs, as the kubelet would, on the running sandbox.

Real pods on the sandbox's node agent: the certgen Job of the pinned Contour's ``examples/render/contour.yaml``
(read from the Go module cache) completes and writes the Secrets ``contourcert``/``envoycert``; a pod mounting
them waits in ContainerCreating (FailedMount) until they exist; ``env``/``envFrom`` from a missing Secret keeps a
container in CreateContainerConfigError until it appears; ``preStop`` hooks (``exec`` and ``httpGet``) run before
SIGTERM and one that hangs is cut off at the grace period; a ``hostPort`` answers on the node's address while its
pod runs. The game-day image (this checkout's venv) stands in
for a general-purpose image: its command is replaced by a shell script.
"""

from __future__ import annotations

import base64
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from chaoscontour.sandbox import binaries, hostports, network
from chaoscontour.sandbox.kubeapi import ApiError

from .conftest import Sandbox, wait_for

SHELL_IMAGE = "chaoscontour-gameday:e2e"
RELEASE_MANIFEST = Path("examples") / "render" / "contour.yaml"
CERTGEN_OBJECTS = {"ServiceAccount", "Role", "RoleBinding", "Job"}


@pytest.fixture
def namespace(sandbox: Sandbox) -> Iterator[str]:
    """A namespace of its own, deleted afterwards (its pods stopped by the agent)."""
    name = f"kubelet-{uuid.uuid4().hex[:6]}"
    sandbox.api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    wait_for(
        "the default ServiceAccount", 30, lambda: _exists(sandbox, f"/api/v1/namespaces/{name}/serviceaccounts/default")
    )
    yield name
    sandbox.api.delete(f"/api/v1/namespaces/{name}")
    wait_for(f"namespace {name} to be gone", 120, lambda: not _exists(sandbox, f"/api/v1/namespaces/{name}"), 1.0)


def _exists(sandbox: Sandbox, path: str) -> bool:
    try:
        sandbox.get(path)
        return True
    except ApiError as exc:
        if exc.status == 404:
            return False
        raise


def shell_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    container = {"name": "main", "image": SHELL_IMAGE, "command": ["/bin/sh", "-c", script]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **spec},
    }


def create(sandbox: Sandbox, namespace: str, pod: dict[str, Any]) -> None:
    sandbox.api.create(f"/api/v1/namespaces/{namespace}/pods", pod)


def pod(sandbox: Sandbox, namespace: str, name: str) -> dict[str, Any]:
    return sandbox.get(f"/api/v1/namespaces/{namespace}/pods/{name}")


def waiting_reason(obj: dict[str, Any]) -> str:
    statuses = obj.get("status", {}).get("containerStatuses") or [{}]
    return str((statuses[0].get("state") or {}).get("waiting", {}).get("reason", ""))


def running(obj: dict[str, Any]) -> bool:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def events(sandbox: Sandbox, namespace: str, name: str) -> list[dict[str, Any]]:
    found = sandbox.get(f"/api/v1/namespaces/{namespace}/events", fieldSelector=f"involvedObject.name={name}")
    return list(found.get("items") or [])


def reasons(sandbox: Sandbox, namespace: str, name: str) -> list[str]:
    return [e["reason"] for e in events(sandbox, namespace, name)]


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}


def host_dir(tmp_path: Path) -> dict[str, Any]:
    tmp_path.chmod(0o777)
    return {"name": "out", "hostPath": {"path": str(tmp_path)}}


# --- the certgen Job and pods that mount its Secrets ---------------------------------------------------------------


def certgen_objects(namespace: str) -> list[dict[str, Any]]:
    """The certgen Job of the pinned Contour's release manifest and its ServiceAccount, Role and RoleBinding, moved
    to ``namespace`` (nothing else changed: the Job names its namespace through the downward API)."""
    text = (binaries.contour_module_dir() / RELEASE_MANIFEST).read_text()
    wanted = []
    for obj in yaml.safe_load_all(text):
        if not obj or obj["kind"] not in CERTGEN_OBJECTS:
            continue
        # The RoleBinding is named `contour` but binds the Role `contour-certgen`.
        if "certgen" not in obj["metadata"]["name"] + (obj.get("roleRef") or {}).get("name", ""):
            continue
        obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects") or []:
            subject["namespace"] = namespace
        wanted.append(obj)
    assert sorted(o["kind"] for o in wanted) == sorted(CERTGEN_OBJECTS), wanted
    return wanted


def test_the_release_manifests_certgen_job_completes_and_a_pod_mounting_its_secrets_starts_only_then(
    sandbox: Sandbox, namespace: str, tmp_path: Path
) -> None:
    ns = f"/api/v1/namespaces/{namespace}"
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "contour"}}
    config["data"] = {"contour.yaml": "gateway:\n  controllerName: x\n", "unused.yaml": "x"}
    sandbox.api.create(f"{ns}/configmaps", config)
    # As the release manifest's contour Deployment mounts them: the Secret whole, the ConfigMap's one key by items,
    # and (subPath) one file of the Secret at a path of its own.
    script = "ls /certs /config > /out/listing; stat -c '%a %n' /config/contour.yaml /certs/tls.key >> /out/listing"
    script += "; cat /ca.pem > /out/ca.pem; exec sleep 600"
    waiting = shell_pod(
        "mounts-certs",
        script,
        volumes=[
            {"name": "contourcert", "secret": {"secretName": "contourcert"}},
            {
                "name": "contour-config",
                "configMap": {
                    "name": "contour",
                    "defaultMode": 0o640,
                    "items": [{"key": "contour.yaml", "path": "contour.yaml"}],
                },
            },
            {"name": "envoycert", "secret": {"secretName": "envoycert", "items": [{"key": "ca.crt", "path": "ca"}]}},
            host_dir(tmp_path),
        ],
        container={
            "volumeMounts": [
                {"name": "contourcert", "mountPath": "/certs", "readOnly": True},
                {"name": "contour-config", "mountPath": "/config", "readOnly": True},
                {"name": "envoycert", "mountPath": "/ca.pem", "subPath": "ca"},
                {"name": "out", "mountPath": "/out"},
            ]
        },
        terminationGracePeriodSeconds=1,
    )
    create(sandbox, namespace, waiting)
    wait_for("FailedMount for contourcert", 30, lambda: "FailedMount" in reasons(sandbox, namespace, "mounts-certs"))
    mounting = pod(sandbox, namespace, "mounts-certs")
    assert mounting["status"]["phase"] == "Pending"
    assert waiting_reason(mounting) == "ContainerCreating"
    failed = [e["message"] for e in events(sandbox, namespace, "mounts-certs") if e["reason"] == "FailedMount"]
    assert 'MountVolume.SetUp failed for volume "contourcert" : secret "contourcert" not found' in failed
    assert not (tmp_path / "listing").exists()

    for obj in certgen_objects(namespace):
        kind = obj["kind"]
        path = {
            "ServiceAccount": f"{ns}/serviceaccounts",
            "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/roles",
            "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}/rolebindings",
            "Job": f"/apis/batch/v1/namespaces/{namespace}/jobs",
        }[kind]
        sandbox.api.create(path, obj)
        if kind == "Job":
            job_path = f"{path}/{obj['metadata']['name']}"
    started = time.monotonic()

    def job_done() -> dict[str, Any] | None:
        status = sandbox.get(job_path).get("status", {})
        return status if status.get("succeeded") or status.get("failed") else None

    status = wait_for("the certgen Job to finish", 180, job_done, 1.0)
    assert status.get("succeeded") == 1, status
    for name in ("contourcert", "envoycert"):
        data = sandbox.get(f"{ns}/secrets/{name}")["data"]
        assert {"tls.crt", "tls.key", "ca.crt"} <= set(data), (name, sorted(data))
        assert base64.b64decode(data["tls.crt"]).startswith(b"-----BEGIN CERTIFICATE-----")
    job_pods = sandbox.get(f"{ns}/pods", labelSelector="app=contour-certgen")["items"]
    assert [p["status"]["phase"] for p in job_pods] == ["Succeeded"]
    terminated = job_pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert "SecurityContextNotApplied" in reasons(sandbox, namespace, job_pods[0]["metadata"]["name"])

    wait_for("the pod mounting the Secrets to run", 60, lambda: running(pod(sandbox, namespace, "mounts-certs")))
    print(f"certgen Job done and the waiting pod running {time.monotonic() - started:.1f} s after the Job was created")
    listing = wait_for(
        "the pod's listing", 30, lambda: (tmp_path / "listing").exists() and (tmp_path / "ca.pem").exists()
    )
    assert listing
    words = (tmp_path / "listing").read_text().split()
    assert words[: words.index("/config:")] == ["/certs:", "ca.crt", "tls.crt", "tls.key"]
    assert "contour.yaml" in words and "unused.yaml" not in words
    assert "640 /config/contour.yaml" in (tmp_path / "listing").read_text()
    assert "644 /certs/tls.key" in (tmp_path / "listing").read_text()
    ca = base64.b64decode(sandbox.get(f"{ns}/secrets/envoycert")["data"]["ca.crt"])
    wait_for("the subPath file", 10, lambda: (tmp_path / "ca.pem").read_bytes() == ca)
    assert pod(sandbox, namespace, "mounts-certs")["status"]["containerStatuses"][0]["restartCount"] == 0


# --- env from ConfigMaps and Secrets -----------------------------------------------------------------------------


def test_env_from_a_missing_secret_keeps_the_container_waiting_and_it_starts_when_the_secret_appears(
    sandbox: Sandbox, namespace: str, tmp_path: Path
) -> None:
    ns = f"/api/v1/namespaces/{namespace}"
    sandbox.api.create(
        f"{ns}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"LEVEL": "debug"}},
    )
    spec = shell_pod(
        "env-user",
        'echo "$LEVEL $APP_user $PASSWORD" > /out/env; exec sleep 600',
        restartPolicy="Never",
        volumes=[host_dir(tmp_path)],
        container={
            "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "creds"}, "prefix": "APP_"}],
            "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}],
            "volumeMounts": [{"name": "out", "mountPath": "/out"}],
        },
        terminationGracePeriodSeconds=1,
    )
    create(sandbox, namespace, spec)
    wait_for(
        "CreateContainerConfigError",
        30,
        lambda: waiting_reason(pod(sandbox, namespace, "env-user")) == "CreateContainerConfigError",
    )
    time.sleep(5)  # several retries: still waiting, no restart counted, the pod not failed (restartPolicy Never)
    waiting = pod(sandbox, namespace, "env-user")
    status = waiting["status"]["containerStatuses"][0]
    assert (waiting["status"]["phase"], status["restartCount"]) == ("Pending", 0)
    assert status["state"]["waiting"]["message"] == 'secret "creds" not found'
    sandbox.api.create(f"{ns}/secrets", secret("creds", {"user": "admin", "password": "s3cret"}))
    wait_for("the container to run", 30, lambda: running(pod(sandbox, namespace, "env-user")))
    wait_for("its environment", 10, lambda: (tmp_path / "env").exists())
    assert (tmp_path / "env").read_text() == "debug admin s3cret\n"


# --- lifecycle hooks ---------------------------------------------------------------------------------------------

# Records SIGTERM in /out/log, then exits; meanwhile serves GET on :8090 and records the path (envoy's preStop
# httpGet /shutdown :8090 goes to the shutdown-manager's server in the release manifest).
RECORDER = """
import http.server, os, signal, sys, threading, time
def note(text):
    with open("/out/log", "a") as f:
        f.write(f"{time.monotonic():.3f} {text}\\n")
def on_term(signum, frame):
    note("TERM")
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        note("GET " + self.path)
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("0.0.0.0", 8090), Handler)
note("up")
server.serve_forever()
"""


def log_lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "log"
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()] if path.exists() else []


def hooked_pod(name: str, tmp_path: Path, pre_stop: dict[str, Any], grace_s: int) -> dict[str, Any]:
    return shell_pod(
        name,
        'exec python3 -c "$RECORDER"',
        volumes=[host_dir(tmp_path)],
        container={
            "env": [{"name": "RECORDER", "value": RECORDER}],
            "ports": [{"name": "admin", "containerPort": 8090}],
            "readinessProbe": {"httpGet": {"path": "/ready", "port": "admin"}, "periodSeconds": 1},
            "lifecycle": {"preStop": pre_stop},
            "volumeMounts": [{"name": "out", "mountPath": "/out"}],
        },
        terminationGracePeriodSeconds=grace_s,
    )


def delete_and_time(sandbox: Sandbox, namespace: str, name: str) -> float:
    started = time.monotonic()
    sandbox.api.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
    wait_for(
        f"pod {name} to be gone", 60, lambda: not _exists(sandbox, f"/api/v1/namespaces/{namespace}/pods/{name}"), 0.2
    )
    return time.monotonic() - started


def ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions") or [])


@pytest.mark.parametrize("kind", ["exec", "httpGet"])
def test_a_pre_stop_hook_runs_before_sigterm_when_the_pod_is_deleted(
    sandbox: Sandbox, namespace: str, tmp_path: Path, kind: str
) -> None:
    if kind == "exec":
        # The release manifest's shutdown-manager: `/bin/contour envoy shutdown`; here a shell command, resolved
        # and run inside the container (its /out is the container's volume).
        hook = {"exec": {"command": ["/bin/sh", "-c", "sleep 1; echo '0 preStop exec' >> /out/log"]}}
    else:
        hook = {"httpGet": {"path": "/shutdown", "port": 8090}}
    create(sandbox, namespace, hooked_pod("hooked", tmp_path, hook, grace_s=20))
    wait_for("the pod to be Ready", 60, lambda: ready(pod(sandbox, namespace, "hooked")))
    took = delete_and_time(sandbox, namespace, "hooked")
    lines = [line for line in log_lines(tmp_path) if line != "GET /ready"]
    expected = "preStop exec" if kind == "exec" else "GET /shutdown"
    assert lines == ["up", expected, "TERM"], lines
    assert took < 15, f"deletion took {took:.1f} s"


def test_a_pre_stop_hook_that_hangs_is_cut_off_at_the_grace_period_then_sigterm(
    sandbox: Sandbox, namespace: str, tmp_path: Path
) -> None:
    hook = {"exec": {"command": ["/bin/sh", "-c", "sleep 300"]}}
    create(sandbox, namespace, hooked_pod("hangs", tmp_path, hook, grace_s=4))
    wait_for("the pod to be Ready", 60, lambda: ready(pod(sandbox, namespace, "hangs")))
    began = time.monotonic()
    took = delete_and_time(sandbox, namespace, "hangs")
    lines = [line for line in log_lines(tmp_path) if line != "GET /ready"]
    assert lines == ["up", "TERM"], lines
    stamps = {
        line.split(" ", 1)[1]: float(line.split(" ", 1)[0]) for line in (tmp_path / "log").read_text().splitlines()
    }
    term_after_s = stamps["TERM"] - began
    assert 3.5 <= term_after_s <= 7.0, f"SIGTERM {term_after_s:.1f} s after the delete"
    assert took < 12, f"deletion took {took:.1f} s"
    hooks = [e["message"] for e in events(sandbox, namespace, "hangs") if e["reason"] == "FailedPreStopHook"]
    assert hooks and ("cut off" in hooks[0] or "timed out" in hooks[0]), hooks


# --- hostPort ------------------------------------------------------------------------------------------------------


def test_a_host_port_reaches_the_pod_from_the_nodes_address_until_the_pod_is_deleted(
    sandbox: Sandbox, namespace: str, tmp_path: Path
) -> None:
    host_port = 18090  # a high port: the DNAT matches only the node's bridge address, but stay clear of 80 anyway
    spec = hooked_pod("published", tmp_path, {"httpGet": {"path": "/bye", "port": 8090}}, grace_s=5)
    spec["spec"]["containers"][0]["ports"][0]["hostPort"] = host_port
    create(sandbox, namespace, spec)
    wait_for("the pod to be Ready", 60, lambda: ready(pod(sandbox, namespace, "published")))
    url = f"http://{network.NODE_IP}:{host_port}/through-host-port"
    wait_for("the hostPort to answer", 10, lambda: _answers(url))
    assert "GET /through-host-port" in log_lines(tmp_path)
    assert any(f"--dport {host_port}" in line for line in hostports.leftovers())
    delete_and_time(sandbox, namespace, "published")
    wait_for("the rule to go", 10, lambda: not any(f"--dport {host_port}" in line for line in hostports.leftovers()))
    assert not _answers(url)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False
