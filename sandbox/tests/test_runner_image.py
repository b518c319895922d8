"""The game-day image, built for real from this checkout (pip, PyPI) and run with chroot as the CronJob would.

One build per module (a minute or two cold), from a snapshot of the project so that edits made meanwhile do not
defeat the cache check; the image's rootfs is unpacked once and each command runs in it as uid 10001 with the
image's environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
import yaml

from chaoscontour_sandbox import images, runnerimage
from chaoscontour_sandbox.runnerimage import DockerfileConfig, parse_dockerfile

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE, CRONJOB = ROOT / "deploy" / "Dockerfile", ROOT / "deploy" / "cronjob.yaml"
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("chroot") is None, reason="running the image's rootfs needs root and chroot"
)


def test_dockerfile_parser_joins_continuations_and_reads_the_last_stage() -> None:
    text = (
        "FROM python:3.13-slim AS build\nENV FROM_THE_FIRST_STAGE=1\nUSER nobody\n"
        "FROM python:3.13-slim\n"
        "# escape=\\\n"
        "ENV HOME=/tmp \\\n"
        "    # a comment inside the instruction is dropped\n"
        '    MPLCONFIGDIR="/tmp/with space" \\\n'
        "\n"
        "    PYTHONUNBUFFERED=1\n"
        "ENV LEGACY the whole value\n"
        "ENV HOME=/tmp/again\n"
        "USER 10001\nWORKDIR /tmp\nworkdir sub\n"
        'CMD ["chaos", "--help"]\n'
    )
    assert parse_dockerfile(text) == DockerfileConfig(
        env=("HOME=/tmp/again", "MPLCONFIGDIR=/tmp/with space", "PYTHONUNBUFFERED=1", "LEGACY=the whole value"),
        user="10001",
        workdir="/tmp/sub",
        cmd=("chaos", "--help"),
    )
    assert parse_dockerfile("FROM x\nCMD chaos --help\n").cmd == ("/bin/sh", "-c", "chaos --help")
    with pytest.raises(ValueError, match="variables"):
        parse_dockerfile("FROM x\nENV A=$B\n")


def test_the_project_dockerfile_reads_as_written() -> None:
    assert parse_dockerfile(DOCKERFILE.read_text()) == DockerfileConfig(
        env=("HOME=/tmp", "MPLCONFIGDIR=/tmp/matplotlib", "PYTHONUNBUFFERED=1", "CHAOSTOOLKIT_IN_POD=true"),
        user="10001",
        workdir="/tmp",
        cmd=("chaos", "--help"),
    )
    assert runnerimage.gameday_reference(CRONJOB) == "chaoscontour-gameday:0.1.0"


@dataclass
class Built:
    archive: Path
    cold: list[str]
    cold_s: float
    again: Path
    cached: list[str]
    cached_s: float
    config: dict[str, Any]
    index: dict[str, Any]
    rootfs: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    project = tmp_path_factory.mktemp("project")
    for relative in [*runnerimage._project_files(ROOT), Path("deploy/Dockerfile"), Path("deploy/cronjob.yaml")]:
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, project / relative)
    cache = tmp_path_factory.mktemp("cache")
    cold: list[str] = []
    cached: list[str] = []
    started = time.monotonic()
    archive = runnerimage.build_runner_image(project, cache, progress=cold.append)
    cold_s, started = time.monotonic() - started, time.monotonic()
    again = runnerimage.build_runner_image(project, cache, progress=cached.append)
    cached_s = time.monotonic() - started
    rootfs = tmp_path_factory.mktemp("rootfs")
    rootfs.chmod(0o755)  # the container's /, which uid 10001 must traverse
    with tarfile.open(archive) as layout:  # index.json -> manifest -> config and the one layer, by digest

        def member(name: str) -> IO[bytes]:
            found = layout.extractfile(name)
            assert found is not None, name
            return found

        blob = lambda digest: member(f"blobs/sha256/{digest.removeprefix('sha256:')}")  # noqa: E731
        index = json.load(member("index.json"))
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        config = json.load(blob(manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        with tarfile.open(fileobj=blob(layer["digest"]), mode="r|") as tar:
            tar.extractall(rootfs, filter="fully_trusted", numeric_owner=True)
    print(f"\nrunner image: {archive.stat().st_size / 1e6:.0f} MB, cold {cold_s:.1f} s, cached {cached_s:.2f} s")
    return Built(archive, cold, cold_s, again, cached, cached_s, config, index, rootfs)


def test_the_archive_is_named_as_the_cronjob_asks(built: Built) -> None:
    (descriptor,) = built.index["manifests"]
    expected = images.qualified_reference(runnerimage.gameday_reference(CRONJOB))
    assert expected == "docker.io/library/chaoscontour-gameday:0.1.0"
    assert descriptor["annotations"][images.CONTAINERD_NAME] == expected


def test_the_config_is_the_dockerfiles(built: Built) -> None:
    dockerfile = parse_dockerfile(DOCKERFILE.read_text())
    run = built.config["config"]
    assert run["Env"] == [*runnerimage.BASE_ENV, *dockerfile.env]
    assert (run["User"], run["WorkingDir"], run["Cmd"]) == (dockerfile.user, dockerfile.workdir, list(dockerfile.cmd))
    assert "Entrypoint" not in run  # python:3.13-slim has none, the Dockerfile sets none


def test_the_layout_is_the_python_images(built: Built) -> None:
    root = built.rootfs
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert (root / "home/chaos").stat().st_uid == 10001
    assert "chaos:x:10001:10001::/home/chaos:/bin/sh" in (root / "etc/passwd").read_text().splitlines()
    assert "chaos:x:10001:" in (root / "etc/group").read_text().splitlines()
    stdlib = next((root / "usr/local/lib").glob("python3.*"))
    assert (stdlib / "os.py").is_file() and (stdlib / "site-packages/chaoscontour/cli.py").is_file()
    for gone in (
        "test",
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "site-packages/bin",
        "site-packages/chaoscontour_sandbox",
    ):
        assert not (stdlib / gone).exists(), gone
    for script in ("chaos", "chaoscontour"):
        assert (root / "usr/local/bin" / script).read_text().startswith("#!/usr/local/bin/python3\n")
    assert built.archive.stat().st_size < 600e6  # 420 MB when written: a bigger image is worth a look


def run(built: Built, *command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in the image's rootfs as the image's user, with the image's environment (and the CronJob's)."""
    env = dict(item.split("=", 1) for item in built.config["config"]["Env"])
    env |= {"EXPERIMENTS": "", "JOURNAL_RETENTION_DAYS": "30"}
    user = built.config["config"]["User"]
    args = ["chroot", f"--userspec={user}:{user}", str(built.rootfs), *command]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)


