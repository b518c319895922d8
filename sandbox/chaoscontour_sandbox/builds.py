"""Build the pinned binaries from source: the Go toolchain through the Go module proxy, and gcc for ``pause``.

:mod:`chaoscontour_sandbox.binaries` decides *what* is missing and where the cache lives; this module only knows
*how* to build one component's binaries into a work folder and install them into a target folder; the toolchain
itself (``go`` and its environment, progress, the module cache) is :mod:`chaoscontour_sandbox.gotool`.

Every Go binary is built with ``CGO_ENABLED=0``, so each is static and runs on any Linux of its architecture.

The Kubernetes binaries cannot be ``go install``-ed: ``k8s.io/kubernetes`` points its staging modules at
``./staging`` with ``replace`` lines, which Go ignores in a dependency. A throwaway wrapper module requires
``k8s.io/kubernetes`` and replaces each staging module with its published ``v0.X.Y`` twin; the list is read from
``k8s.io/kubernetes``'s own ``go.mod`` at the pinned tag, never hard-coded. The same wrapper builds agnhost, which is
a package of the main ``k8s.io/kubernetes`` module (``test/images/agnhost``, no go.mod of its own).

``pause`` is Kubernetes' own pod sandbox program, ``build/pause/linux/pause.c`` of the pinned ``k8s.io/kubernetes``
module, compiled statically with the flags of Kubernetes' ``build/pause/Makefile``.

``coredns`` is built with only the plugins of the sandbox's Corefile, from a wrapper module of its own
(:mod:`chaoscontour_sandbox.corednsbuild`), not ``go install``-ed with every plugin CoreDNS ships.

``otelcol``, the OpenTelemetry Collector the traces control is tested against, is made the way the Collector's
project says to make one: its builder (``go.opentelemetry.io/collector/cmd/builder``, at the pinned release) reads a
manifest of components, generated here (:func:`collector_manifest`), and writes the distribution's sources.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import gotool, versions
from chaoscontour_sandbox.corednsbuild import build_coredns
from chaoscontour_sandbox.gotool import BuildFailed, Progress, module_dir

__all__ = [
    "OTELCOL_BUILDER",
    "OTELCOL_COMPONENTS",
    "BuildFailed",
    "Progress",
    "build",
    "collector_manifest",
    "contour_module_dir",
    "go_install_name",
    "kubernetes_module_dir",
    "kubernetes_package",
    "module_dir",
    "pause_compile_command",
    "staging_modules",
]

# A builder gets the `go` binary, its work folder, the folder to leave its binaries in, the component's version,
# the binaries wanted and a progress callback.
Builder = Callable[[str, Path, Path, str, Sequence[str], Progress], None]


def build(component: str, version: str, wanted: Sequence[str], work: Path, target: Path, progress: Progress) -> None:
    """Build the binaries ``wanted`` of ``component`` at ``version`` in ``work`` and install them into ``target``."""
    builder = _BUILDERS.get(component)
    if builder is None:
        raise BuildFailed(f"no builder for component {component!r}")
    go = gotool.go()
    work.mkdir(parents=True, exist_ok=True)
    out = work / "out"
    out.mkdir(exist_ok=True)
    progress(f"building {component} v{version} ({', '.join(wanted)}) in {work}")
    started = time.monotonic()
    builder(go, work, out, version, wanted, progress)
    gotool.install(out, target, wanted, progress)
    progress(f"built {', '.join(wanted)} v{version} in {time.monotonic() - started:.0f} s")


def contour_module_dir() -> Path:
    """The pinned Contour module's folder in the Go module cache: the source of its CRDs and release manifest."""
    return module_dir("github.com/projectcontour/contour", versions.CONTOUR)


def kubernetes_module_dir() -> Path:
    """The pinned ``k8s.io/kubernetes`` module's folder in the Go module cache: the source of ``pause``."""
    return module_dir("k8s.io/kubernetes", versions.KUBERNETES)


# --- Kubernetes: a wrapper module around k8s.io/kubernetes --------------------------------------------------------

_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)

# Binaries of k8s.io/kubernetes that are not a `cmd/<name>` package.
_KUBERNETES_PACKAGE_DIRS = {"agnhost": "test/images/agnhost"}


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The staging modules that ``k8s.io/kubernetes``'s go.mod replaces with ``./staging/...`` paths."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_go_mod)))


def kubernetes_package(binary: str) -> str:
    """The main package in ``k8s.io/kubernetes`` whose ``go build`` yields ``binary``."""
    return "k8s.io/kubernetes/" + _KUBERNETES_PACKAGE_DIRS.get(binary, f"cmd/{binary}")


