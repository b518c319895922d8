"""Build small OCI image archives, byte for byte reproducible, that ``ctr -n k8s.io images import`` loads.

The sandbox's real node runs containerd with no registry, so each image a manifest names must already be in
containerd's store under the exact reference the kubelet asks for. This module writes an OCI image layout tar
(``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) holding one image manifest with one uncompressed layer,
named through the index descriptor's annotations. Everything is deterministic (mtime 0, sorted entries, ids from
the entries, no ``created``), so the same inputs give the same digests and a rebuild is recognisably a no-op.

Limits, on purpose: one layer, no hard links, no ``name@sha256:`` references.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import posixpath
import re
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "DEFAULT_PATH", "Directory", "Entry", "File", "ImageSpec", "Symlink", "binary_with_libraries",
    "host_architecture", "image_blobs", "layer_tar", "qualified_reference", "shared_libraries", "write_archive",
]  # fmt: skip

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
# containerd's importer prefers its own annotation; the OCI one is the fallback other tools read.
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


def _check(path: str, mode: int = 0, uid: int = 0, gid: int = 0) -> None:
    # Refuse rather than normalise: two spellings of one path would defeat the duplicate check.
    if not path.startswith("/") or path == "/" or posixpath.normpath(path) != path or "\0" in path:
        raise ValueError(f"image path must be absolute and normalised, not the root: {path!r}")
    if not 0 <= mode <= 0o7777 or uid < 0 or gid < 0:
        raise ValueError(f"{path}: bad mode/uid/gid {oct(mode)} {uid}:{gid}")


@dataclass(frozen=True)
class File:
    """A regular file: content from ``data``, or from the host file ``source`` read when the layer is built."""

    path: str
    source: Path | None = None
    data: bytes | None = None
    mode: int = 0o755
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        _check(self.path, self.mode, self.uid, self.gid)
        if (self.source is None) == (self.data is None):
            raise ValueError(f"{self.path}: give exactly one of source= or data=")


@dataclass(frozen=True)
class Symlink:
    """A symbolic link at ``path`` pointing at ``target`` (resolved inside the container, as any symlink)."""

    path: str
    target: str

    def __post_init__(self) -> None:
        _check(self.path)
        if not self.target or "\0" in self.target:
            raise ValueError(f"{self.path}: symlink target must be a non-empty string")


@dataclass(frozen=True)
class Directory:
    """A directory with its own mode or owner (``/tmp`` 0o1777, a config dir owned by the container's user)."""

    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0

    def __post_init__(self) -> None:
        _check(self.path, self.mode, self.uid, self.gid)


Entry = File | Symlink | Directory


def _plan(entries: Iterable[Entry]) -> list[Entry]:
    """All entries plus their implicit parents, parents first, sorted by path components; refuses conflicts."""
    explicit: dict[tuple[str, ...], Entry] = {}
    for entry in entries:
        key = tuple(entry.path[1:].split("/"))
        if key in explicit:
            raise ValueError(f"duplicate path in image: {entry.path}")
        explicit[key] = entry
    planned = dict(explicit)
    for key, entry in explicit.items():
        for depth in range(1, len(key)):
            parent = key[:depth]
            found = planned.setdefault(parent, Directory("/" + "/".join(parent)))
            if not isinstance(found, Directory):
                raise ValueError(f"{entry.path}: its parent {found.path} is not a directory")
    return [planned[key] for key in sorted(planned)]


def _write_tar(stream: IO[bytes], entries: Iterable[Entry]) -> None:
    """A deterministic tar: mtime 0, ids and modes as given, parents before children, no leading ``/``."""
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in _plan(entries):
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mtime = 0
            if isinstance(entry, Symlink):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
                tar.addfile(info)
                continue
            info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
            if isinstance(entry, Directory):
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.data is not None:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                assert entry.source is not None  # File.__post_init__ guarantees one of the two
                with open(entry.source, "rb") as content:  # streamed: Envoy is large
                    info.size = os.fstat(content.fileno()).st_size
                    tar.addfile(info, content)


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """The image's one layer, an uncompressed tar (so its digest is also its ``diff_id``)."""
    buffer = io.BytesIO()
    _write_tar(buffer, entries)
    return buffer.getvalue()


# The grammar of github.com/distribution/reference (IPv6 hosts left out).
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*(?::[0-9]+)?")
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_HEX64 = re.compile(r"[a-f0-9]{64}")


def qualified_reference(ref: str) -> str:
    """The reference as CRI normalises it (Docker's ParseDockerRef), so the imported name is the one looked up.

    ``foo:1`` -> ``docker.io/library/foo:1``; ``user/app`` -> ``docker.io/user/app:latest``; a first component
    with ``.`` or ``:``, or ``localhost``, is a registry host and stays. Digest references are refused.
    """
    if not ref:
        raise ValueError("image reference is empty")
    if any(c.isspace() for c in ref):
        raise ValueError(f"image reference contains whitespace: {ref!r}")
    if "@" in ref:
        raise ValueError(f"digest references (name@sha256:...) are not supported, use a tag: {ref!r}")
    name, tag = ref, "latest"
    if ref.rfind(":") > ref.rfind("/"):
        name, tag = ref.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid tag {tag!r} in image reference {ref!r}")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    domain = "docker.io" if domain == "index.docker.io" else domain
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"invalid registry host {domain!r} in image reference {ref!r}")
    if path != path.lower():
        raise ValueError(f"repository name must be lowercase: {ref!r}")
    if not all(_COMPONENT.fullmatch(part) for part in path.split("/")):
        raise ValueError(f"invalid repository name {path!r} in image reference {ref!r}")
    if _HEX64.fullmatch(name):
        raise ValueError(f"repository name cannot be a 64-character hex string (an image id): {ref!r}")
    if len(domain) + 1 + len(path) > 255:
        raise ValueError(f"repository name longer than 255 characters: {ref!r}")
    return f"{domain}/{path}:{tag}"