@needs_root
def test_chaos_runs_in_the_image(built: Built) -> None:
    result = run(built, "/usr/local/bin/chaos", "--version")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("chaos, version ")


@needs_root
def test_the_packages_import_from_the_image(built: Built) -> None:
    code = "import chaoscontour, chaosk8s, matplotlib, ssl, sys; print(sys.prefix, matplotlib.get_backend())"
    result = run(built, "/usr/local/bin/python3", "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "/usr/local"


@needs_root
def test_the_shell_and_its_tools(built: Built) -> None:
    result = run(built, "/bin/sh", "-c", "date; ls /")
    assert result.returncode == 0, result.stderr
    assert {"bin", "etc", "home", "lib", "tmp", "usr"} <= set(result.stdout.split())


@needs_root
def test_the_cronjobs_script_runs_in_the_image(built: Built) -> None:
    """The game-day script itself, with no experiments: sh, date, mkdir, find and rm with it, as uid 10001."""
    document = yaml.safe_load(CRONJOB.read_text())
    (container,) = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    journals = built.rootfs / "journals"
    (journals / "old").mkdir(parents=True)
    (journals / "recent").mkdir()
    os.utime(journals / "old", (time.time() - 40 * 86400,) * 2)
    for path in (journals, journals / "old", journals / "recent"):
        os.chown(path, 10001, 10001)
    result = run(built, *container["command"], *container["args"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not found" not in result.stderr and " PASSED; files in /journals/" in result.stdout
    assert sorted(p.name for p in journals.iterdir() if p.name != "recent")[0].endswith("Z")  # this run's dir
    assert not (journals / "old").exists() and (journals / "recent").exists()
    assert run(built, "/bin/cat", "/etc/group").stdout.startswith("root:x:0:")


def test_a_second_build_with_nothing_changed_is_the_cached_archive(built: Built) -> None:
    steps = ("built ", "pip installed ", "compiled ", "wrote ")
    assert [step for step in steps if any(step in message for message in built.cold)] == list(steps)
    assert built.again == built.archive
    assert len(built.cached) == 1 and "cached" in built.cached[0]
    assert not any(step in built.cached[0] for step in steps)
