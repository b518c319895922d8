"""Volumes to mounts, and the mount namespace that gives each sandbox container its own root (pure, no I/O).

- :func:`container_mounts`: which volume goes where in a container, read-only or not (``configMap``, ``secret``,
  ``downwardAPI`` and ``projected`` volumes always read-only, as the kubelet mounts them).
- :func:`volume_files`, :func:`key_files`: the files of ``configMap``, ``secret``, ``downwardAPI`` and
  ``projected`` volumes -- among them the ServiceAccount token, ``ca.crt`` and ``namespace`` at
  ``/var/run/secrets/kubernetes.io/serviceaccount`` that the API server's ServiceAccount admission adds to every
  pod that does not opt out (``automountServiceAccountToken: false``).
- :func:`launch_argv`: the shell steps that run a container in a mount namespace whose root is a tmpfs with the
  host's top-level directories bound in (programs and this checkout stay where they are on the host), a private
  ``/run`` and ``/dev/shm``, and the volumes bind-mounted at their ``mountPath``; so paths in arguments, in files
  and programs' built-in defaults (client-go's and the Python client's in-cluster token path) mean what they mean
  in a cluster. :func:`exec_in_container_argv` enters that view for ``exec`` probes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaoscontour.sandbox.podspec import PodFacts, expand, field_value

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "PROJECTED_KINDS",
    "Mount",
    "VolumeNotReady",
    "DEFAULT_FILE_MODE",
    "file_modes",
    "TokenFile",
    "ObjectFiles",
    "volume_kind",
    "container_mounts",
    "volume_files",
    "key_files",
    "keep_visible",
    "launch_argv",
    "exec_in_container_argv",
]

Obj = Mapping[str, Any]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Volume types whose files the kubelet writes itself, and always mounts read-only.
PROJECTED_KINDS = ("configMap", "secret", "downwardAPI", "projected")
VOLUME_KINDS = ("emptyDir", "persistentVolumeClaim", "hostPath", *PROJECTED_KINDS)


@dataclass(frozen=True)
class Mount:
    """Volume ``volume`` (of type ``kind``) at ``path`` in a container; only its ``sub_path`` if set."""

    volume: str
    kind: str
    path: str
    read_only: bool
    sub_path: str = ""


class VolumeNotReady(ValueError):
    """A volume that cannot be set up until the cluster changes (its ConfigMap or Secret does not exist yet): the
    kubelet records ``FailedMount``, keeps the pod in ``ContainerCreating`` and tries again."""


def _sub_path(mount: Obj, env: Mapping[str, str]) -> str:
    if mount.get("subPath") and mount.get("subPathExpr"):
        raise ValueError(f"volumeMount {mount['name']!r}: subPath and subPathExpr are mutually exclusive")
    raw = str(mount.get("subPath") or "")
    if mount.get("subPathExpr"):
        raw = expand(str(mount["subPathExpr"]), env)  # the kubelet expands it with the container's environment
    # The API server refuses absolute paths and '..' (ValidateVolumeMounts); checked again: this becomes a host path.
    if raw.startswith("/") or ".." in raw.split("/"):
        raise ValueError(f"volumeMount {mount['name']!r}: subPath {raw!r} must be relative and must not contain '..'")
    return "/".join(part for part in raw.split("/") if part and part != ".")


def volume_kind(volume: Obj) -> str:
    """The type of a pod volume (``emptyDir``, ``configMap``...); ``ValueError`` for one the sandbox cannot mount."""
    for kind in VOLUME_KINDS:
        if kind in volume:
            return kind
    others = [k for k in volume if k != "name"]
    raise ValueError(f"volume {volume.get('name')!r} of type {', '.join(others)} is not supported by the sandbox")


def container_mounts(pod_spec: Obj, container: Obj, env: Mapping[str, str] | None = None) -> list[Mount]:
    """The mounts of ``container``, parents before children (so none hides another); ``env`` (the container's
    environment) expands ``subPathExpr``."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ValueError(f"volumeMount {mount['name']!r} names no volume of the pod")
        kind = volume_kind(volume)
        read_only = bool(mount.get("readOnly")) or kind in PROJECTED_KINDS
        path = "/" + mount["mountPath"].strip("/")
        mounts.append(Mount(mount["name"], kind, path, read_only, _sub_path(mount, env or {})))
    return sorted(mounts, key=lambda m: m.path.count("/") if m.path != "/" else 0)


@dataclass(frozen=True)
class TokenFile:
    """A ServiceAccount token to request (TokenRequest, bound to the pod) and write at ``path``."""

    path: str
    audience: str
    expiration_s: int


