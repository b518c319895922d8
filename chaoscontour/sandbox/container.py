"""The node agent's container runtime: one container as a local process, its restarts and its probes.

:class:`ContainerRuntime` runs one container of a pod as a :class:`~chaoscontour.sandbox.process.Process`, in the
pod's network namespace and the container's own mount and UTS namespaces (the command comes from
:meth:`chaoscontour.sandbox.pod.PodRuntime.launch`); restarts it by the pod's ``restartPolicy`` with the kubelet's
CrashLoopBackOff (:func:`~chaoscontour.sandbox.podspec.restart_delay_s`); runs its liveness and readiness probes
from the node's side with the Kubernetes defaults; and reports its status.
:func:`images` says which local program stands in for each image.

Container logs: ``<dir>/logs/pods/<namespace>_<pod>_<uid>/<container>/<restartCount>.log``, the kubelet's layout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoscontour.sandbox import podspec
from chaoscontour.sandbox.kubeapi import ApiError
from chaoscontour.sandbox.process import Process

if TYPE_CHECKING:
    from chaoscontour.sandbox.pod import PodRuntime

__all__ = ["ContainerRuntime", "images", "now"]

Obj = dict[str, Any]

DEFAULT_GRACE_S = 30
# The game-day image's Dockerfile, in this checkout: its environment, working directory and command.
CHECKOUT = Path(__file__).resolve().parents[2]
DOCKERFILE = CHECKOUT / "deploy" / "Dockerfile"
# What a container's PATH is when its image sets none (Docker's and containerd's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def images(contour: str, envoy: str, *, dockerfile: Path = DOCKERFILE) -> dict[str, podspec.Image]:
    """The local stand-in of each image kind (:data:`~chaoscontour.sandbox.podspec.PROGRAMS`).

    The game-day runner is this checkout's venv (its ``chaos`` and ``chaoscontour`` first on ``PATH``) with the
    environment, working directory and command of ``deploy/Dockerfile``; it is left out without that file.
    """
    base = {"PATH": DEFAULT_PATH, "HOME": "/root"}
    found = {
        # Contour's image runs /bin/contour; Envoy's, `envoy -c /etc/envoy/envoy.yaml` (their Dockerfiles).
        "contour": podspec.Image("contour", contour, base, "/", ("/bin/contour",)),
        "envoy": podspec.Image("envoy", envoy, base, "/", (), ("envoy", "-c", "/etc/envoy/envoy.yaml")),
        # From this checkout, as the agent itself: the venv's editable install may point at another checkout (a git
        # worktree shares its venv), whose echo server would not be the one this agent's stand-ins ask for.
        "echo": podspec.Image(
            "echo", "", {**base, "PYTHONPATH": str(CHECKOUT)}, "/", (sys.executable, "-m", "chaoscontour.sandbox.echo")
        ),
    }
    with contextlib.suppress(OSError):
        runner = podspec.dockerfile_image(dockerfile.read_text(), "runner")
        env = {**base, **runner.env}
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        found["runner"] = podspec.Image("runner", "", env, runner.workdir, runner.entrypoint, runner.cmd)
    return found


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
        self.proc: Process | None = None
        self.run_id = 0
        self.started_at = ""
        self.stopping = threading.Event()
        self.backoff_s = 0.0
        self.backoff_updated = 0.0
        self.kill_reason = ""
        self._lock = threading.Lock()

    def _container_id(self) -> str:
        return f"sandbox://{self.pod.uid[:8]}-{self.name}-{self.proc.pid}" if self.proc else ""

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
            status["containerID"] = self._container_id()
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
        began = time.monotonic()
        delay, self.backoff_s = podspec.restart_delay_s(self.backoff_s, began - self.backoff_updated)
        self.backoff_updated = began
        if delay == 0.0:
            return True
        message = (
            f"back-off {delay:.0f}s restarting failed container={self.name} pod={self.pod.name}_{self.pod.namespace}"
        )
        self.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
        self.pod.changed()
        self.pod.event("Warning", "BackOff", f"Back-off restarting failed container {self.name}")
        if self.stopping.wait(max(0.0, began + delay - time.monotonic())):
            return False
        self.backoff_updated = time.monotonic()
        return True

    def _run_once(self) -> int:
        try:
            argv, env = self.pod.launch(self.spec)
        except (ValueError, ApiError, OSError) as exc:  # a container we cannot build never starts
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self.pod.changed()
            self.pod.log(f"container {self.name}: {exc}")
            self.stopping.wait(10.0)
            return 1
        log_path = self.pod.log_dir / self.name / f"{self.restart_count}.log"
        with self._lock:
            if self.stopping.is_set():
                return 0
            proc = Process.start(self.name, argv, log_path, env=env, header=False)
            proc.close_log()  # the child has its own copy
            self.proc = proc
            self.run_id += 1
            run_id = self.run_id
        self.started_at = now()
        self.kill_reason = ""
        self.state = {"running": {"startedAt": self.started_at}}
        self.started = True
        self.ready = not self.init and "readinessProbe" not in self.spec
        self.pod.agent.record_pid(self.pod, self.name, proc.pid)
        self.pod.changed()
        self.pod.event("Normal", "Started", f"Started container {self.name}")
        if not self.init:
            for kind in ("livenessProbe", "readinessProbe"):
                if kind in self.spec:
                    threading.Thread(target=self._probe_loop, args=(kind, self.spec[kind], run_id), daemon=True).start()
        code = proc.wait()
        exit_code = code if code >= 0 else 128 - code
        self.ready = False
        self.started = False
        terminated = podspec.terminated_state(exit_code, self.started_at, now(), self._container_id(), self.kill_reason)
        self.state = {"terminated": terminated}
        self.last_state = {"terminated": terminated}
        self.pod.agent.forget_pid(self.pod, self.name)
        self.pod.log(f"container {self.name} exited with code {exit_code}")
        self.pod.changed()
        return exit_code

    def kill(self, grace_s: float, reason: str = "") -> None:
        """SIGTERM the current process's group, SIGKILL it after ``grace_s``; returns when it is gone."""
        with self._lock:
            proc = self.proc
        if proc is None or not proc.running:
            return
        self.kill_reason = reason
        proc.stop(grace_s)

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
        while self.run_id == run_id and not self.stopping.is_set() and self.proc and self.proc.running:
            ok, detail = self.pod.probe(probe, timeout, self.proc.pid)
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
