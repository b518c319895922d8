"""CoreDNS with only the plugins the sandbox's Corefile names, built the way CoreDNS documents a custom build.

``go install github.com/coredns/coredns`` compiles every plugin CoreDNS ships (route53, azure, clouddns, etcd...);
the sandbox runs one Corefile (:func:`chaoscontour_sandbox.dns.corefile`) with seven of them. So the builder writes
a small wrapper module of its own: a ``main.go`` that blank-imports only those plugins' packages, sets
``dnsserver.Directives`` to their names and calls ``coremain.Run()``, as CoreDNS's own ``coredns.go`` does with all of
them. A plugin's place in ``Directives`` is the order it runs in, whatever the Corefile's order, so the names are
kept in the order of CoreDNS's ``plugin.cfg`` at the pinned tag, read from the downloaded module at build time, never
typed in here. ``coremain`` sets the version ``coredns -version`` prints from its own constant (``CoreVersion``).

The plugins built are :data:`chaoscontour_sandbox.dns.COREDNS_PLUGINS`; :data:`CACHE_RECIPE` names that set in the
binary cache's folder (``coredns-v1.15.0-plugins-<hash>``), so a changed set, or the full build of before, is never
taken for this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from chaoscontour_sandbox import gotool
from chaoscontour_sandbox.dns import COREDNS_PLUGINS
from chaoscontour_sandbox.gotool import BuildFailed, Progress

__all__ = ["CACHE_RECIPE", "MODULE", "build_coredns", "cache_recipe", "directives", "main_go", "plugin_cfg_entries"]

MODULE = "github.com/coredns/coredns"


def cache_recipe(plugins: Iterable[str]) -> str:
    """The cache folder's suffix for a CoreDNS of ``plugins``: their names' hash, whatever their order."""
    return "plugins-" + hashlib.sha256(",".join(sorted(set(plugins))).encode()).hexdigest()[:8]


CACHE_RECIPE = cache_recipe(COREDNS_PLUGINS)


def plugin_cfg_entries(plugin_cfg: str, module_root: Path | None = None) -> list[tuple[str, str]]:
    """``(directive, package)`` of each ``name:package`` line of ``plugin.cfg``, in its order, read as CoreDNS's
    ``directives_generate.go`` reads it: ``#`` lines skipped, and ``package`` a folder under ``plugin/`` of the
    module (``prometheus:metrics``) unless no such folder exists, then an import path of its own
    (``on:github.com/coredns/caddy/onevent``). Without ``module_root``, a package with no ``/`` is taken as a folder."""
    entries: list[tuple[str, str]] = []
    for line in plugin_cfg.splitlines():
        if line.startswith("#"):
            continue
        items = line.split(":")
        if len(items) != 2:
            continue
        name, package = items
        inside = (module_root / "plugin" / package).is_dir() if module_root else "/" not in package
        entries.append((name, f"{MODULE}/plugin/{package}" if inside else package))
    return entries


def directives(entries: Sequence[tuple[str, str]], wanted: Iterable[str]) -> list[tuple[str, str]]:
    """The entries of ``plugin.cfg`` whose directive is ``wanted``, in ``plugin.cfg``'s order."""
    wanted = set(wanted)
    missing = wanted - {name for name, _ in entries}
    if missing:
        raise BuildFailed(f"CoreDNS's plugin.cfg has no plugin {', '.join(sorted(missing))}; cannot build it in")
    return [(name, package) for name, package in entries if name in wanted]


def main_go(chosen: Sequence[tuple[str, str]]) -> str:
    """The wrapper's ``main.go``: the ``chosen`` plugins' packages imported, their directives in that order."""
    imports = "".join(f'\t_ "{package}"\n' for package in sorted({package for _, package in chosen}))
    names = "".join(f'\t\t"{name}",\n' for name, _ in chosen)
    return (
        "// Command coredns is CoreDNS with only the plugins chaoscontour's sandbox Corefile names.\n"
        "// Written by chaoscontour_sandbox.corednsbuild; the directives are in the order of CoreDNS's plugin.cfg.\n"
        "package main\n\n"
        "import (\n"
        f'\t"{MODULE}/core/dnsserver"\n'
        f'\t"{MODULE}/coremain"\n\n'
        f"{imports}"
        ")\n\n"
        "func main() {\n"
        "\t// The order plugins handle a query in, whatever their order in the Corefile.\n"
        f"\tdnsserver.Directives = []string{{\n{names}\t}}\n"
        "\tcoremain.Run()\n"
        "}\n"
    )


def build_coredns(go: str, work: Path, out: Path, version: str, wanted: Sequence[str], progress: Progress) -> None:
    """A :data:`chaoscontour_sandbox.builds.Builder`: ``coredns`` with :data:`COREDNS_PLUGINS` only, into ``out``."""
    progress(f"  fetching {MODULE}@v{version} (for its plugin.cfg) through the Go module proxy")
    root = Path(gotool.download(go, MODULE, version, work)["Dir"])
    chosen = directives(plugin_cfg_entries((root / "plugin.cfg").read_text(), root), COREDNS_PLUGINS)
    progress(f"  CoreDNS plugins, in plugin.cfg's order: {', '.join(name for name, _ in chosen)}")
    (work / "go.mod").write_text("module chaoscontour.local/coredns-build\n\ngo 1.24.0\n")
    (work / "main.go").write_text(main_go(chosen))
    gotool.build_main(go, work, f"{MODULE}@v{version}", out / "coredns", progress)