@dataclass(frozen=True)
class ObjectFiles:
    """Files from the keys of ConfigMap or Secret ``name`` (``kind``): all keys, or ``items`` (key -> path)."""

    kind: str
    name: str
    items: tuple[tuple[str, str], ...] | None
    optional: bool
    under: str = ""


def _items(source: Obj) -> tuple[tuple[str, str], ...] | None:
    items = source.get("items")
    return tuple((i["key"], i["path"]) for i in items) if items else None


def volume_files(volume: Obj, pod: PodFacts) -> tuple[dict[str, bytes], list[TokenFile | ObjectFiles]]:
    """What a ``configMap``, ``secret``, ``downwardAPI`` or ``projected`` volume holds.

    Returns the files known from the pod alone (downward API: path -> content) and what must be fetched from the
    API server (tokens, ConfigMaps, Secrets), which :func:`key_files` then turns into files.
    """
    files: dict[str, bytes] = {}
    fetch: list[TokenFile | ObjectFiles] = []
    kind = volume_kind(volume)
    if kind == "configMap":
        source = volume["configMap"]
        fetch.append(ObjectFiles("ConfigMap", source["name"], _items(source), bool(source.get("optional"))))
    elif kind == "secret":
        source = volume["secret"]
        fetch.append(ObjectFiles("Secret", source["secretName"], _items(source), bool(source.get("optional"))))
    elif kind == "downwardAPI":
        files.update(_downward(volume["downwardAPI"].get("items") or [], pod))
    elif kind == "projected":
        for source in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in source:
                token = source["serviceAccountToken"]
                fetch.append(
                    TokenFile(token["path"], token.get("audience", ""), int(token.get("expirationSeconds") or 3607))
                )
            elif "configMap" in source:
                s = source["configMap"]
                fetch.append(ObjectFiles("ConfigMap", s["name"], _items(s), bool(s.get("optional"))))
            elif "secret" in source:
                s = source["secret"]
                fetch.append(ObjectFiles("Secret", s["name"], _items(s), bool(s.get("optional"))))
            elif "downwardAPI" in source:
                files.update(_downward(source["downwardAPI"].get("items") or [], pod))
            else:
                raise ValueError(f"projected volume {volume['name']!r}: source {list(source)} is not supported")
    return files, fetch


def _downward(items: Sequence[Obj], pod: PodFacts) -> dict[str, bytes]:
    files = {}
    for item in items:
        if "fieldRef" not in item:
            raise ValueError(f"downwardAPI item {item.get('path')!r}: only fieldRef is supported by the sandbox")
        files[item["path"]] = field_value(item["fieldRef"]["fieldPath"], pod).encode()
    return files


def key_files(wanted: ObjectFiles, obj: Obj | None) -> dict[str, bytes]:
    """The files of ``wanted`` from the ConfigMap or Secret ``obj`` (``None``: it does not exist).

    A required object or item key that is missing is :class:`VolumeNotReady`, in the kubelet's words
    (pkg/volume/configmap, pkg/volume/secret); an optional one gives no files.
    """
    if obj is None:
        if wanted.optional:
            return {}
        raise VolumeNotReady(f'{wanted.kind.lower()} "{wanted.name}" not found')
    data: dict[str, bytes] = {k: str(v).encode() for k, v in (obj.get("data") or {}).items()}
    if wanted.kind == "Secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    if wanted.items is None:
        return data
    files = {}
    for key, path in wanted.items:
        if key in data:
            files[path] = data[key]
        elif not wanted.optional:
            if wanted.kind == "ConfigMap":
                raise VolumeNotReady(f"configmap references non-existent config key: {key}")
            raise VolumeNotReady(f"references non-existent secret key: {key}")
    return files


# The kubelet's default file mode for configMap, secret, downwardAPI and projected volumes (0644).
DEFAULT_FILE_MODE = 0o644


def file_modes(volume: Obj) -> tuple[int, dict[str, int]]:
    """The mode of the files of a ``configMap``, ``secret``, ``downwardAPI`` or ``projected`` volume: its
    ``defaultMode`` (0644 if unset) and each item's own ``mode`` by path."""
    kind = volume_kind(volume)
    source = volume[kind]
    default = int(source.get("defaultMode", DEFAULT_FILE_MODE))
    lists = [source.get("items") or []]
    if kind == "projected":
        lists = [(s.get(k) or {}).get("items") or [] for s in source.get("sources") or [] for k in s]
    per_path = {i["path"]: int(i["mode"]) for items in lists for i in items if i.get("mode") is not None}
    return default, per_path


