"""The pure parts of the binary cache and its builders: package paths, command lines, pins, what gets built."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from chaoscontour_sandbox import binaries, builds, corednsbuild, dns, gotool, versions


def test_kubernetes_binaries_map_to_their_main_packages() -> None:
    assert builds.kubernetes_package("kubelet") == "k8s.io/kubernetes/cmd/kubelet"
    assert builds.kubernetes_package("kube-proxy") == "k8s.io/kubernetes/cmd/kube-proxy"
    assert builds.kubernetes_package("kube-apiserver") == "k8s.io/kubernetes/cmd/kube-apiserver"
    # agnhost is a package of the main module outside cmd/.
    assert builds.kubernetes_package("agnhost") == "k8s.io/kubernetes/test/images/agnhost"


def test_the_kubernetes_component_has_the_node_binaries_and_agnhost() -> None:
    kubernetes = binaries.COMPONENTS["kubernetes"].binaries
    assert {"kubelet", "kube-proxy", "agnhost", "kube-apiserver"} <= set(kubernetes)


def test_go_install_names_binaries_after_the_last_path_element_without_a_major_version() -> None:
    assert builds.go_install_name("sigs.k8s.io/kube-network-policies/cmd") == "cmd"
    assert builds.go_install_name("sigs.k8s.io/kustomize/kustomize/v5") == "kustomize"
    assert builds.go_install_name("github.com/rhysd/actionlint/cmd/actionlint") == "actionlint"


def test_every_component_has_a_builder() -> None:
    assert set(binaries.COMPONENTS) <= set(builds._BUILDERS)


def test_pause_compile_command_is_static_and_carries_the_version() -> None:
    cmd = builds.pause_compile_command("/usr/bin/gcc", Path("/m/pause.c"), Path("/o/pause"), "3.10.1")
    assert cmd[0] == "/usr/bin/gcc"
    assert "-static" in cmd
    assert "-DVERSION=v3.10.1" in cmd
    assert cmd[cmd.index("-o") + 1] == "/o/pause"
    assert cmd[-1] == "/m/pause.c"


def test_versions_env_pins_the_node_components(tmp_path: Path) -> None:
    pins = versions.pinned_versions()
    assert pins["KUBE_NETWORK_POLICIES_VERSION"] == versions.KUBE_NETWORK_POLICIES == "0.8.0"
    assert pins["PAUSE_VERSION"] == versions.PAUSE
    assert binaries.COMPONENTS["kube-network-policies"].cache_folder == "kube-network-policies-v0.8.0"
    assert binaries.COMPONENTS["pause"].cache_folder == f"pause-v{versions.PAUSE}"
    env = tmp_path / "versions.env"
    env.write_text("# comment\n\nKUBE_NETWORK_POLICIES_VERSION=0.8.0\n PAUSE_VERSION = 3.10.1 \n")
    assert versions.pinned_versions(env) == {"KUBE_NETWORK_POLICIES_VERSION": "0.8.0", "PAUSE_VERSION": "3.10.1"}
    env.write_text("PAUSE_VERSION\n")
    with pytest.raises(ValueError, match="malformed"):
        versions.pinned_versions(env)


def test_staging_modules_are_read_from_the_replace_lines() -> None:
    go_mod = (
        "replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/kubelet => ./staging/src/k8s.io/kubelet\n)\n"
    )
    assert binaries.staging_modules(go_mod) == ["k8s.io/api", "k8s.io/kubelet"]


def _executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_find_binary_looks_in_each_components_version_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSCONTOUR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    assert binaries.find_binary("pause") is None
    _executable(tmp_path / f"pause-v{versions.PAUSE}" / "pause")
    _executable(tmp_path / f"kubernetes-v{versions.KUBERNETES}" / "agnhost")
    assert binaries.find_binary("pause") == tmp_path / f"pause-v{versions.PAUSE}" / "pause"
    assert binaries.find_binary("agnhost") == tmp_path / f"kubernetes-v{versions.KUBERNETES}" / "agnhost"
    assert binaries.find_binary("kubelet") is None


def test_ensure_binaries_builds_only_the_missing_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAOSCONTOUR_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    folder = tmp_path / f"kubernetes-v{versions.KUBERNETES}"
    _executable(folder / "kubelet")
    calls: list[tuple[str, tuple[str, ...]]] = []

    def fake_build(
        component: str, version: str, wanted: Sequence[str], work: Path, target: Path, progress: builds.Progress
    ) -> None:
        calls.append((component, tuple(wanted)))
        assert target == folder
        for name in wanted:
            _executable(target / name)

    monkeypatch.setattr(builds, "build", fake_build)
    found = binaries.ensure_binaries(["kubelet", "kube-proxy", "agnhost"], progress=lambda _m: None)
    assert calls == [("kubernetes", ("kube-proxy", "agnhost"))]
    assert found["kubelet"] == folder / "kubelet"
    assert found["agnhost"] == folder / "agnhost"


def test_go_install_names_kube_network_policies_after_its_component(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []

    def fake_compile(
        cmd: Sequence[str], cwd: Path, what: str, total: int | None, progress: builds.Progress, **env: str
    ) -> None:
        commands.append(list(cmd))
        assert env["GOBIN"] == str(tmp_path)
        (tmp_path / "cmd").write_text("binary")

    monkeypatch.setattr(gotool, "compile_with_progress", fake_compile)
    builds._BUILDERS["kube-network-policies"]("go", tmp_path, tmp_path, "0.8.0", ["kube-network-policies"], print)
    assert commands[0][-1] == "sigs.k8s.io/kube-network-policies/cmd@v0.8.0"
    assert (tmp_path / "kube-network-policies").read_text() == "binary"
    assert not (tmp_path / "cmd").exists()


def test_pause_without_gcc_says_which_debian_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builds.shutil, "which", lambda name: None if name == "gcc" else f"/usr/bin/{name}")
    with pytest.raises(builds.BuildFailed, match="apt-get install gcc libc6-dev"):
        builds.build("pause", versions.PAUSE, ["pause"], tmp_path / "work", tmp_path / "pause", lambda _m: None)
    assert not os.path.exists(tmp_path / "pause" / "pause")


def test_unknown_component_has_no_builder(tmp_path: Path) -> None:
    with pytest.raises(builds.BuildFailed, match="no builder"):
        builds.build("nope", "1.0.0", ["nope"], tmp_path, tmp_path, lambda _m: None)


def test_the_collector_manifest_names_core_components_at_the_pinned_release(tmp_path: Path) -> None:
    manifest = builds.collector_manifest(versions.OTELCOL, tmp_path / "src")
    assert manifest["dist"]["name"] == "otelcol"
    assert manifest["dist"]["version"] == versions.OTELCOL
    assert manifest["dist"]["output_path"] == str(tmp_path / "src")
    modules = [m["gomod"] for kind in ("receivers", "processors", "exporters") for m in manifest[kind]]
    assert modules == [
        f"go.opentelemetry.io/collector/receiver/otlpreceiver v{versions.OTELCOL}",
        f"go.opentelemetry.io/collector/processor/batchprocessor v{versions.OTELCOL}",
        f"go.opentelemetry.io/collector/exporter/debugexporter v{versions.OTELCOL}",
    ]
    # No contrib module, and no providers or telemetry of our own: the builder adds its own at its matching release.
    assert not any("contrib" in m for m in modules)
    assert set(manifest) == {"dist", "receivers", "processors", "exporters"}


def test_the_collector_is_built_with_its_builder_from_a_generated_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[tuple[list[str], Path, dict[str, str]]] = []

    def fake_compile(
        cmd: Sequence[str],
        cwd: Path,
        what: str,
        total: int | None,
        progress: builds.Progress,
        *,
        counts_packages: bool = True,
        **env: str,
    ) -> None:
        commands.append((list(cmd), cwd, env))

    def fake_run(cmd: Sequence[str], cwd: Path, what: str, **env: str) -> str:
        assert env == {"GOTOOLCHAIN": "local"}
        return "fmt\nos\n"

    monkeypatch.setattr(gotool, "compile_with_progress", fake_compile)
    monkeypatch.setattr(gotool, "run", fake_run)
    out = tmp_path / "out"
    builds._BUILDERS["otelcol"]("go", tmp_path, out, "0.165.0", ["otelcol"], lambda _m: None)
    install, builder, compile_ = commands
    assert install[0][-1] == "go.opentelemetry.io/collector/cmd/builder@v0.165.0"
    assert install[2] == {"GOBIN": str(tmp_path / "bin"), "GOTOOLCHAIN": "local"}
    assert builder[0] == [
        str(tmp_path / "bin" / "builder"),
        f"--config={tmp_path / 'manifest.yaml'}",
        "--skip-compilation",
    ]
    assert builder[2] == {"GOTOOLCHAIN": "local"}
    written = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    assert written == builds.collector_manifest("0.165.0", tmp_path / "src")
    # The generated sources are compiled with `go build -v`, so the build reports its progress like the others.
    assert compile_[0][:3] == ["go", "build", "-v"]
    assert compile_[0][compile_[0].index("-o") + 1] == str(out / "otelcol")
    assert compile_[1] == tmp_path / "src"


def test_the_collector_is_a_pinned_component_in_the_cache() -> None:
    assert versions.pinned_versions()["OTELCOL_VERSION"] == versions.OTELCOL
    assert binaries.COMPONENTS["otelcol"].binaries == ("otelcol",)
    assert binaries.COMPONENTS["otelcol"].cache_folder == f"otelcol-v{versions.OTELCOL}"


PLUGIN_CFG = """# Directives are registered in the order they should be executed.
#
# <plugin-name>:<package-name>
# <plugin-name>:<fully-qualified-package-name>