_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "i686": "386", "i386": "386"}


def host_architecture() -> str:
    """This machine's architecture in Go's naming, which containerd's platform matcher compares."""
    machine = platform.machine().lower()
    return _ARCH.get(machine, machine)


@dataclass(frozen=True)
class ImageSpec:
    """One single-layer image: the reference it is imported as, its files, and the container defaults."""

    reference: str
    entries: tuple[Entry, ...]
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    workdir: str = "/"
    user: str = ""

    def __post_init__(self) -> None:
        # Fail when the spec is written, not when the archive is: bad name, bad env, conflicting paths.
        qualified_reference(self.reference)
        for item in self.env:
            if "=" not in item or item.startswith("="):
                raise ValueError(f"env entries are KEY=VALUE: {item!r}")
        if not self.workdir.startswith("/"):
            raise ValueError(f"workdir must be absolute: {self.workdir!r}")
        _plan(self.entries)

    def config(self, diff_id: str, architecture: str) -> dict[str, object]:
        """The OCI image config; every container needs a PATH, so one is added when ``env`` has none."""
        env = list(self.env)
        if not any(item.startswith("PATH=") for item in env):
            env.insert(0, "PATH=" + DEFAULT_PATH)
        run = {"Entrypoint": list(self.entrypoint), "Cmd": list(self.cmd), "User": self.user, "Env": env}
        run = {key: value for key, value in run.items() if value} | {"WorkingDir": self.workdir}
        rootfs = {"type": "layers", "diff_ids": [diff_id]}
        return {"architecture": architecture, "os": "linux", "config": run, "rootfs": rootfs}