# Runs as `ip netns exec NS unshare --uts sh -c STAGE1 sh POD ROOT WORKDIR SHM N SRC... -- TARGET RO ... -- ARGV`.
# ip netns exec has already given the process its own mount namespace (slave of the host's: our mounts stay ours).
_STAGE1 = r"""set -e
hostname "$1"; root=$2; workdir=$3; shm=$4; n=$5; shift 5
mkdir -p "$root"
mount -t tmpfs -o mode=0755 rootfs "$root"
for d in /*; do
  name=${d#/}
  case $name in run|lost+found) continue ;; esac
  if [ -L "$d" ]; then ln -s "$(readlink "$d")" "$root/$name"
  elif [ -d "$d" ]; then mkdir "$root/$name" && mount --rbind "$d" "$root/$name"
  fi
done
mkdir "$root/run" && mount -t tmpfs -o mode=0755 run "$root/run"
i=0
while [ "$i" -lt "$n" ]; do
  mkdir -p "$root/.volumes"
  if [ -d "$1" ]; then mkdir "$root/.volumes/$i"; else : > "$root/.volumes/$i"; fi
  mount --bind "$1" "$root/.volumes/$i"
  shift; i=$((i+1))
done
shift
exec chroot "$root" /bin/sh -c "$STAGE2" sh "$workdir" "$shm" "$n" "$@"
"""
_STAGE2 = r"""set -e
workdir=$1; shm=$2; n=$3; shift 3
mount -t tmpfs -o "size=$shm,mode=1777" shm /dev/shm
i=0
while [ "$i" -lt "$n" ]; do
  if [ -d "/.volumes/$i" ]; then mkdir -p "$1"; else mkdir -p "$(dirname "$1")" && { [ -e "$1" ] || : > "$1"; }; fi
  mount --bind "/.volumes/$i" "$1"
  if [ "$2" = ro ]; then mount -o remount,bind,ro "$1"; fi
  umount -l "/.volumes/$i"
  shift 2; i=$((i+1))
done
shift
if [ -d /.volumes ]; then
  for v in /.volumes/*; do if [ -d "$v" ]; then rmdir "$v"; else rm -f "$v"; fi; done
  rmdir /.volumes
fi
unset STAGE2
mkdir -p "$workdir" && cd "$workdir"
exec "$@"
"""


def keep_visible(paths: Sequence[str], targets: Sequence[str]) -> list[tuple[str, str, bool]]:
    """Binds that put back host ``paths`` (this checkout, its venv) that a volume mounted at one of their parents
    would hide: the game-day CronJob mounts an emptyDir at ``/tmp``, and a checkout under ``/tmp`` would vanish."""
    extra = []
    for path in paths:
        if any(path == t.rstrip("/") or path.startswith(t.rstrip("/") + "/") for t in targets):
            extra.append((path, path, False))
    return extra


def launch_argv(
    netns_prefix: Sequence[str],
    pod_name: str,
    rootfs: str,
    mounts: Sequence[tuple[str, str, bool]],
    workdir: str,
    argv: Sequence[str],
    shm_size: str = "64m",
) -> tuple[list[str], dict[str, str]]:
    """The command (and extra environment) that runs ``argv`` as a container of pod ``pod_name``.

    Inside the pod's network namespace (``netns_prefix``), in a new UTS namespace whose hostname is the pod's name,
    and a mount namespace whose root is a tmpfs at ``rootfs`` (a host directory) holding the host's top-level
    directories (bound in, so programs and this checkout are where they are on the host), a private ``/run``, a
    private ``/dev/shm`` of ``shm_size``, and each ``(source, target, read_only)`` of ``mounts`` at ``target``.
    The working directory is ``workdir``. The extra environment carries the second stage's script (removed before
    ``argv`` runs).
    """
    sources = [source for source, _, _ in mounts]
    targets = [word for _, target, ro in mounts for word in (target, "ro" if ro else "rw")]
    command = [
        *netns_prefix,
        "unshare",
        "--uts",
        "sh",
        "-c",
        _STAGE1,
        "sh",
        pod_name,
        rootfs,
        workdir,
        shm_size,
        str(len(mounts)),
        *sources,
        "--",
        *targets,
        "--",
        *argv,
    ]
    return command, {"STAGE2": _STAGE2}


def exec_in_container_argv(pid: int, command: Sequence[str]) -> list[str]:
    """Run ``command`` as an ``exec`` probe or hook does: in the namespaces, root and directory of process ``pid``."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--net", "--root", "--wd", "--", *command]
