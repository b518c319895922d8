"""The game-day image (``deploy/Dockerfile``'s), built for the real node without Docker or a registry.

A CPython relocated to ``/usr/local`` (the interpreter given, by default the running one), the project's wheel
installed with its ``report`` extra by pip, the console scripts rewritten for ``/usr/local/bin/python3``, a POSIX
shell (the host's ``/bin/sh``) and the few programs the CronJob's script runs, each with its shared libraries; the
user, environment, working directory and command are read from the Dockerfile, the reference from the CronJob.
Bytecode is compiled hash-based (unchecked), since the layer's mtimes are all 0. The archive is cached under a
key of its inputs (project files, interpreter, host tools, Dockerfile, reference), so nothing changed means no build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path

import yaml

from chaoscontour_sandbox import images
from chaoscontour_sandbox.images import Directory, Entry, File, ImageSpec, Symlink

__all__ = ["DockerfileConfig", "build_runner_image", "gameday_reference", "parse_dockerfile", "runner_spec"]

EXTRAS = "report"
# What the Dockerfile inherits from python:3.13-slim's own ENV lines.
BASE_ENV = ("PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
# The external commands of the CronJob's script (sh's builtins do the rest) and of a person debugging it.
TOOLS = {"/bin/sh": "sh", "/bin/cat": "cat", "/bin/date": "date", "/bin/ls": "ls", "/bin/mkdir": "mkdir",
         "/bin/rm": "rm", "/usr/bin/find": "find", "/usr/bin/env": "env"}  # fmt: skip
PROJECT_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md")  # besides chaoscontour/
STDLIB_SKIP = {"test", "lib2to3", "idlelib", "tkinter", "turtledemo", "ensurepip", "site-packages", "__pycache__"}
LAYOUT = "1"  # part of the cache key: bump when what goes into the image changes
_PROBE = (
    "import json, os, sys, sysconfig; print(json.dumps({'version': sys.version, 'short': '%d.%d' % "
    "sys.version_info[:2], 'binary': os.path.realpath(sys._base_executable), 'stdlib': sysconfig.get_path('stdlib')}))"
)
_SCRIPT = "#!/usr/local/bin/python3\nimport sys\nfrom {module} import {head}\n\nsys.exit({attr}())\n"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class DockerfileConfig:
    """The container defaults a Dockerfile's last stage sets itself (not those of its base image)."""

    env: tuple[str, ...] = ()
    user: str = ""
    workdir: str = "/"
    cmd: tuple[str, ...] = ()


def parse_dockerfile(text: str) -> DockerfileConfig:
    """ENV (both forms, quoted values), USER, WORKDIR and CMD (exec or shell form) of the last stage; continuation
    lines are joined and comment lines inside them dropped, as Docker does. Variables (``$X``) are refused."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or (current and not raw.strip()):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
        else:
            lines.append(current + raw)
            current = ""
    lines.append(current)
    env: dict[str, str] = {}
    user, workdir, cmd = "", "/", ()
    for line in filter(None, (item.strip() for item in lines)):
        instruction, _, rest = line.replace("\t", " ").partition(" ")
        instruction, rest = instruction.upper(), rest.strip()
        if instruction in ("ENV", "USER", "WORKDIR") and "$" in rest:
            raise ValueError(f"variables are not supported: {line!r}")
        if instruction == "FROM":  # a new stage starts from its base's defaults, which are not read here
            env, user, workdir, cmd = {}, "", "/", ()
        elif instruction == "ENV":
            words = shlex.split(rest)
            if "=" not in words[0]:  # the legacy form: ENV KEY the value
                words = [f"{words[0]}={rest.partition(' ')[2].strip()}"]
            env |= {key: value for key, _, value in (word.partition("=") for word in words)}
        elif instruction == "USER":
            user = rest
        elif instruction == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, rest))
        elif instruction == "CMD":
            cmd = tuple(json.loads(rest)) if rest.startswith("[") else ("/bin/sh", "-c", rest)
    return DockerfileConfig(tuple(f"{key}={value}" for key, value in env.items()), user, workdir, cmd)


def gameday_reference(cronjob: Path) -> str:
    """The image the game-day CronJob's container runs (``chaoscontour-gameday:0.1.0``)."""
    document = yaml.safe_load(cronjob.read_text())
    return str(document["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"])


