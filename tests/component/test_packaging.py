"""What users `pip install` is the extension alone: the sandbox is its own distribution, chaoscontour-sandbox.

Both wheels are built from the repository as pip builds them (an isolated build with setuptools from the package
index, or pip's cache), and their file lists and metadata are read: the extension's wheel carries no sandbox module,
no pinned-versions file and no sandbox command; the sandbox's wheel carries them and requires the extension.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from chaoscontour.cli import main as cli_main
from tests.support.paths import ROOT


def _wheel(source: Path, out: Path) -> zipfile.ZipFile:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    return zipfile.ZipFile(wheel)


def _metadata(wheel: zipfile.ZipFile) -> tuple[list[str], str]:
    names = wheel.namelist()
    (meta,) = [n for n in names if n.endswith(".dist-info/METADATA")]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    requires = Parser().parsestr(wheel.read(meta).decode()).get_all("Requires-Dist") or []
    return requires, wheel.read(entry_points).decode()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, zipfile.ZipFile]:
    # Built from a copy: setuptools writes build/ and *.egg-info/ next to the sources it builds.
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheels")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("chaoscontour", "sandbox"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    return {"extension": _wheel(source, out / "extension"), "sandbox": _wheel(source / "sandbox", out / "sandbox")}


def test_the_extension_wheel_carries_no_sandbox(wheels: dict[str, zipfile.ZipFile]) -> None:
    names = wheels["extension"].namelist()
    assert "chaoscontour/__init__.py" in names and "chaoscontour/activities/network.py" in names
    assert [n for n in names if "sandbox" in n or n.endswith("versions.env")] == []
    requires, entry_points = _metadata(wheels["extension"])
    assert not any(r.lower().startswith("chaoscontour-sandbox") for r in requires), requires
    assert "chaoscontour = chaoscontour.cli:main" in entry_points and "sandbox" not in entry_points


def test_the_sandbox_wheel_carries_the_sandbox_its_versions_and_its_command(
    wheels: dict[str, zipfile.ZipFile],
) -> None:
    names = wheels["sandbox"].namelist()
    assert "chaoscontour_sandbox/versions.env" in names and "chaoscontour_sandbox/nodeplane.py" in names
    assert [n for n in names if n.startswith("chaoscontour/")] == []
    requires, entry_points = _metadata(wheels["sandbox"])
    assert "chaostoolkit-contour" in requires, requires
    assert "chaoscontour-sandbox = chaoscontour_sandbox.cli:main" in entry_points


def _sandbox_references(path: Path) -> list[str]:
    """Imports of chaoscontour_sandbox, and any string naming it (``importlib.import_module("...")``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if node.value.startswith("chaoscontour_sandbox") else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.startswith("chaoscontour_sandbox")]
    return found


def test_no_extension_module_imports_the_sandbox() -> None:
    modules = sorted((ROOT / "chaoscontour").rglob("*.py"))
    assert len(modules) > 30
    assert [ref for module in modules for ref in _sandbox_references(module)] == []


def test_the_old_sandbox_commands_say_where_they_went(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("sandbox", "binaries"):
        assert cli_main([command, "up"]) == 2
        err = capsys.readouterr().err
        assert "chaoscontour-sandbox" in err and "pip install -e ./sandbox" in err, err