def _build_kubernetes(go: str, work: Path, out: Path, version: str, wanted: Sequence[str], progress: Progress) -> None:
    staging_version = "v0." + version.split(".", 1)[1]
    progress(f"  fetching k8s.io/kubernetes@v{version} through the Go module proxy")
    info = gotool.download(go, "k8s.io/kubernetes", version, work)
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
    packages = [kubernetes_package(name) for name in wanted]
    gotool.run([go, "get", *(f"{p}@v{version}" for p in packages)], work, "go get")
    deps = gotool.run([go, "list", "-deps", *packages], work, "go list -deps").split()
    ldflags = [
        "-s -w",
        f"-X k8s.io/component-base/version.gitVersion=v{version}",
        f"-X k8s.io/component-base/version.gitMajor={version.split('.')[0]}",
        f"-X k8s.io/component-base/version.gitMinor={version.split('.')[1]}",
        "-X k8s.io/component-base/version.gitTreeState=clean",
        "-X k8s.io/client-go/pkg/version.gitVersion=v" + version,
    ]
    if "agnhost" in wanted:
        # agnhost's own version (test/images/agnhost/VERSION), set as its image build does; other mains lack the var.
        agnhost_version = (Path(info["Dir"]) / _KUBERNETES_PACKAGE_DIRS["agnhost"] / "VERSION").read_text().strip()
        ldflags.append(f"-X main.Version={agnhost_version}")
    gotool.compile_with_progress(
        [go, "build", "-v", "-trimpath", "-ldflags", " ".join(ldflags), "-o", str(out) + "/", *packages],
        work,
        f"go build {', '.join(wanted)}",
        len(deps),
        progress,
    )


# --- etcd and Contour ---------------------------------------------------------------------------------------------


def _build_etcd(go: str, work: Path, out: Path, version: str, wanted: Sequence[str], progress: Progress) -> None:
    # etcd's own go.mod files use relative replace lines too; this two-line main is the whole of etcd's binary.
    (work / "go.mod").write_text("module chaoscontour.local/etcd-build\n\ngo 1.24.0\n")
    (work / "main.go").write_text(
        "// Command etcd runs etcd's own server entry point, built from the pinned go.etcd.io/etcd/server/v3.\n"
        "package main\n\n"
        'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n"
    )
    progress(f"  fetching go.etcd.io/etcd/server/v3@v{version} through the Go module proxy")
    gotool.build_main(go, work, f"go.etcd.io/etcd/server/v3@v{version}", out / "etcd", progress)


def _build_contour(go: str, work: Path, out: Path, version: str, wanted: Sequence[str], progress: Progress) -> None:
    package = f"github.com/projectcontour/contour/cmd/contour@v{version}"
    progress(f"  go install {package}")
    ldflags = f"-s -w -X github.com/projectcontour/contour/internal/build.Version=v{version}"
    # `go install pkg@version` works for Contour (its go.mod has no replace lines); GOBIN points at the staging dir.
    cmd = [go, "install", "-v", "-trimpath", "-ldflags", ldflags, package]
    gotool.compile_with_progress(cmd, work, "go install contour", None, progress, GOBIN=str(out))


# --- plain `go install` -------------------------------------------------------------------------------------------

# Components whose go.mod has no replace lines, so `go install PACKAGE@VERSION` builds them as released; each yields
# one binary named after its component and reports its version from the module's build information.
_GO_INSTALL_PACKAGES = {
    # The NetworkPolicy engine of the node (nftables + nfqueue over netlink, pure Go); its main package is `cmd/`.
    "kube-network-policies": "sigs.k8s.io/kube-network-policies/cmd",
    "kustomize": "sigs.k8s.io/kustomize/kustomize/v5",
    "actionlint": "github.com/rhysd/actionlint/cmd/actionlint",
}
_MAJOR_VERSION_SUFFIX = re.compile(r"v[0-9]+")


def go_install_name(package: str) -> str:
    """The file name ``go install`` gives ``package``'s binary: its last path element, skipping a ``/vN`` suffix."""
    elements = package.split("/")
    if len(elements) > 1 and _MAJOR_VERSION_SUFFIX.fullmatch(elements[-1]):
        return elements[-2]
    return elements[-1]


def _go_install(component: str) -> Builder:
    package = _GO_INSTALL_PACKAGES[component]

    def install(go: str, work: Path, out: Path, version: str, wanted: Sequence[str], progress: Progress) -> None:
        progress(f"  go install {package}@v{version}")
        cmd = [go, "install", "-v", "-trimpath", "-ldflags", "-s -w", f"{package}@v{version}"]
        gotool.compile_with_progress(cmd, work, f"go install {component}", None, progress, GOBIN=str(out))
        installed = go_install_name(package)
        if installed != component:  # kube-network-policies' main package is `cmd`, so Go names the binary `cmd`
            (out / installed).replace(out / component)

    return install


# --- the OpenTelemetry Collector: the collector's builder (ocb) ----------------------------------------------------

