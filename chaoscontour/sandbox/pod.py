"""The node agent's pods: each pod's network namespace, volumes, containers and status in the API.

:class:`PodRuntime` sets up one pod bound to the node (its network namespace and IP on the bridge), prepares its
volumes, runs its init containers in order and then its containers
(:class:`~chaoscontour.sandbox.container.ContainerRuntime`), and writes its status through the ``status`` subresource.

Every volume a container mounts is set up before any container starts (:mod:`chaoscontour.sandbox.volumes`); a
ConfigMap or Secret that does not exist yet keeps the pod in ContainerCreating (FailedMount events) until it does,
as with the kubelet. Each volume, or its ``subPath``, is bind-mounted at its ``mountPath`` in the container's own
mount namespace (:mod:`chaoscontour.sandbox.mounts`). Probes and lifecycle hooks run through
:mod:`chaoscontour.sandbox.handlers`.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoscontour.sandbox import handlers, mounts, network, podspec, standin
from chaoscontour.sandbox.container import ContainerRuntime, now
from chaoscontour.sandbox.kubeapi import ApiError
from chaoscontour.sandbox.volumes import PodVolumes

if TYPE_CHECKING:
    from chaoscontour.sandbox.agent import Agent

__all__ = ["PodRuntime"]

Obj = dict[str, Any]

SHM_SIZE = "64m"
# What the stand-in programs run from: this checkout (the package, installed editable) and its venv. A volume
# mounted over a parent of them (an emptyDir at /tmp, with the checkout under /tmp) must not hide them.
HOST_PATHS = (str(Path(__file__).resolve().parents[2]), sys.prefix)
# How often a pod whose volume is not ready tries again (the kubelet backs off up to about 2 min; the sandbox keeps
# it short so that a pod starts within seconds of its Secret), and how often it repeats the FailedMount event.
MOUNT_RETRY_S = 2.0
MOUNT_EVENT_EVERY_S = 30.0


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
        self.volumes = PodVolumes(agent.api, pod, self.dir, lambda: self.facts)
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
    def running(self) -> bool:
        """Its network is up and it is not being stopped (its hostPorts are published)."""
        return self.network_ready and bool(self.ip) and not self.terminating.is_set()

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
            self.mount_volumes()
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
        network.create_netns(self.netns, self.ip, {self.name: self.ip}, self.agent.resolv_conf(self.pod))
        self.agent.apply_rules(self)
        self.network_ready = True
        self.changed()

    def terminate(self, grace_s: float, hooks: bool = True) -> None:
        """Stop every container (preStop hook if ``hooks``, SIGTERM, SIGKILL when ``grace_s`` is spent) and wait for
        the pod's thread to end."""
        self.terminating.set()
        everyone = self.init_containers + self.containers
        for container in everyone:
            container.stopping.set()
        threads = [threading.Thread(target=c.kill, args=(grace_s, "", hooks), daemon=True) for c in everyone]
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

    def image(self, spec: Obj, program: str | None = None) -> podspec.Image:
        """The local stand-in for container ``spec``'s image (or ``program``'s); ``ValueError`` if it has none."""
        image = self.agent.images.get(program or podspec.program_for_image(spec.get("image", "")) or "")
        if image is None:
            known = ", ".join(sorted(podspec.PROGRAMS))
            raise ValueError(f"image {spec.get('image')!r} has no local stand-in; known: {known}")
        return image

    def _stand_in(self, spec: Obj) -> tuple[Obj, str | None]:
        """``spec`` as the echo backend runs it when the pod asks for a stand-in and its image has no program."""
        if podspec.program_for_image(spec.get("image", "")):
            return spec, None
        stand_in = standin.stand_ins(self.pod["metadata"].get("annotations")).get(spec["name"])
        if stand_in is None:  # only a user's pod asks for one (chaoscontour.sandbox.manifests)
            return spec, None
        doing = "exits 0" if stand_in.init else f"answers 200 to every GET on {', '.join(map(str, stand_in.ports))}"
        message = (
            f"image {spec.get('image')} has no local program: the sandbox's echo backend stands in for container "
            f"{spec['name']} ({doing}); it does not behave like the real app"
        )
        self.log(message)
        self.event("Warning", "StandIn", message)
        return standin.stand_in_container(spec, stand_in), "echo"

    def mount_volumes(self) -> None:
        """Set up every volume a container mounts before any container starts, as the kubelet does; a volume that
        is not ready (its Secret does not exist yet) keeps the pod in ContainerCreating with a FailedMount event,
        tried again every :data:`MOUNT_RETRY_S` until it is, or until the pod is deleted."""
        names = {m["name"] for c in self.init_containers + self.containers for m in c.spec.get("volumeMounts") or []}
        wanted = [v["name"] for v in self.spec.get("volumes") or [] if v["name"] in names]
        last, last_event = "", 0.0
        while not self.terminating.is_set():
            try:
                for name in wanted:
                    self.volumes.source(name)
                return
            except mounts.VolumeNotReady as exc:
                message = f'MountVolume.SetUp failed for volume "{name}" : {exc}'
                if message != last or time.monotonic() - last_event > MOUNT_EVENT_EVERY_S:
                    self.log(message)
                    self.event("Warning", "FailedMount", message)
                    last, last_event = message, time.monotonic()
            except (ValueError, ApiError, OSError) as exc:  # not fixed by waiting: each container reports it
                self.event("Warning", "FailedMount", f'MountVolume.SetUp failed for volume "{name}" : {exc}')
                return
            self.terminating.wait(MOUNT_RETRY_S)

    def launch(self, spec: Obj) -> tuple[list[str], dict[str, str]]:
        """The command and environment that run container ``spec``.

        ``podspec.ContainerConfigError`` when a ConfigMap or Secret its environment needs is missing."""
        spec, program = self._stand_in(spec)
        image = self.image(spec, program)
        objects = {(kind, name): self.volumes.lookup(kind, name) for kind, name in podspec.env_objects(spec)}
        env, notes = podspec.container_env(
            spec, self.facts, image_env=image.env, service_host=self.agent.kubernetes_service_ip, objects=objects
        )
        for note in notes + podspec.security_notes(self.spec, spec):
            self.log(f"container {spec['name']}: {note}")
        argv = podspec.container_argv(image, spec, env)
        binds = [(self._mount_source(m), m.path, m.read_only) for m in mounts.container_mounts(self.spec, spec, env)]
        binds += mounts.keep_visible(HOST_PATHS, [target for _, target, _ in binds])
        rootfs = self.dir / "root" / spec["name"]
        rootfs.mkdir(parents=True, exist_ok=True)
        workdir = spec.get("workingDir") or image.workdir
        command, extra = mounts.launch_argv(
            network.netns_exec(self.netns), self.name, str(rootfs), binds, workdir, argv, SHM_SIZE
        )
        return command, {**env, **extra}

    def _mount_source(self, mount: mounts.Mount) -> str:
        """The host path bound at ``mount``: its volume, or the ``subPath`` inside it (a directory is created when
        it does not exist, as the kubelet does)."""
        source = Path(self.volumes.source(mount.volume))
        if not mount.sub_path:
            return str(source)
        inside = source / mount.sub_path
        if not inside.resolve().is_relative_to(source.resolve()):
            raise ValueError(f"volumeMount {mount.volume!r}: subPath {mount.sub_path!r} leaves the volume")
        if not inside.exists():
            inside.mkdir(parents=True, mode=0o777)
        return str(inside)

    # --- probes and hooks ---------------------------------------------------------------------------------------

    def run_handler(self, handler: Obj, spec: Obj, timeout_s: float, pid: int, user_agent: str) -> tuple[bool, str]:
        """Run a probe's or hook's handler for container ``spec`` (exec: inside its process ``pid``)."""
        return handlers.run_handler(
            handler,
            pod_ip=self.ip or "",
            containers=self.spec.get("containers") or [],
            image=self.image(spec) if "exec" in handler else None,
            pid=pid,
            timeout_s=timeout_s,
            user_agent=user_agent,
        )

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
