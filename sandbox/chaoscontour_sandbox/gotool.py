"""The Go toolchain as the builders of :mod:`chaoscontour_sandbox.builds` use it: ``go`` found on PATH, its
environment (static binaries: ``CGO_ENABLED=0``), a command run with its output's tail kept for the error, a
``go build -v`` run with a progress line every 10 s, a built binary installed atomically, and a module's folder in
the Go module cache (``go mod download -json``, through the Go module proxy).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "BuildFailed",
    "Progress",
    "compile_with_progress",
    "download",
    "go",
    "go_env",
    "install",
    "module_dir",
    "run",
]

Progress = Callable[[str], None]


class BuildFailed(RuntimeError):
    """The toolchain could not build a pinned binary; the message carries the tail of its output."""


def go() -> str:
    go = shutil.which("go")
    if not go:
        raise BuildFailed("the Go toolchain (`go`) is not on PATH; install Go 1.24+ to build the pinned binaries")
    return go


def go_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env["CGO_ENABLED"] = "0"
    return env


def run(cmd: Sequence[str], cwd: Path, what: str, **extra_env: str) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=go_env(**extra_env), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise BuildFailed(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


def compile_with_progress(
    cmd: Sequence[str],
    cwd: Path,
    what: str,
    total: int | None,
    progress: Progress,
    *,
    counts_packages: bool = True,
    **extra_env: str,
) -> None:
    """Run ``go build -v``-style ``cmd``, reporting every few seconds how many packages it has compiled (or, for a
    command that does not list them, ``counts_packages=False``, only that it still runs)."""
    started = time.monotonic()
    env = go_env(**extra_env)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    compiled = 0
    tail: list[str] = []
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(10.0):
            of = f"/{total}" if total else ""
            done_so_far = f"{compiled}{of} packages compiled" if counts_packages else "running"
            progress(f"  {what}: {done_so_far}, {time.monotonic() - started:.0f} s")

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


def build_main(go: str, work: Path, requirement: str, output: Path, progress: Progress) -> None:
    """Build the ``main`` package of the wrapper module in ``work`` (its go.mod and main.go written by the caller)
    against ``requirement`` (``module@vX.Y.Z``) into ``output``, with the package count as progress."""
    run([go, "get", requirement], work, "go get")
    run([go, "mod", "tidy"], work, "go mod tidy")
    deps = run([go, "list", "-deps", "."], work, "go list -deps").split()
    cmd = [go, "build", "-v", "-trimpath", "-ldflags", "-s -w", "-o", str(output), "."]
    compile_with_progress(cmd, work, f"go build {output.name}", len(deps), progress)


def install(built: Path, target: Path, wanted: Sequence[str], progress: Progress) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in wanted:
        staged = target / f".{name}.new"
        shutil.copy2(built / name, staged)
        staged.chmod(0o755)
        staged.replace(target / name)
        progress(f"  installed {target / name}")


def download(go: str, module: str, version: str, cwd: Path) -> dict[str, str]:
    """``go mod download -json MODULE@vVERSION``: the module's paths in the Go module cache (``Dir``, ``GoMod``...)."""
    out = run([go, "mod", "download", "-json", f"{module}@v{version}"], cwd, f"go mod download {module}@v{version}")
    info: dict[str, str] = json.loads(out)
    return info


def module_dir(module: str, version: str) -> Path:
    """The folder of ``module`` at ``version`` in the Go module cache, downloaded through the Go module proxy."""
    # An empty folder, so no go.mod around (a toolchain line, a workspace) can get in the way.
    with tempfile.TemporaryDirectory(prefix="chaoscontour-go-") as neutral:
        return Path(download(go(), module, version, Path(neutral))["Dir"])