def _json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def image_blobs(spec: ImageSpec, architecture: str | None = None) -> tuple[bytes, dict[str, bytes]]:
    """``index.json`` and the blobs (layer, config, manifest) keyed by digest; pure apart from reading sources."""
    arch = architecture or host_architecture()
    layer = layer_tar(spec.entries)
    layer_digest = _digest(layer)  # uncompressed, so the diff_id is the layer's own digest
    config = _json(spec.config(layer_digest, arch))
    config_ref = {"mediaType": CONFIG_MEDIA_TYPE, "digest": _digest(config), "size": len(config)}
    layers = [{"mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": len(layer)}]
    manifest = _json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": config_ref, "layers": layers})
    name = qualified_reference(spec.reference)
    descriptor = {
        "mediaType": MANIFEST_MEDIA_TYPE,
        "digest": _digest(manifest),
        "size": len(manifest),
        "platform": {"architecture": arch, "os": "linux"},  # ctr imports only the host's platform by default
        "annotations": {CONTAINERD_NAME: name, OCI_REF_NAME: name},
    }
    index = _json({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [descriptor]})
    blobs = {_digest(blob): blob for blob in (layer, config, manifest)}
    return index, blobs


def write_archive(spec: ImageSpec, out: Path, architecture: str | None = None) -> str:
    """Write the OCI layout tar to ``out`` atomically (temp file, then rename); return the manifest digest."""
    index, blobs = image_blobs(spec, architecture)
    files = [File(f"/blobs/sha256/{d.removeprefix('sha256:')}", data=b, mode=0o644) for d, b in blobs.items()]
    layout = _json({"imageLayoutVersion": "1.0.0"})
    files += [File("/index.json", data=index, mode=0o644), File("/oci-layout", data=layout, mode=0o644)]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as stream:
            _write_tar(stream, files)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(json.loads(index)["manifests"][0]["digest"])


_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)\s+\(0x[0-9a-fA-F]+\)\s*$")


def shared_libraries(binary: Path) -> list[Path]:
    """The loader and shared libraries ``binary`` loads, as the paths it asks for; [] when statically linked.

    These are the paths the loader opens inside the image (the ELF's interpreter, each library where ldd found it);
    on the host they may be symlinks (``/lib64/ld-linux-x86-64.so.2``), so copy the ``.resolve()``-d file to that
    same path, as :func:`binary_with_libraries` does. ldd may run the binary's loader: trusted binaries only. A
    library found through RPATH ``$ORIGIN`` or ``LD_LIBRARY_PATH`` needs that same setup in the image.
    """
    with open(binary, "rb") as handle:
        if handle.read(4) != b"\x7fELF":
            raise ValueError(f"{binary} is not an ELF binary (a wrapper script?)")
    result = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    output = result.stdout + result.stderr
    if "not a dynamic executable" in output or "statically linked" in output:
        return []
    if result.returncode != 0:
        raise RuntimeError(f"ldd {binary} failed ({result.returncode}): {output.strip()}")
    found: list[Path] = []
    for line in result.stdout.splitlines():
        if "=> not found" in line:
            raise RuntimeError(f"{binary} needs a library the host lacks: {line.strip()}")
        match = _LDD_LINE.match(line)
        if match is None or not match.group(2).startswith("/"):
            continue  # linux-vdso.so.1 (no path), or anything ldd adds that is not a library
        asked, where = match.group(1), match.group(2)
        # The loader may print "/lib64/ld-linux-x86-64.so.2 => /usr/lib64/..."; keep the path the ELF names.
        path = Path(asked if asked and asked.startswith("/") else where)
        if path not in found:
            found.append(path)
    if not found:
        raise RuntimeError(f"ldd {binary} listed no libraries: {output.strip()}")
    return found


def binary_with_libraries(binary: Path, path_in_image: str) -> tuple[File, ...]:
    """``binary`` at ``path_in_image`` plus its loader and libraries at the paths it asks for, real content each."""
    files = [File(path_in_image, source=binary.resolve())]
    files += [File(str(lib), source=lib.resolve()) for lib in shared_libraries(binary) if str(lib) != path_in_image]
    return tuple(files)
