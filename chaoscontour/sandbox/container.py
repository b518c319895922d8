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

from chaoscontour.sandbox import handlers, podspec
from chaoscontour.sandbox.kubeapi import ApiError
from chaoscontour.sandbox.process import Process

if TYPE_CHECKING:
    from chaoscontour.sandbox.pod import PodRuntime

__all__ = ["ContainerRuntime", "images", "now"]

Obj = dict[str, Any]

DEFAULT_GRACE_S = 30
# The kubelet's minimumGracePeriodInSeconds: what SIGTERM gets at least after a preStop hook used up the grace.
MIN_GRACE_S = 2.0
# How soon a container that could not be created (CreateContainerConfigError) is tried again.
CONFIG_RETRY_S = 2.0
ENTER_TIMEOUT_S = 10.0
# The game-day image's Dockerfile, in this checkout: its environment, working directory and command.
CHECKOUT = Path(__file__).resolve().parents[2]
DOCKERFILE = CHECKOUT / "deploy" / "Dockerfile"
# What a container's PATH is when its image sets none (Docker's and containerd's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def images(contour: str, envoy: str, *, coredns: str = "", dockerfile: Path = DOCKERFILE) -> dict[str, podspec.Image]:
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
    if coredns:
        # CoreDNS's image runs /coredns (its Dockerfile's ENTRYPOINT); the Deployment gives `-conf` as args.
        found["coredns"] = podspec.Image("coredns", coredns, base, "/", ("/coredns",))
    with contextlib.suppress(OSError):
        runner = podspec.dockerfile_image(dockerfile.read_text(), "runner")
        env = {**base, **runner.env}
        env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
        found["runner"] = podspec.Image("runner", "", env, runner.workdir, runner.entrypoint, runner.cmd)
    return found


def _wait_until_entered(proc: Process, timeout_s: float) -> None:
    """Wait until the launch steps have exec'd the container's program, so that an exec hook entering its
    namespaces sees its root and volumes: the steps run with ``STAGE2`` in their environment and unset it just
    before that exec (:func:`chaoscontour.sandbox.mounts.launch_argv`)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.running:
        try:
            if b"STAGE2=" not in Path(f"/proc/{proc.pid}/environ").read_bytes():
                return
        except OSError:
            return
        time.sleep(0.02)


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
            if code is None:  # never created (a missing Secret...): no restart, no exit code; try again
                if self.stopping.wait(CONFIG_RETRY_S):
                    return 0
                continue
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

    def _run_once(self) -> int | None:
        """Create and run the container once; its exit code, or ``None`` if it could not be created."""
        try:
            argv, env = self.pod.launch(self.spec)
        except (ValueError, ApiError, OSError) as exc:
            # The kubelet's CreateContainerConfigError: the container stays waiting and is tried again; the pod does
            # not fail (pkg/kubelet/kuberuntime: a missing ConfigMap or Secret key is retried on every sync).
            message = str(exc)
            if self.state.get("waiting", {}).get("message") != message:
                self.pod.log(f"container {self.name}: {message}")
                self.pod.event("Warning", "Failed", f"Error: {message}")
            self.state = {"waiting": {"reason": "CreateContainerConfigError", "message": message}}
            self.pod.changed()
            return None
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
        self.pod.agent.record_pid(self.pod, self.name, proc.pid)
        self.pod.changed()
        self.pod.event("Normal", "Started", f"Started container {self.name}")
        notes = podspec.security_notes(self.pod.spec, self.spec)
        if notes and self.restart_count == 0:
            self.pod.event("Normal", "SecurityContextNotApplied", "; ".join(notes))
        if not self.init and self._post_start(proc):
            self.ready = "readinessProbe" not in self.spec
            self.pod.changed()
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

    def _post_start(self, proc: Process) -> bool:
        """Run the ``postStart`` hook, if any, before probes start; a failed hook kills the container, as the
        kubelet does (event FailedPostStartHook). Bounded by the grace period, which the kubelet does not bound."""
        hook = (self.spec.get("lifecycle") or {}).get("postStart")
        if not hook:
            return True
        _wait_until_entered(proc, ENTER_TIMEOUT_S)
        ok, detail, _ = handlers.run_within(self._grace_s(), lambda t: self._hook(hook, t, proc.pid))
        if ok:
            return True
        message = f"PostStartHook failed: {detail}"
        self.pod.log(f"container {self.name}: {message}")
        self.pod.event("Warning", "FailedPostStartHook", message)
        threading.Thread(target=self.kill, args=(self._grace_s(), message), daemon=True).start()
        return False

    def _hook(self, hook: Obj, timeout_s: float, pid: int) -> tuple[bool, str]:
        return self.pod.run_handler(hook, self.spec, timeout_s, pid, "kube-lifecycle/sandbox")

    def _grace_s(self) -> float:
        return float(self.pod.spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S))

    def kill(self, grace_s: float, reason: str = "", hooks: bool = True) -> None:
        """Stop the current process as the kubelet's killContainer does; returns when it is gone.

        The ``preStop`` hook runs first, for at most ``grace_s``; what it took counts against the grace period, so
        SIGTERM then goes to the process's group with what is left (at least :data:`MIN_GRACE_S`), and SIGKILL
        when that is spent (pkg/kubelet/kuberuntime/kuberuntime_container.go). A grace of 0 skips the hook.
        """
        with self._lock:
            proc = self.proc
        if proc is None or not proc.running:
            return
        self.kill_reason = reason
        hook = (self.spec.get("lifecycle") or {}).get("preStop")
        if hook and hooks and grace_s > 0 and not self.init:
            began = time.monotonic()
            ok, detail, cut_off = handlers.run_within(grace_s, lambda t: self._hook(hook, t, proc.pid))
            spent = time.monotonic() - began
            self.pod.log(f"container {self.name}: preStop hook {'succeeded' if ok else 'failed'} in {spent:.1f} s")
            if not ok:
                what = "was cut off at the grace period" if cut_off else "failed"
                self.pod.event("Warning", "FailedPreStopHook", f"PreStopHook {what}: {detail}")
            grace_s = max(grace_s - spent, MIN_GRACE_S)
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
            ok, detail = self.pod.run_handler(probe, self.spec, timeout, self.proc.pid, "kube-probe/sandbox")
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