def _run(args: list[str], what: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {(result.stdout + result.stderr).strip()[-3000:]}")
    return result.stdout


def _libraries(objects: Iterable[Path], inside: Path) -> list[Entry]:
    """The shared libraries of the ELF ``objects`` (those not found under ``inside``), where the image's loader
    looks without an ld.so.cache: system ones at their host path, others (libpython) in /usr/local/lib with a link
    from libc's directory."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        found = {lib for libs in pool.map(images.shared_libraries, objects) for lib in libs}
    found = {lib for lib in found if not lib.is_relative_to(inside)}
    libc = next((lib.parent for lib in found if lib.name == "libc.so.6"), Path("/lib/x86_64-linux-gnu"))
    system = {Path("/lib"), Path("/usr/lib"), Path("/lib64"), Path("/lib") / libc.name, Path("/usr/lib") / libc.name}
    entries: list[Entry] = []
    for lib in sorted(found):
        if lib.parent in system:
            entries.append(File(str(lib), source=lib.resolve()))
        else:
            entries.append(File(f"/usr/local/lib/{lib.name}", source=lib.resolve()))
            entries.append(Symlink(f"{libc}/{lib.name}", f"/usr/local/lib/{lib.name}"))
    return entries


def _tools() -> dict[str, Path]:
    """The host's programs for :data:`TOOLS`, by their path in the image."""
    found = {where: shutil.which(name) for where, name in TOOLS.items()}
    if missing := sorted(TOOLS[where] for where, path in found.items() if path is None):
        raise RuntimeError(f"the host lacks {', '.join(missing)}, which the game-day script runs")
    return {where: Path(path).resolve() for where, path in found.items() if path}


def _is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as handle:
        return handle.read(4) == b"\x7fELF"


def _tree(stage: Path) -> list[Entry]:
    """Every file and link under ``stage``, at its path relative to it; modes normalised to 0o755/0o644."""
    entries: list[Entry] = []
    for directory, _, names in os.walk(stage):
        for name in names:
            path = Path(directory, name)
            where = "/" + path.relative_to(stage).as_posix()
            if path.is_symlink():
                entries.append(Symlink(where, os.readlink(path)))
            else:
                entries.append(File(where, source=path, mode=0o755 if path.stat().st_mode & 0o100 else 0o644))
    return entries


def _project_files(project_dir: Path) -> list[Path]:
    """The files the wheel is built from, relative to ``project_dir``, sorted."""
    files = [Path(name) for name in PROJECT_FILES if (project_dir / name).is_file()]
    for directory, dirs, names in os.walk(project_dir / "chaoscontour"):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files += [Path(directory, n).relative_to(project_dir) for n in sorted(names) if not n.endswith(".pyc")]
    return files


def runner_spec(stage: Path, binary: Path, short: str, config: DockerfileConfig, reference: str) -> ImageSpec:
    """The image of ``stage`` (its /usr/local tree), the interpreter ``binary`` (Python ``short``), the tools and
    the libraries of all of them, with the Dockerfile's defaults ``config``, named ``reference``."""
    bin_dir, tools = "/usr/local/bin", _tools()
    elves = [binary, *tools.values(), *(path for path in stage.rglob("*.so*") if _is_elf(path))]
    passwd = b"root:x:0:0:root:/root:/bin/sh\nchaos:x:10001:10001::/home/chaos:/bin/sh\n"
    entries: list[Entry] = [
        *_tree(stage),
        File(f"{bin_dir}/python{short}", source=binary),
        Symlink(f"{bin_dir}/python3", f"python{short}"),
        Symlink(f"{bin_dir}/python", "python3"),
        *(File(where, source=source) for where, source in tools.items()),
        *_libraries(elves, stage),
        File("/etc/passwd", data=passwd, mode=0o644),
        File("/etc/group", data=b"root:x:0:\nchaos:x:10001:\n", mode=0o644),
        Directory("/root", mode=0o700),
        Directory("/home/chaos", uid=10001, gid=10001),
        Directory("/tmp", mode=0o1777),
    ]
    return ImageSpec(reference, tuple(entries), cmd=config.cmd, env=BASE_ENV + config.env,
                     workdir=config.workdir, user=config.user)  # fmt: skip


def build_runner_image(
    project_dir: Path, cache_dir: Path, python: Path | None = None, progress: Progress | None = None
) -> Path:
    """The OCI archive of the game-day image, built from ``project_dir`` with ``python`` (default: the running
    interpreter) or taken from ``cache_dir`` when nothing it is made of changed. Needs PyPI (pip) for a build."""
    say = progress or (lambda message: None)
    python = python or Path(sys.executable)
    info = json.loads(_run([str(python), "-c", _PROBE], f"{python} (probing the interpreter)"))
    binary, short, stdlib = Path(info["binary"]), info["short"], Path(info["stdlib"])
    config = parse_dockerfile((project_dir / "deploy" / "Dockerfile").read_text())
    reference = gameday_reference(project_dir / "deploy" / "cronjob.yaml")
    files = {relative: (project_dir / relative).read_bytes() for relative in _project_files(project_dir)}
    key = hashlib.sha256(json.dumps([LAYOUT, EXTRAS, info, sorted(TOOLS.items()), reference, repr(config)]).encode())
    for host in [binary, *_tools().values()]:  # a host upgrade changes them
        key.update(f"{host}:{host.stat().st_size}:{host.stat().st_mtime_ns}\n".encode())
    for relative, content in files.items():
        key.update(f"{relative.as_posix()}\0".encode() + hashlib.sha256(content).digest())
    out = cache_dir / f"chaoscontour-gameday-{key.hexdigest()[:16]}.oci.tar"
    if out.is_file():
        say(f"runner image: cached {out} ({out.stat().st_size / 1e6:.0f} MB), nothing changed")
        return out
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".runner-", dir=cache_dir) as tmp:
        work, stage = Path(tmp), Path(tmp, "rootfs")
        for relative, content in files.items():  # a copy: setuptools writes build/ and egg-info/ beside sources
            (work / "src" / relative).parent.mkdir(parents=True, exist_ok=True)
            (work / "src" / relative).write_bytes(content)
        started = time.monotonic()
        pip = [str(python), "-m", "pip", "--disable-pip-version-check", "--no-input"]
        _run([*pip, "wheel", "-q", "--no-deps", "-w", str(work / "wheel"), str(work / "src")], "pip wheel")
        (wheel,) = (work / "wheel").glob("*.whl")
        say(f"runner image: built {wheel.name} in {time.monotonic() - started:.1f} s")
        lib = stage / f"usr/local/lib/python{short}"
        shutil.copytree(stdlib, lib, symlinks=True, ignore=partial(_stdlib_skipped, str(stdlib)))
        started, site = time.monotonic(), lib / "site-packages"
        _run([*pip, "install", "-q", "--no-compile", "--no-warn-script-location", "--target", str(site),
              f"{wheel}[{EXTRAS}]"], "pip install")  # fmt: skip
        for leftover in ("bin", "share"):  # pip's scripts, whose shebang is the host's python; man pages
            shutil.rmtree(site / leftover, ignore_errors=True)
        (stage / "usr/local/bin").mkdir(parents=True)
        distributions = metadata.distributions(path=[str(site)])
        for ep in (ep for dist in distributions for ep in dist.entry_points.select(group="console_scripts")):
            script = stage / "usr/local/bin" / ep.name
            script.write_text(_SCRIPT.format(module=ep.module, head=ep.attr.split(".")[0], attr=ep.attr))
            script.chmod(0o755)
        say(f"runner image: pip installed {wheel.name}[{EXTRAS}] in {time.monotonic() - started:.1f} s")
        started = time.monotonic()  # hash-based bytecode: the layer's mtimes are all 0, the image is read-only
        _run([str(python), "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", "unchecked-hash", "-s",
              str(stage), "-p", "/", str(lib)], "compileall")  # fmt: skip
        say(f"runner image: compiled the bytecode in {time.monotonic() - started:.1f} s")
        started = time.monotonic()
        images.write_archive(runner_spec(stage, binary, short, config, reference), out)
    for old in cache_dir.glob("chaoscontour-gameday-*.oci.tar"):
        if old != out:
            old.unlink(missing_ok=True)
    say(f"runner image: wrote {out} ({out.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - started:.1f} s")
    return out


def _stdlib_skipped(stdlib: str, directory: str, names: list[str]) -> set[str]:
    """copytree's filter: no tests (lib2to3's are Python 2), IDLE, Tk, pip's bootstrap, bytecode, build files,
    the host's site-packages."""
    top, dynload = directory == stdlib, directory.endswith("/lib-dynload")
    tk_and_tests = ("_tkinter", "_test", "_xxtestfuzz", "xx")  # extension modules of lib-dynload
    return {n for n in names if n in ("__pycache__", "tests") or (top and (n in STDLIB_SKIP or n.startswith("config-")))
            or (dynload and n.startswith(tk_and_tests))}  # fmt: skip
