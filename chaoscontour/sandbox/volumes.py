"""The node agent's pod volumes: the host directory behind each volume of a pod, written or created on first use.

:class:`PodVolumes` backs ``emptyDir`` (a directory under the pod's dir), ``configMap``, ``secret``,
``downwardAPI`` and ``projected`` (files written there once, with their ``defaultMode``/``mode``: the
ServiceAccount token is a TokenRequest token bound to the pod, valid 24 h and not rotated as the kubelet would),
``persistentVolumeClaim`` (the bound PersistentVolume's ``hostPath`` or ``local`` path) and ``hostPath``.
What the files hold is computed by :mod:`chaoscontour.sandbox.mounts`; a ConfigMap or Secret that does not exist
yet is :class:`~chaoscontour.sandbox.mounts.VolumeNotReady` (the pod waits, as with the kubelet's FailedMount),
and the volume is written once it does. :meth:`PodVolumes.lookup` also serves ``env``/``envFrom``.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaoscontour.sandbox import mounts, podspec
from chaoscontour.sandbox.kubeapi import ApiError, KubeApi

__all__ = ["PodVolumes"]

Obj = dict[str, Any]

# A token the kubelet would rotate; the sandbox asks for one that outlives any sandbox run instead.
TOKEN_EXPIRATION_S = 24 * 3600


class PodVolumes:
    """The volumes of one pod: ``source(name)`` gives the host path behind volume ``name``."""

    def __init__(self, api: KubeApi, pod: Obj, directory: Path, facts: Callable[[], podspec.PodFacts]) -> None:
        self.api = api
        meta = pod["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.spec: Obj = pod["spec"]
        self.dir = directory
        self.facts = facts
        self._sources: dict[str, str] = {}
        self._lock = threading.Lock()

    def lookup(self, kind: str, name: str) -> Obj | None:
        """ConfigMap or Secret ``name`` of the pod's namespace, or ``None`` if it does not exist."""
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        try:
            return self.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return None

    def source(self, name: str) -> str:
        """The host path that backs volume ``name`` (prepared on first use)."""
        with self._lock:
            if name in self._sources:
                return self._sources[name]
            volume = next((v for v in self.spec.get("volumes") or [] if v["name"] == name), None)
            if volume is None:
                raise ValueError(f"volume {name!r} is not a volume of the pod")
            kind = mounts.volume_kind(volume)
            if kind == "persistentVolumeClaim":
                source = self._claimed_path(volume["persistentVolumeClaim"]["claimName"])
            elif kind == "hostPath":
                source = volume["hostPath"]["path"]
                Path(source).mkdir(parents=True, exist_ok=True)
            elif kind in mounts.PROJECTED_KINDS:
                source = str(self._write_files(volume))
            else:
                directory = self.dir / "v" / name
                directory.mkdir(parents=True, exist_ok=True)
                # The kubelet makes emptyDir world-writable (0777): a container running as another user can write.
                directory.chmod(0o777)
                source = str(directory)
            self._sources[name] = source
            return source

    def _claimed_path(self, claim: str) -> str:
        pvc = self.api.get(f"/api/v1/namespaces/{self.namespace}/persistentvolumeclaims/{claim}")
        volume_name = pvc.get("spec", {}).get("volumeName")
        if not volume_name or pvc.get("status", {}).get("phase") != "Bound":
            raise mounts.VolumeNotReady(f"PersistentVolumeClaim {claim!r} is not bound to a PersistentVolume yet")
        spec = self.api.get(f"/api/v1/persistentvolumes/{volume_name}")["spec"]
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not path:
            raise ValueError(f"PersistentVolume {volume_name!r} is neither hostPath nor local: not mountable here")
        Path(path).mkdir(parents=True, exist_ok=True)
        return str(path)

    def _write_files(self, volume: Obj) -> Path:
        """Write the volume's files into a staging dir, then move it in place: a volume that is not ready (a
        missing Secret) leaves nothing half-written behind."""
        files, fetch = mounts.volume_files(volume, self.facts())
        for wanted in fetch:
            if isinstance(wanted, mounts.TokenFile):
                files[wanted.path] = self._token(wanted).encode()
            else:
                files.update(mounts.key_files(wanted, self.lookup(wanted.kind, wanted.name)))
        default_mode, modes = mounts.file_modes(volume)
        directory = self.dir / "v" / volume["name"]
        staging = directory.with_name(directory.name + ".new")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for relative, content in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            os.chmod(target, modes.get(relative, default_mode))
        shutil.rmtree(directory, ignore_errors=True)
        staging.replace(directory)
        return directory

    def _token(self, wanted: mounts.TokenFile) -> str:
        spec: Obj = {
            "expirationSeconds": max(wanted.expiration_s, TOKEN_EXPIRATION_S),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid},
        }
        if wanted.audience:
            spec["audiences"] = [wanted.audience]
        sa = self.spec.get("serviceAccountName") or "default"
        path = f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{sa}/token"
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        return str(self.api.create(path, request)["status"]["token"])
