"""The node agent's pods: each pod's network namespace, volumes, containers and status in the API.

:class:`PodRuntime` sets up one pod bound to the node (its network namespace and IP on the bridge), prepares its
volumes, runs its init containers in order and then its containers
(:class:`~chaoscontour.sandbox.container.ContainerRuntime`), and writes its status through the ``status`` subresource.

Volumes are directories under the pod's dir (``emptyDir``; ``configMap``, ``secret``, ``downwardAPI`` and
``projected`` written there once, when a container first mounts them: the ServiceAccount token is a TokenRequest
token bound to the pod, valid 24 h and not rotated as the kubelet would), the bound PersistentVolume's ``hostPath``
or ``local`` path (``persistentVolumeClaim``), or a ``hostPath``; each is bind-mounted at its ``mountPath`` in the
container's own mount namespace (:mod:`chaoscontour.sandbox.mounts`).
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoscontour.sandbox import mounts, network, podspec
from chaoscontour.sandbox.container import ContainerRuntime, now
from chaoscontour.sandbox.kubeapi import ApiError

if TYPE_CHECKING:
    from chaoscontour.sandbox.agent import Agent

__all__ = ["PodRuntime"]

Obj = dict[str, Any]

SHM_SIZE = "64m"
# What the stand-in programs run from: this checkout (the package, installed editable) and its venv. A volume
# mounted over a parent of them (an emptyDir at /tmp, with the checkout under /tmp) must not hide them.
HOST_PATHS = (str(Path(__file__).resolve().parents[2]), sys.prefix)
# A token the kubelet would rotate; the sandbox asks for one that outlives any sandbox run instead.
TOKEN_EXPIRATION_S = 24 * 3600


class PodRuntime:
    """One pod on the node: its namespace and IP, its volumes, its containers, and its status in the API."""

    def __init__(self, agent: Agent, pod: Obj) -> None:
        self.agent = agent
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.spec: Obj = pod["spec"]
        self.netns = f"{network.PREFIX}-{self.uid.replace('-', '')[:8]}"
        self.ip: str | None = None
        self.dir = agent.sandbox_dir / "pods" / self.uid[:8]
        self.log_dir = agent.sandbox_dir / "logs" / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.init_containers = [ContainerRuntime(self, c, init=True) for c in self.spec.get("initContainers") or []]
        self.containers = [ContainerRuntime(self, c, init=False) for c in self.spec.get("containers") or []]
        self.initialized = not self.init_containers
        self.init_failed = False
        self.network_ready = False
        self.start_time = now()
        self.terminating = threading.Event()
        self.finished = threading.Event()
        self._volumes: dict[str, str] = {}
        self._volumes_lock = threading.Lock()
        self._dirty = threading.Event()
        self._written = ""
        self._condition_times: dict[str, tuple[str, str]] = {}
        self.thread = threading.Thread(target=self._main, name=f"pod-{self.name}", daemon=True)

    def log(self, message: str) -> None:
        self.agent.log(f"{self.namespace}/{self.name}: {message}")

    def event(self, kind: str, reason: str, message: str) -> None:
        self.agent.event(self.pod, kind, reason, message)

    def changed(self) -> None:
        self._dirty.set()

    @property
    def facts(self) -> podspec.PodFacts:
        return podspec.PodFacts.of(self.pod, node=self.agent.node, pod_ip=self.ip or "", host_ip=network.NODE_IP)

    # --- running ------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()
        threading.Thread(target=self._status_loop, name=f"status-{self.name}", daemon=True).start()

    def _main(self) -> None:
        try:
            self._setup()
            for container in self.init_containers:
                if self.terminating.is_set():
                    return
                if container.run() != 0:
                    self.init_failed = self.spec.get("restartPolicy", "Always") == "Never"
                    return
            self.initialized = True
            self.changed()
            threads = [threading.Thread(target=c.run, daemon=True) for c in self.containers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        except Exception as exc:
            self.log(f"pod failed to run: {type(exc).__name__}: {exc}")
        finally:
            self.finished.set()
            self.changed()

    def _setup(self) -> None:
        self.ip = self.agent.ip_pool.allocate(self.uid)
        self.dir.mkdir(parents=True, exist_ok=True)
        network.create_netns(self.netns, self.ip, {self.name: self.ip})
        self.agent.apply_rules(self)
        self.network_ready = True
        self.changed()

    def terminate(self, grace_s: float) -> None:
        """Stop every container (SIGTERM, SIGKILL after ``grace_s``) and wait for the pod's thread to end."""
        self.terminating.set()
        everyone = self.init_containers + self.containers
        for container in everyone:
            container.stopping.set()
        threads = [threading.Thread(target=c.kill, args=(grace_s,), daemon=True) for c in everyone]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.thread.join(timeout=grace_s + 5)

    def cleanup(self) -> None:
        network.delete_netns(self.netns)
        self.agent.ip_pool.release(self.uid)
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- volumes and commands -----------------------------------------------------------------------------------

    def _volume_source(self, mount: mounts.Mount) -> str:
        """The host directory that backs ``mount``'s volume (written or created on first use)."""
        with self._volumes_lock:
            if mount.volume in self._volumes:
                return self._volumes[mount.volume]
            volume = next(v for v in self.spec.get("volumes") or [] if v["name"] == mount.volume)
            if mount.kind == "persistentVolumeClaim":
                source = self._claimed_path(volume["persistentVolumeClaim"]["claimName"])
            elif mount.kind == "hostPath":
                source = volume["hostPath"]["path"]
                Path(source).mkdir(parents=True, exist_ok=True)
            else:
                directory = self.dir / "v" / mount.volume
                directory.mkdir(parents=True, exist_ok=True)
                if mount.kind in mounts.PROJECTED_KINDS:
                    self._write_files(volume, directory)
                source = str(directory)
            self._volumes[mount.volume] = source
            return source

    def _claimed_path(self, claim: str) -> str:
        pvc = self.agent.api.get(f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}")
        volume_name = pvc.get("spec", {}).get("volumeName")
        if not volume_name or pvc.get("status", {}).get("phase") != "Bound":
            raise ValueError(f"PersistentVolumeClaim {claim!r} is not bound to a PersistentVolume yet")
        spec = self.agent.api.get(f"/api/v1/persistentvolumes/{volume_name}")["spec"]
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not path:
            raise ValueError(f"PersistentVolume {volume_name!r} is neither hostPath nor local: not mountable here")
        Path(path).mkdir(parents=True, exist_ok=True)
        return str(path)

    def _write_files(self, volume: Obj, directory: Path) -> None:
        files, fetch = mounts.volume_files(volume, self.facts)
        for wanted in fetch:
            if isinstance(wanted, mounts.TokenFile):
                files[wanted.path] = self._token(wanted).encode()
                continue
            plural = "configmaps" if wanted.kind == "ConfigMap" else "secrets"
            try:
                obj: Obj | None = self.agent.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{wanted.name}")
            except ApiError as exc:
                if exc.status != 404:
                    raise
                obj = None
            files.update(mounts.key_files(wanted, obj))
        for relative, content in files.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)

    def _token(self, wanted: mounts.TokenFile) -> str:
        spec: Obj = {
            "expirationSeconds": max(wanted.expiration_s, TOKEN_EXPIRATION_S),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid},
        }
        if wanted.audience:
            spec["audiences"] = [wanted.audience]
        sa = self.spec.get("serviceAccountName") or "default"
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        return str(self.agent.api.create(path, request)["status"]["token"])

    def launch(self, spec: Obj) -> tuple[list[str], dict[str, str]]:
        """The command and environment that run container ``spec`` (volumes are prepared on the way)."""
        program = podspec.program_for_image(spec.get("image", ""))
        stand_in = None if program else podspec.stand_ins(self.pod["metadata"].get("annotations")).get(spec["name"])
        if stand_in is not None:  # only a user's pod asks for one (chaoscontour.sandbox.manifests)
            program, spec = "echo", podspec.stand_in_container(spec, stand_in)
            doing = "exits 0" if stand_in.init else f"answers 200 to every GET on {', '.join(map(str, stand_in.ports))}"
            message = (
                f"image {spec.get('image')} has no local program: the sandbox's echo backend stands in for container "
                f"{spec['name']} ({doing}); it does not behave like the real app"
            )
            self.log(message)
            self.event("Warning", "StandIn", message)
        image = self.agent.images.get(program or "")
        if image is None:
            known = ", ".join(sorted(podspec.PROGRAMS))
            raise ValueError(f"image {spec.get('image')!r} has no local stand-in; known: {known}")
        env, notes = podspec.container_env(
            spec, self.facts, image_env=image.env, service_host=self.agent.kubernetes_service_ip
        )
        for note in notes:
            self.log(f"container {spec['name']}: {note}")
        argv = podspec.container_argv(image, spec, env)
        binds = [(self._volume_source(m), m.path, m.read_only) for m in mounts.container_mounts(self.spec, spec)]
        binds += mounts.keep_visible(HOST_PATHS, [target for _, target, _ in binds])
        rootfs = self.dir / "root" / spec["name"]
        rootfs.mkdir(parents=True, exist_ok=True)
        workdir = spec.get("workingDir") or image.workdir
        command, extra = mounts.launch_argv(
            network.netns_exec(self.netns), self.name, str(rootfs), binds, workdir, argv, SHM_SIZE
        )
        return command, {**env, **extra}

    # --- probes -------------------------------------------------------------------------------------------------

    def _port(self, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for container in self.spec.get("containers") or []:
            for declared in container.get("ports") or []:
                if declared.get("name") == port:
                    return int(declared["containerPort"])
        raise ValueError(f"named port {port!r} is not declared by any container")

    def probe(self, probe: Obj, timeout_s: float, pid: int) -> tuple[bool, str]:
        """Run one probe from the node's side (exec: inside container ``pid``); return (success, detail)."""
        try:
            if "httpGet" in probe:
                get = probe["httpGet"]
                host = get.get("host") or self.ip or ""
                conn = http.client.HTTPConnection(host, self._port(get["port"]), timeout=timeout_s)
                try:
                    headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                    headers.setdefault("User-Agent", "kube-probe/sandbox")
                    conn.request("GET", get.get("path") or "/", headers=headers)
                    response = conn.getresponse()
                    body = response.read(200).decode(errors="replace").strip()
                finally:
                    conn.close()
                if 200 <= response.status < 400:
                    return True, ""
                return False, f"HTTP probe failed with statuscode: {response.status} {body}"
            if "tcpSocket" in probe:
                port = self._port(probe["tcpSocket"]["port"])
                with socket.create_connection((self.ip or "", port), timeout=timeout_s):
                    return True, ""
            if "exec" in probe:
                cmd = mounts.exec_in_container_argv(pid, probe["exec"]["command"])
                done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
                return done.returncode == 0, done.stdout.decode(errors="replace")[-200:]
            return False, "unsupported probe handler"
        except (OSError, subprocess.TimeoutExpired, ValueError, http.client.HTTPException) as exc:
            return False, f"{type(exc).__name__}: {exc}"

    # --- status -------------------------------------------------------------------------------------------------

    def _condition(self, kind: str, ok: bool, reason: str = "") -> Obj:
        status = "True" if ok else "False"
        previous = self._condition_times.get(kind)
        if previous is None or previous[0] != status:
            previous = (status, now())
            self._condition_times[kind] = previous
        condition: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": previous[1]}
        if reason and not ok:
            condition["reason"] = reason
        return condition

    def status(self) -> Obj:
        """The pod's status (``qosClass`` is left out: the API server sets it at creation and refuses changes)."""
        containers = [c.status() for c in self.containers]
        phase = podspec.pod_phase(
            self.spec.get("restartPolicy", "Always"), self.initialized, self.init_failed, containers
        )
        all_ready = bool(self.containers) and all(c.ready for c in self.containers)
        done = "PodCompleted" if phase in ("Succeeded", "Failed") else ""
        conditions = [
            self._condition("PodReadyToStartContainers", self.network_ready),
            self._condition("Initialized", self.initialized),
            self._condition("Ready", all_ready, done),
            self._condition("ContainersReady", all_ready, done),
            self._condition("PodScheduled", True),
        ]
        status: Obj = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": network.NODE_IP,
            "hostIPs": [{"ip": network.NODE_IP}],
            "startTime": self.start_time,
            "containerStatuses": containers,
        }
        if self.init_containers:
            status["initContainerStatuses"] = [c.status() for c in self.init_containers]
        if self.ip and self.network_ready:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        return status

    def _status_loop(self) -> None:
        while True:
            self._dirty.wait(5.0)
            if self.terminating.is_set() and self.finished.is_set() and not self._dirty.is_set():
                return
            self._dirty.clear()
            time.sleep(0.05)  # gather the changes of one moment into one write
            status = self.status()
            text = json.dumps(status, sort_keys=True)
            if text == self._written:
                continue
            try:
                self.agent.api.merge_patch(
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status", {"status": status}
                )
                self._written = text
            except ApiError as exc:
                if exc.status == 404:
                    return
                self.log(f"status update failed: {exc}")
                time.sleep(1.0)
                self._dirty.set()
