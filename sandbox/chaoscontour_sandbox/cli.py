"""``chaoscontour-sandbox up | apply | delete | load | mode | status | down | binaries``: a one-node Contour cluster.

``up`` checks that it runs as root with the node's tools, finds (or builds) the pinned binaries and brings up a
control plane and one real node (:mod:`chaoscontour_sandbox.lifecycle`). It writes into the sandbox dir (``--dir``,
else ``$CHAOSCONTOUR_SANDBOX_DIR``, else ``.sandbox``):

- ``kubeconfig``: the admin kubeconfig;
- ``settings.env`` and ``settings.json``: what the experiments read from the environment (``KUBECONFIG``,
  ``CONTOUR_NAMESPACE``, ``CONTOUR_SELECTOR``, ``ENVOY_SELECTOR``, ``CONTOUR_LEASE``, ``ENVOY_URL``, ``ENVOY_HOST``,
  ``ENVOY_STATS_URL``, and ``SANDBOX_NETPOL_MODE``);
- ``state.json``: the background process; ``logs/``: the control plane's, the node's and every container's.

With ``--manifests DIR`` (repeatable) ``up`` also applies a user's own manifests once the demo route answers
(:mod:`chaoscontour_sandbox.manifests` checks them before anything starts; their images must be on the node:
``sandbox load IMAGE.tar`` first), and ``--route NAMESPACE/HTTPPROXY`` points the settings at that route. ``apply``
and ``delete`` do the same on a running sandbox; ``delete`` puts the settings back on the demo route if they
pointed at a route it removed. ``mode per-packet|conntrack|off`` switches the NetworkPolicy mode of a running
sandbox. ``down`` stops everything and removes what ``up`` created; it is idempotent. ``binaries build|where``
finds or builds the pinned binaries (:mod:`chaoscontour_sandbox.binaries`) without starting anything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from chaoscontour_sandbox import applier, binaries, lifecycle, manifests, nodeplane, runnerimage, workloads
from chaoscontour_sandbox.deploy import SandboxError, pod_ready
from chaoscontour_sandbox.kubeapi import ApiError, KubeApi
from chaoscontour_sandbox.process import is_same

__all__ = ["SandboxError", "sandbox_dir", "main"]


def sandbox_dir(given: Path | None = None) -> Path:
    """The sandbox dir: ``given``, else ``$CHAOSCONTOUR_SANDBOX_DIR``, else ``.sandbox`` in the current dir."""
    if given is not None:
        return given.resolve()
    env = os.environ.get("CHAOSCONTOUR_SANDBOX_DIR")
    return Path(env).resolve() if env else Path(".sandbox").resolve()


def status(directory: Path) -> int:
    state = lifecycle.read_json(directory / lifecycle.STATE_FILE)
    if not state:
        print(f"no sandbox in {directory}")
        return 1
    holder = state.get("nodeplane") or {}
    running = is_same(holder, lifecycle.HOLDER)
    print(f"sandbox dir:  {directory} (NetworkPolicy mode {state.get('mode')})")
    print(f"  node and control plane: pid {holder.get('pid')} {'running' if running else 'NOT RUNNING'}")
    print(f"  api server:   {state.get('apiserver', '?')}  (KUBECONFIG={directory / 'kubeconfig'})")
    print(f"  logs:         {directory / 'logs'}, containers under {nodeplane.layout_for(directory).pod_logs_dir}")
    try:
        api = KubeApi(directory / "kubeconfig")
        print("pods:")
        for pod in sorted(
            api.get("/api/v1/pods").get("items", []), key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])
        ):
            statuses = pod.get("status", {}).get("containerStatuses") or []
            restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
            waiting = [c["state"]["waiting"].get("reason", "") for c in statuses if "waiting" in c.get("state", {})]
            name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            ready = "terminating" if pod["metadata"].get("deletionTimestamp") else "not ready"
            ready = "Ready" if pod_ready(pod) else ready
            print(
                f"  {name:<48} {pod['status'].get('podIP', '-'):<13} {pod['status'].get('phase', '?'):<8} "
                f"{ready:<10} restarts {restarts} {' '.join(waiting)}"
            )
        policies = api.get("/apis/networking.k8s.io/v1/networkpolicies").get("items", [])
        if policies:
            print(
                "networkpolicies: "
                + ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in policies)
            )
        lease = api.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{workloads.CONTOUR_NAMESPACE}/leases/{workloads.LEASE_NAME}"
        )
        print(f"leader:       {lease.get('spec', {}).get('holderIdentity')}")
    except (ApiError, OSError, KeyError) as exc:
        print(f"  (API server not answering: {exc})")
    if state.get("envoy_url"):
        print(f"route:        curl -H 'Host: {workloads.ECHO_FQDN}' {state['envoy_url']}")
    return 0 if running else 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, help="the sandbox dir (default $CHAOSCONTOUR_SANDBOX_DIR or .sandbox)")
    parser = argparse.ArgumentParser(prog="chaoscontour-sandbox", description="A local one-node Contour cluster.")
    sub = parser.add_subparsers(dest="action", required=True)
    user_options = argparse.ArgumentParser(add_help=False)
    user_options.add_argument(
        "--manifests",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help=f"a directory of your manifests (*.yaml, *.yml, *.json; repeatable): {', '.join(manifests.KINDS)}; "
        "their images must be on the node (`sandbox load`)",
    )
    user_options.add_argument("--namespace", default=manifests.DEFAULT_NAMESPACE, help="for objects that name none")
    routed = argparse.ArgumentParser(add_help=False)
    routed.add_argument(
        "--route",
        default="",
        metavar="NAMESPACE/HTTPPROXY",
        help="point settings.env at this HTTPProxy of the manifests (ENVOY_URL, ENVOY_HOST, BACKEND_*, ROUTE_*)",
    )
    p_up = sub.add_parser(
        "up", parents=[common, user_options, routed], help="start the sandbox and wait for the route through Envoy"
    )
    p_up.add_argument("--mode", choices=nodeplane.MODES, default="per-packet", help="NetworkPolicy enforcement mode")
    p_up.add_argument(
        "--gateway",
        action="store_true",
        help="also Contour provisioned through Gateway API (Gateway gateway/contour, HTTPRoute demo/echo); "
        "its settings in DIR/settings-gateway.env",
    )
    p_up.add_argument(
        "--project",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="the chaoscontour checkout the game-day runner image is built from (default: the current dir)",
    )
    sub.add_parser("apply", parents=[common, user_options, routed], help="apply your manifests to a running sandbox")
    sub.add_parser("delete", parents=[common, user_options], help="delete what `apply --manifests` applied")
    p_load = sub.add_parser("load", parents=[common], help="import image archives into the node (as kind load)")
    p_load.add_argument("archives", type=Path, nargs="+", metavar="IMAGE.tar")
    p_down = sub.add_parser("down", parents=[common], help="stop everything and remove what the sandbox created")
    p_down.add_argument("--keep-logs", action="store_true", help="keep the sandbox dir's logs/")
    sub.add_parser("status", parents=[common], help="print what runs, the pods and the route")
    p_mode = sub.add_parser("mode", parents=[common], help="switch a running sandbox's NetworkPolicy mode")
    p_mode.add_argument("mode", choices=nodeplane.MODES)
    sub.add_parser(
        "binaries",
        add_help=False,
        help="find or build the pinned binaries: `binaries --help` for its own options",
    )
    return parser


def _up(directory: Path, args: argparse.Namespace) -> None:
    # Your manifests are read and checked before anything is started; so are root and the tools.
    user = manifests.check(args.manifests, namespace=args.namespace, route=args.route) if args.manifests else None
    if os.geteuid() != 0:
        raise SandboxError("the sandbox needs root (containerd, cgroups, network namespaces, iptables)")
    try:
        runner = partial(_runner_image, args.project.resolve())
        lifecycle.up(directory, args.mode, user, runner=runner, with_gateway=args.gateway)
    except BaseException:
        print(f"sandbox up failed; cleaning up (logs kept in {directory / 'logs'})", file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            lifecycle.down(directory, keep_logs=True)
        raise


def _runner_image(project: Path, say: lifecycle.Say) -> Path | None:
    """The game-day runner image (deploy/Dockerfile's, built from ``project``), or ``None`` without a checkout."""
    if not (project / "deploy" / "Dockerfile").is_file() or not (project / "chaoscontour").is_dir():
        say(f"game-day runner image: not built ({project} is no chaoscontour checkout; pass --project DIR)")
        return None
    return runnerimage.build_runner_image(project, binaries.cache_dir() / "images", progress=lambda m: say("  " + m))


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if given[:1] == ["binaries"]:  # its own parser, options and exit codes
        return int(binaries.main(given[1:]) or 0)
    parser = _parser()
    args = parser.parse_args(given)
    directory = sandbox_dir(args.dir)
    if args.action in ("apply", "delete") and not args.manifests:
        parser.error(f"{args.action} needs --manifests DIR")
    if args.action == "up" and args.route and not args.manifests:
        parser.error("--route names an HTTPProxy of --manifests")
    try:
        if args.action == "up":
            _up(directory, args)
        elif args.action == "apply":
            lifecycle.apply_manifests(directory, args.manifests, args.namespace, args.route)
        elif args.action == "delete":
            lifecycle.delete_manifests(directory, args.manifests, args.namespace)
        elif args.action == "load":
            lifecycle.running(directory)
            lifecycle.load(directory, args.archives, lifecycle.clock())
        elif args.action == "down":
            lifecycle.down(directory, keep_logs=args.keep_logs)
        elif args.action == "mode":
            lifecycle.switch_mode(directory, args.mode)
        else:
            return status(directory)
        return 0
    except (
        SandboxError,
        binaries.BinaryNotFound,
        binaries.BuildFailed,
        manifests.ManifestError,
        applier.ApplyError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
