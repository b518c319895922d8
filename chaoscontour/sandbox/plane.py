"""The sandbox's control plane as a background process that outlives ``chaoscontour sandbox up``.

:class:`~chaoscontour.sandbox.controlplane.ControlPlane` stops its processes when the Python process that started it
exits (``atexit``), as a test fixture should. The sandbox must keep running after ``up`` returns, so ``up`` starts
this small process, which owns the control plane for the sandbox's lifetime::

    python -m chaoscontour.sandbox.plane --dir DIR

It runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler in the network namespace ``ccsbx-cp``
(which ``up`` has created), bound to and advertised on ``10.213.0.2`` so that pods reach the API server over the
bridge and the ``default/kubernetes`` EndpointSlice carries that address; installs Contour's CRDs; copies the admin
kubeconfig to ``DIR/kubeconfig``; writes ``DIR/controlplane.json`` (URL, ports, PIDs) when all is ready; and stops
everything on SIGTERM. Progress lines go to stdout (``up`` sends them to ``DIR/logs/controlplane.log`` and echoes
them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from chaoscontour.sandbox import network
from chaoscontour.sandbox.controlplane import ControlPlane, ControlPlaneError

__all__ = ["READY_FILE", "main"]

READY_FILE = "controlplane.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoscontour.sandbox.plane", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the sandbox dir")
    args = parser.parse_args(argv)
    sandbox_dir: Path = args.dir.resolve()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    plane = ControlPlane(
        workdir=sandbox_dir / "controlplane",
        bind_address=network.CONTROL_PLANE_IP,
        advertise_address=network.CONTROL_PLANE_IP,
        netns=network.CONTROL_PLANE_NETNS,
        controller_manager=True,
        scheduler=True,
        progress=lambda message: print(message, flush=True),
    )
    try:
        plane.start()
        plane.install_contour_crds()
        shutil.copyfile(plane.kubeconfig, sandbox_dir / "kubeconfig")
        (sandbox_dir / "kubeconfig").chmod(0o600)
        ready = {
            "url": plane.url,
            "kubeconfig": str(sandbox_dir / "kubeconfig"),
            "advertise_address": plane.advertise_address,
            "service_ip": plane.service_ip,
            "ports": plane.ports,
            "pids": plane.pids,
            "logs": str(plane.logs_dir),
        }
        staged = sandbox_dir / (READY_FILE + ".new")
        staged.write_text(json.dumps(ready, indent=1))
        staged.replace(sandbox_dir / READY_FILE)
        print(f"control plane ready at {plane.url}", flush=True)
        while not stop.wait(1.0):
            if not plane.running:
                print(f"a control-plane process exited; see {plane.logs_dir}", flush=True)
                return 1
        return 0
    except ControlPlaneError as exc:
        print(f"error: {exc}", flush=True)
        return 1
    finally:
        plane.stop()
        (sandbox_dir / READY_FILE).unlink(missing_ok=True)
        print("control plane stopped", flush=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
