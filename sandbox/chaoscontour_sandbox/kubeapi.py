"""A small JSON client for the Kubernetes API, for the sandbox's CLI, deploys and conntrack reaper.

It works on objects as the API serves them (plain ``dict`` with camelCase keys, exactly what a manifest looks like),
so that the pure evaluators (:mod:`chaoscontour_sandbox.netpol`) take and return data a test can write by hand.
The typed ``kubernetes`` client converts to snake_case models and
back; this module only borrows its kubeconfig loader (so every kubeconfig form works) and talks HTTP with
``requests``, with a deadline on every call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

__all__ = ["ApiError", "Informer", "KubeApi"]

Obj = dict[str, Any]

# A request to the API server must never hang the agent's loop; watches get their own, longer read timeout.
REQUEST_TIMEOUT_S = 10.0
WATCH_TIMEOUT_S = 300


class ApiError(RuntimeError):
    """An API call failed; ``status`` is the HTTP status (0 when the server could not be reached)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class KubeApi:
    """HTTP access to one API server with the credentials of a kubeconfig file."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        # The loader writes embedded certificate data to temp files and points the configuration at them.
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.server = configuration.host.rstrip("/")
        self.ca_file: str | None = configuration.ssl_ca_cert
        self.session = requests.Session()
        # Not the environment's proxies or CA bundle ($REQUESTS_CA_BUNDLE would override `verify`): the sandbox's
        # API server is on a local bridge and signed by its own CA.
        self.session.trust_env = False
        self.session.verify = configuration.ssl_ca_cert or True
        if configuration.cert_file and configuration.key_file:
            self.session.cert = (configuration.cert_file, configuration.key_file)
        token = configuration.api_key.get("authorization")
        if token:
            self.session.headers["Authorization"] = token
        self.session.headers["User-Agent"] = "chaoscontour-sandbox"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> Obj:
        """Send one request and return the decoded JSON answer; raise :class:`ApiError` on any failure."""
        try:
            response = self.session.request(
                method,
                self.server + path,
                params=params,
                data=None if body is None else json.dumps(body),
                headers={"Content-Type": content_type},
                timeout=timeout_s,
            )
        except requests.RequestException as exc:
            raise ApiError(0, f"{method} {path}: API server unreachable: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, f"{method} {path}: {response.status_code} {message}")
        return response.json() if response.content else {}

    def get(self, path: str, **params: Any) -> Obj:
        return self.request("GET", path, params=params or None)

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body=body)

    def merge_patch(self, path: str, body: Obj) -> Obj:
        return self.request("PATCH", path, body=body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Obj | None = None) -> Obj:
        return self.request("DELETE", path, body=body)

    def apply(self, path: str, body: Obj, field_manager: str = "chaoscontour-sandbox") -> Obj:
        """Server-side apply ``body`` at ``path`` (the object's own path, name included)."""
        return self.request(
            "PATCH",
            path,
            body=body,
            params={"fieldManager": field_manager, "force": "true"},
            content_type="application/apply-patch+yaml",
        )

    def watch(self, path: str, resource_version: str, **params: Any) -> Iterator[Obj]:
        """Yield watch events (``{"type": ..., "object": ...}``) from ``resource_version`` until the server ends."""
        query = dict(params, watch="true", resourceVersion=resource_version, allowWatchBookmarks="true")
        query["timeoutSeconds"] = WATCH_TIMEOUT_S
        try:
            with self.session.get(
                self.server + path, params=query, stream=True, timeout=(REQUEST_TIMEOUT_S, WATCH_TIMEOUT_S + 30)
            ) as response:
                if response.status_code >= 400:
                    raise ApiError(response.status_code, f"WATCH {path}: {response.status_code} {response.text}")
                for line in response.iter_lines():
                    if line:
                        yield json.loads(line)
        except requests.RequestException as exc:
            raise ApiError(0, f"WATCH {path}: {exc}") from exc


class Informer:
    """List then watch one collection, keep a cache of its objects by ``namespace/name``, and call ``on_change``.

    Runs in the calling thread (:meth:`run`) until ``stopped()`` returns true; a broken or expired watch is
    resumed with a fresh list, which is also how deletions missed while disconnected are noticed.
    """

    def __init__(
        self,
        api: KubeApi,
        path: str,
        on_change: Callable[[str, Obj], None],
        *,
        stopped: Callable[[], bool],
        log: Callable[[str], None],
        **params: Any,
    ) -> None:
        self.api = api
        self.path = path
        self.params = params
        self.on_change = on_change
        self.stopped = stopped
        self.log = log
        self.cache: dict[str, Obj] = {}
        self.synced = False

    @staticmethod
    def key(obj: Obj) -> str:
        meta = obj.get("metadata", {})
        return f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    def run(self) -> None:
        while not self.stopped():
            try:
                listed = self.api.get(self.path, **self.params)
                fresh = {self.key(item): item for item in listed.get("items", [])}
                for key in set(self.cache) - set(fresh):
                    self.on_change("DELETED", self.cache.pop(key))
                for key, item in fresh.items():
                    self.cache[key] = item
                    self.on_change("MODIFIED", item)
                self.synced = True
                version = listed["metadata"]["resourceVersion"]
                for event in self.api.watch(self.path, version, **self.params):
                    if self.stopped():
                        return
                    kind, obj = event.get("type"), event.get("object", {})
                    if kind == "BOOKMARK":
                        continue
                    if kind == "ERROR":  # e.g. 410 Gone: the version is too old; list again
                        break
                    if kind == "DELETED":
                        self.cache.pop(self.key(obj), None)
                    else:
                        self.cache[self.key(obj)] = obj
                    self.on_change(str(kind), obj)
            except ApiError as exc:
                self.log(f"watch {self.path}: {exc}; retrying")
                time.sleep(1.0)
            except Exception as exc:  # a decoding surprise must not end the agent's view of the cluster
                self.log(f"watch {self.path}: unexpected {type(exc).__name__}: {exc}; retrying")
                time.sleep(1.0)
