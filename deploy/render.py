#!/usr/bin/env python3
"""Render the ConfigMap that carries the experiments to the game-day CronJob, from ``experiments/*.json``.

The experiments are never copied by hand into a manifest: render and apply them together, so the cluster runs
exactly what the repository holds::

    python deploy/render.py | kubectl apply -f -
    python deploy/render.py --out deploy/configmap-experiments.yaml   # to review or commit the rendered file

Each ``<name>.json`` becomes the key ``<name>.json``; the CronJob mounts them under ``/experiments``. The files are
checked to be Chaos Toolkit experiments (JSON objects with a ``title`` and a ``method``) and to fit in a ConfigMap.
Needs only the standard library and PyYAML (a dependency of the kubernetes client).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

NAME = "chaoscontour-experiments"
NAMESPACE = "projectcontour"
# The API server refuses a ConfigMap whose data exceeds 1 MiB.
MAX_BYTES = 1024 * 1024
REPO = Path(__file__).resolve().parent.parent


class RenderError(ValueError):
    pass


def experiment_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise RenderError(f"no experiments (*.json) in {directory}")
    return files


def render_configmap(directory: Path, name: str = NAME, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The ConfigMap as a mapping, one key per experiment file, the text kept byte for byte."""
    data: dict[str, str] = {}
    digest = hashlib.sha256()
    for path in experiment_files(directory):
        text = path.read_text(encoding="utf-8")
        try:
            experiment = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RenderError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(experiment, dict) or "title" not in experiment or "method" not in experiment:
            raise RenderError(f"{path}: not a Chaos Toolkit experiment (needs a 'title' and a 'method')")
        data[path.name] = text
        digest.update(path.name.encode() + b"\0" + text.encode() + b"\0")
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > MAX_BYTES:
        raise RenderError(f"the experiments take {size} bytes; a ConfigMap holds at most {MAX_BYTES}")
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "chaoscontour", "app.kubernetes.io/component": "game-day"},
            # Which experiments a past game day ran: compare with `python deploy/render.py` of a commit.
            "annotations": {"chaoscontour/experiments-sha256": digest.hexdigest()},
        },
        "data": data,
    }


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (the experiments) as literal blocks, so the rendered file reads like the JSON."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(configmap: dict[str, Any]) -> str:
    header = "# Rendered by deploy/render.py from experiments/*.json; do not edit by hand.\n"
    text = yaml.dump(configmap, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000)
    if yaml.safe_load(text) != configmap:  # a value PyYAML cannot keep exact in a block (e.g. trailing spaces)
        text = yaml.safe_dump(configmap, sort_keys=False, default_flow_style=False, width=1000)
    return header + text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--experiments", type=Path, default=REPO / "experiments", help="directory of *.json")
    parser.add_argument("--name", default=NAME)
    parser.add_argument("--namespace", default=NAMESPACE)
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        text = to_yaml(render_configmap(args.experiments, args.name, args.namespace))
    except (RenderError, OSError) as exc:
        print(f"render.py: error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