root:root
cache:cache
prometheus:metrics
errors:errors
on:github.com/coredns/caddy/onevent
kubernetes:kubernetes
"""


def test_plugin_cfg_is_read_as_coredns_reads_it(tmp_path: Path) -> None:
    for folder in ("root", "cache", "metrics", "errors", "kubernetes"):
        (tmp_path / "plugin" / folder).mkdir(parents=True)
    plugin = "github.com/coredns/coredns/plugin/"
    assert corednsbuild.plugin_cfg_entries(PLUGIN_CFG, tmp_path) == [
        ("root", plugin + "root"),
        ("cache", plugin + "cache"),
        ("prometheus", plugin + "metrics"),  # the directive is not always its package's folder
        ("errors", plugin + "errors"),
        ("on", "github.com/coredns/caddy/onevent"),  # no such folder: an import path of its own
        ("kubernetes", plugin + "kubernetes"),
    ]


def test_coredns_directives_keep_plugin_cfgs_order_not_the_wanted_ones() -> None:
    entries = corednsbuild.plugin_cfg_entries(PLUGIN_CFG)
    chosen = corednsbuild.directives(entries, ["kubernetes", "errors", "cache", "prometheus"])
    assert [name for name, _ in chosen] == ["cache", "prometheus", "errors", "kubernetes"]
    with pytest.raises(builds.BuildFailed, match="no plugin route53"):
        corednsbuild.directives(entries, ["errors", "route53"])


def test_coredns_main_imports_only_the_chosen_plugins_and_sets_their_order() -> None:
    chosen = corednsbuild.directives(corednsbuild.plugin_cfg_entries(PLUGIN_CFG), ["kubernetes", "prometheus"])
    main = corednsbuild.main_go(chosen)
    imports = [line.strip() for line in main.splitlines() if line.strip().startswith('_ "')]
    assert imports == [
        '_ "github.com/coredns/coredns/plugin/kubernetes"',
        '_ "github.com/coredns/coredns/plugin/metrics"',
    ]
    assert '"github.com/coredns/coredns/core/dnsserver"' in main
    assert 'dnsserver.Directives = []string{\n\t\t"prometheus",\n\t\t"kubernetes",\n\t}' in main
    assert main.index("dnsserver.Directives") < main.index("coremain.Run()")


def test_coredns_is_built_from_a_wrapper_module_with_the_corefiles_plugins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tmp_path / "coredns@v1.15.0"
    for folder in ("root", "cache", "metrics", "errors", "kubernetes"):
        (module / "plugin" / folder).mkdir(parents=True)
    everything = "\n".join(f"{name}:{name}" for name in ("health", "ready", "loadbalance", "route53", "etcd"))
    (module / "plugin.cfg").write_text(PLUGIN_CFG + everything + "\n")
    for folder in ("health", "ready", "loadbalance", "route53", "etcd"):
        (module / "plugin" / folder).mkdir()
    runs: list[list[str]] = []
    compiles: list[tuple[list[str], int | None]] = []

    def fake_run(cmd: Sequence[str], cwd: Path, what: str, **env: str) -> str:
        runs.append(list(cmd))
        return "fmt\nos\n"

    def fake_compile(
        cmd: Sequence[str], cwd: Path, what: str, total: int | None, progress: builds.Progress, **env: str
    ) -> None:
        compiles.append((list(cmd), total))

    monkeypatch.setattr(gotool, "download", lambda go, module_, version, cwd: {"Dir": str(module)})
    monkeypatch.setattr(gotool, "run", fake_run)
    monkeypatch.setattr(gotool, "compile_with_progress", fake_compile)
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    builds._BUILDERS["coredns"]("go", work, out, "1.15.0", ["coredns"], lambda _m: None)
    assert runs[0] == ["go", "get", "github.com/coredns/coredns@v1.15.0"]
    assert runs[1] == ["go", "mod", "tidy"]
    main = (work / "main.go").read_text()
    assert "route53" not in main and "etcd" not in main
    directives = main.split("dnsserver.Directives = []string{", 1)[1].split("}", 1)[0].split()
    # The Corefile's seven, in this plugin.cfg's order (root, cache, prometheus, errors, on, kubernetes, health...).
    assert [d.strip('",') for d in directives] == [
        "cache",
        "prometheus",
        "errors",
        "kubernetes",
        "health",
        "ready",
        "loadbalance",
    ]
    ((cmd, total),) = compiles
    assert cmd[:3] == ["go", "build", "-v"] and cmd[cmd.index("-o") + 1] == str(out / "coredns")
    assert total == 2


def test_the_coredns_cache_folder_names_its_plugin_set_not_the_full_build() -> None:
    folder = binaries.COMPONENTS["coredns"].cache_folder
    assert folder.startswith(f"coredns-v{versions.COREDNS}-plugins-")
    assert folder != f"coredns-v{versions.COREDNS}"  # the old full build, `go install`-ed, is not reused
    assert "coredns" not in builds._GO_INSTALL_PACKAGES
    assert corednsbuild.cache_recipe(reversed(dns.COREDNS_PLUGINS)) == corednsbuild.CACHE_RECIPE
    assert corednsbuild.cache_recipe([*dns.COREDNS_PLUGINS, "forward"]) != corednsbuild.CACHE_RECIPE