OTELCOL_BUILDER = "go.opentelemetry.io/collector/cmd/builder"
# Core components only (no contrib), each a module of the collector's core repository released with the builder:
# OTLP in (HTTP; gRPC comes with the same receiver), the debug exporter (at `detailed` verbosity it writes every span
# with its attributes to the Collector's output) and the batch processor.
OTELCOL_COMPONENTS: dict[str, tuple[str, ...]] = {
    "receivers": ("go.opentelemetry.io/collector/receiver/otlpreceiver",),
    "processors": ("go.opentelemetry.io/collector/processor/batchprocessor",),
    "exporters": ("go.opentelemetry.io/collector/exporter/debugexporter",),
}


def collector_manifest(version: str, output_path: Path) -> dict[str, Any]:
    """The builder's manifest for an ``otelcol`` of the core components at ``version``, sources in ``output_path``.

    It names no confmap providers and no telemetry module: the builder then adds its own, at the releases it was
    released with (v1.71.0 providers for v0.165.0), so every core module stays at one release; its strict versioning
    check fails the build if a component pulled in another.
    """
    modules = {
        kind: [{"gomod": f"{module} v{version}"} for module in found] for kind, found in OTELCOL_COMPONENTS.items()
    }
    return {
        "dist": {
            "module": "chaoscontour.local/otelcol",
            "name": "otelcol",
            "description": "OpenTelemetry Collector of core components for chaoscontour",
            "version": version,
            "output_path": str(output_path),
        },
        **modules,
    }


def _build_otelcol(go: str, work: Path, out: Path, version: str, wanted: Sequence[str], progress: Progress) -> None:
    # A module that needs a newer Go than this one fails the build instead of downloading another toolchain.
    toolchain = "local"
    builder = f"{OTELCOL_BUILDER}@v{version}"
    progress(f"  go install {builder}")
    bin_dir = work / "bin"
    cmd = [go, "install", "-v", "-trimpath", "-ldflags", "-s -w", builder]
    gotool.compile_with_progress(
        cmd, work, "go install builder", None, progress, GOBIN=str(bin_dir), GOTOOLCHAIN=toolchain
    )
    sources = work / "src"
    manifest = work / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(collector_manifest(version, sources), sort_keys=False))
    progress(f"  builder: generating the sources and resolving the modules ({manifest})")
    # The builder runs `go mod tidy` and checks versions; compiling it ourselves (`go build -v`) reports progress,
    # which the builder's own compile step, buffering go's output, cannot.
    cmd = [str(bin_dir / go_install_name(OTELCOL_BUILDER)), f"--config={manifest}", "--skip-compilation"]
    gotool.compile_with_progress(cmd, work, "builder", None, progress, counts_packages=False, GOTOOLCHAIN=toolchain)
    deps = gotool.run([go, "list", "-deps", "."], sources, "go list -deps", GOTOOLCHAIN=toolchain).split()
    ldflags = "-s -w"
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(out / "otelcol"), "."]
    gotool.compile_with_progress(cmd, sources, "go build otelcol", len(deps), progress, GOTOOLCHAIN=toolchain)


# --- pause: C, with gcc -------------------------------------------------------------------------------------------

PAUSE_SOURCE = "build/pause/linux/pause.c"


def pause_compile_command(gcc: str, source: Path, output: Path, version: str) -> list[str]:
    """gcc's command line for ``pause``: the CFLAGS of Kubernetes' ``build/pause/Makefile``, stripped like theirs.

    Their ``-DVERSION=v$(TAG)-$(REV)`` appends a git revision, which a module download has not; ``pause -v`` prints
    ``pause.c v<version>``.
    """
    return [gcc, "-Os", "-Wall", "-Werror", "-static", "-s", f"-DVERSION=v{version}", "-o", str(output), str(source)]


def _build_pause(go: str, work: Path, out: Path, version: str, wanted: Sequence[str], progress: Progress) -> None:
    gcc = shutil.which("gcc")
    if not gcc:
        raise BuildFailed("gcc is not on PATH; pause is C, built statically: `apt-get install gcc libc6-dev`")
    progress(f"  fetching k8s.io/kubernetes@v{versions.KUBERNETES} (for {PAUSE_SOURCE}) through the Go module proxy")
    source = Path(gotool.download(go, "k8s.io/kubernetes", versions.KUBERNETES, work)["Dir"]) / PAUSE_SOURCE
    cmd = pause_compile_command(gcc, source, out / "pause", version)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BuildFailed(
            f"gcc failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}\n"
            "(a static build needs the C library's headers and libc.a: `apt-get install gcc libc6-dev`)"
        )
    progress(f"  gcc pause: done in {time.monotonic() - started:.0f} s")


_BUILDERS: dict[str, Builder] = {
    "kubernetes": _build_kubernetes,
    "etcd": _build_etcd,
    "contour": _build_contour,
    "coredns": build_coredns,
    "pause": _build_pause,
    "otelcol": _build_otelcol,
    **{component: _go_install(component) for component in _GO_INSTALL_PACKAGES},
}
