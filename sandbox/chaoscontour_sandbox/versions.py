"""Pinned versions of the binaries the sandbox builds or installs.

They live in ``versions.env`` beside this file so that shell scripts (``.ci/run``, the ``Makefile``) read the very
same pins; this module only parses that file.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ACTIONLINT",
    "CONTOUR",
    "COREDNS",
    "ENVOY",
    "ETCD",
    "KUBERNETES",
    "KUBE_NETWORK_POLICIES",
    "KUSTOMIZE",
    "OTELCOL",
    "PAUSE",
    "VERSIONS_FILE",
    "pinned_versions",
]

VERSIONS_FILE = Path(__file__).with_name("versions.env")


def pinned_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Return the ``KEY=VALUE`` pins of ``versions.env`` (comments and blank lines ignored)."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"{path}: malformed pin line {raw!r}; expected KEY=VALUE")
        pins[key.strip()] = value.strip()
    return pins


_PINS = pinned_versions()
KUBERNETES: str = _PINS["KUBERNETES_VERSION"]
ETCD: str = _PINS["ETCD_VERSION"]
CONTOUR: str = _PINS["CONTOUR_VERSION"]
ENVOY: str = _PINS["ENVOY_VERSION"]
COREDNS: str = _PINS["COREDNS_VERSION"]
KUBE_NETWORK_POLICIES: str = _PINS["KUBE_NETWORK_POLICIES_VERSION"]
PAUSE: str = _PINS["PAUSE_VERSION"]
KUSTOMIZE: str = _PINS["KUSTOMIZE_VERSION"]
ACTIONLINT: str = _PINS["ACTIONLINT_VERSION"]
OTELCOL: str = _PINS["OTELCOL_VERSION"]
