"""A user's own manifests for the sandbox (``sandbox up --manifests DIR``): read, checked, ordered (pure, no I/O
but reading the files).

:func:`load` reads every ``*.yaml``, ``*.yml`` and ``*.json`` file of the given directories (sorted by name, not
recursive), multi-document YAML and ``kind: List`` included, and :func:`plan` checks all of it before anything is
started or sent; every error names the file and the document's index in it (from 1). What it checks:

- the kind is one the sandbox supports (:data:`KINDS`: Namespace, ServiceAccount, ConfigMap, Secret, Service,
  Deployment, HTTPProxy) with its ``apiVersion``, and ``metadata.name`` is set; no object is given twice;
- an object without ``metadata.namespace`` goes to ``--namespace`` (default ``default``, as with ``kubectl
  apply``); every namespace used is declared in the manifests or already exists; the sandbox's own namespaces
  (``projectcontour``, ``demo``, ``kube-*``) are refused, as are the demo's fqdn and an fqdn given twice.

The plan is what gets applied, as written, in dependency order (Namespaces, then what pods mount, Services,
Deployments, and HTTPProxies last, so Contour never sees a route to a Service not yet there);
:meth:`Plan.deletion_order` reverses it. The sandbox has no registry:
:func:`chaoscontour_sandbox.nodeimages.unavailable_images` names every image
the node lacks, or that the kubelet would try to pull anyway (``imagePullPolicy: Always``, stated or implied by a
``:latest`` or missing tag), before anything is sent.

:func:`route_settings` turns an HTTPProxy of the manifests into the settings the experiments read (``ENVOY_HOST``,
the route's path, ``BACKEND_*`` for ``endpoint-churn-during-outage.json``, ``ROUTE_*`` for ``xds-blackhole.json``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "KINDS",
    "RESERVED_NAMESPACES",
    "DEFAULT_NAMESPACE",
    "ManifestError",
    "Document",
    "Plan",
    "load",
    "plan",
    "check",
    "api_path",
    "route_settings",
]

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    namespaced: bool
    order: int


KINDS: dict[str, Kind] = {
    "Namespace": Kind("v1", "namespaces", False, 0),
    "ServiceAccount": Kind("v1", "serviceaccounts", True, 1),
    "ConfigMap": Kind("v1", "configmaps", True, 1),
    "Secret": Kind("v1", "secrets", True, 1),
    "Service": Kind("v1", "services", True, 2),
    "Deployment": Kind("apps/v1", "deployments", True, 3),
    "HTTPProxy": Kind("projectcontour.io/v1", "httpproxies", True, 4),
}
DEFAULT_NAMESPACE = "default"
# The sandbox's own (its Contour, Envoy and demo; the control plane's): a user's object there could replace or
# disturb them, and `sandbox delete` would remove them.
RESERVED_NAMESPACES = ("projectcontour", "demo", "kube-system", "kube-public", "kube-node-lease")
RESERVED_FQDNS = ("echo.sandbox.local",)
SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest cannot be applied to the sandbox; the message names the file and the document."""


@dataclass(frozen=True)
class Document:
    """One object of a manifest file: where it came from (``file``, ``index`` from 1, ``item`` in a List)."""

    obj: Obj
    file: str
    index: int
    item: int = 0

    @property
    def where(self) -> str:
        return f"{self.file} document {self.index}" + (f" item {self.item}" if self.item else "")

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace") or "")

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def key(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass
class Plan:
    """What to apply, in order; ``route``: the HTTPProxy the settings point at (``NAMESPACE/NAME``, or empty)."""

    documents: list[Document]
    route: str = ""

    @property
    def objects(self) -> list[Obj]:
        return [d.obj for d in self.documents]

    def deletion_order(self) -> list[Document]:
        return list(reversed(self.documents))

    def namespaces(self) -> list[str]:
        return [d.name for d in self.documents if d.kind == "Namespace"]

    def of_kind(self, kind: str) -> list[Document]:
        return [d for d in self.documents if d.kind == kind]


# --- reading ------------------------------------------------------------------------------------------------------


def files_in(directories: Sequence[Path]) -> list[Path]:
    """The manifest files of ``directories`` (a file given directly counts too), sorted by name per directory."""
    found: list[Path] = []
    for directory in directories:
        if directory.is_file():
            found.append(directory)
            continue
        if not directory.is_dir():
            raise ManifestError(f"{directory}: no such directory")
        found += sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in SUFFIXES)
    if not found:
        raise ManifestError(f"no *.yaml, *.yml or *.json file in {', '.join(map(str, directories))}")
    return found


def _document_at(text: str, line: int) -> int:
    """The index (from 1) of the YAML document that holds ``line`` (from 0): ``---`` lines separate documents."""
    lines = text.splitlines()
    content = [n for n, t in enumerate(lines) if t.strip() and not t.lstrip().startswith("#")]
    separators = [n for n, t in enumerate(lines[: line + 1]) if t.startswith("---")]
    leading = bool(content) and lines[content[0]].startswith("---")  # a `---` before the first document
    return len(separators) + 1 - (1 if leading and separators and separators[0] == content[0] else 0)


def parse(text: str, file: str) -> list[Document]:
    """The objects of one file's text (YAML, multi-document, or JSON); empty documents are skipped."""
    try:
        raw = [json.loads(text)] if file.endswith(".json") else list(yaml.safe_load_all(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"document {_document_at(text, mark.line)}, line {mark.line + 1}" if mark is not None else "?"
        raise ManifestError(f"{file} {where}: not valid YAML: {exc.problem}") from exc
    except (yaml.YAMLError, ValueError) as exc:
        raise ManifestError(f"{file}: not valid {'JSON' if file.endswith('.json') else 'YAML'}: {exc}") from exc
    documents = []
    for index, obj in enumerate(raw, start=1):
        if obj is None:
            continue
        if not isinstance(obj, dict):
            raise ManifestError(f"{file} document {index}: expected an object (a mapping), got {type(obj).__name__}")
        if obj.get("kind") == "List":
            items = obj.get("items")
            if not isinstance(items, list):
                raise ManifestError(f"{file} document {index}: a List needs `items`")
            for number, item in enumerate(items, start=1):
                if not isinstance(item, dict):
                    raise ManifestError(f"{file} document {index} item {number}: expected an object")
                documents.append(Document(item, file, index, number))
        else:
            documents.append(Document(obj, file, index))
    return documents


def load(directories: Sequence[Path]) -> list[Document]:
    """Every object in the manifest files of ``directories``; :class:`ManifestError` names a file that fails."""
    documents = []
    for path in files_in(directories):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read: {exc}") from exc
        documents += parse(text, str(path))
    if not documents:
        raise ManifestError(f"no object in {', '.join(map(str, directories))}")
    return documents


# --- checking and ordering ----------------------------------------------------------------------------------------


def _check_shape(doc: Document, default_namespace: str) -> Document:
    obj = doc.obj
    kind = obj.get("kind")
    if not kind:
        raise ManifestError(f"{doc.where}: no `kind`")
    spec = KINDS.get(str(kind))
    if spec is None:
        supported = ", ".join(KINDS)
        raise ManifestError(f"{doc.where}: kind {kind} is not supported by the sandbox (supported: {supported})")
    if obj.get("apiVersion") != spec.api_version:
        raise ManifestError(f"{doc.where}: {kind} must have apiVersion {spec.api_version}, not {obj.get('apiVersion')}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise ManifestError(f"{doc.where}: {kind} without `metadata.name`")
    if meta.get("generateName"):
        raise ManifestError(f"{doc.where}: `generateName` cannot be applied (server-side apply needs a name)")
    obj = copy.deepcopy(obj)
    if spec.namespaced:
        obj["metadata"].setdefault("namespace", default_namespace)
        if not obj["metadata"]["namespace"]:
            obj["metadata"]["namespace"] = default_namespace
    elif obj["metadata"].get("namespace"):
        raise ManifestError(f"{doc.where}: a {kind} has no namespace, yet `metadata.namespace` is set")
    return Document(obj, doc.file, doc.index, doc.item)


def _check_namespaces(docs: Sequence[Document], existing: Iterable[str]) -> None:
    declared = {d.name for d in docs if d.kind == "Namespace"}
    known = declared | set(existing)
    for doc in docs:
        namespace = doc.name if doc.kind == "Namespace" else doc.namespace
        if namespace in RESERVED_NAMESPACES:
            raise ManifestError(
                f"{doc.where}: namespace {namespace} belongs to the sandbox "
                f"(reserved: {', '.join(RESERVED_NAMESPACES)})"
            )
        if namespace not in known:
            raise ManifestError(
                f"{doc.where}: {doc.key} is in namespace {namespace}, which the manifests do not declare "
                "(add a Namespace object, or pick another with --namespace)"
            )


def _check_unique(docs: Sequence[Document]) -> None:
    seen: dict[str, Document] = {}
    fqdns: dict[str, Document] = {}
    for doc in docs:
        if doc.key in seen:
            raise ManifestError(f"{doc.where}: {doc.key} is also given in {seen[doc.key].where}")
        seen[doc.key] = doc
        if doc.kind == "HTTPProxy":
            fqdn = ((doc.obj.get("spec") or {}).get("virtualhost") or {}).get("fqdn")
            if fqdn in RESERVED_FQDNS:
                raise ManifestError(f"{doc.where}: fqdn {fqdn} is the sandbox's demo route; choose another")
            if fqdn and fqdn in fqdns:
                raise ManifestError(
                    f"{doc.where}: fqdn {fqdn} is also the fqdn of {fqdns[fqdn].key} ({fqdns[fqdn].where})"
                )
            if fqdn:
                fqdns[fqdn] = doc


def plan(
    documents: Sequence[Document],
    *,
    default_namespace: str = DEFAULT_NAMESPACE,
    existing_namespaces: Iterable[str] = (),
) -> Plan:
    """Check ``documents`` and return them in apply order."""
    docs = [_check_shape(d, default_namespace) for d in documents]
    _check_namespaces(docs, existing_namespaces)
    _check_unique(docs)
    return Plan(sorted(docs, key=lambda d: KINDS[d.kind].order))  # stable: file order within a kind


def check(
    directories: Sequence[Path], *, namespace: str = DEFAULT_NAMESPACE, route: str = "", existing: Iterable[str] = ()
) -> Plan:
    """:func:`load` and :func:`plan` the manifests of ``directories``; ``route`` (``NAMESPACE/HTTPPROXY``, may be
    empty) must name a usable HTTPProxy among them. ``existing``: namespaces there already (``default`` always)."""
    checked = plan(load(directories), default_namespace=namespace, existing_namespaces=[DEFAULT_NAMESPACE, *existing])
    if route:
        route_settings(checked.objects, route, "http://envoy:8080")  # only to check it
        checked.route = route
    return checked


# --- the API ------------------------------------------------------------------------------------------------------


def api_path(obj: Mapping[str, Any]) -> str:
    """The REST path of a supported object (name included), for server-side apply and delete."""
    kind = KINDS[obj["kind"]]
    base = f"/api/{kind.api_version}" if "/" not in kind.api_version else f"/apis/{kind.api_version}"
    meta = obj["metadata"]
    scope = f"/namespaces/{meta['namespace']}" if kind.namespaced else ""
    return f"{base}{scope}/{kind.plural}/{meta['name']}"


# --- settings for the experiments ---------------------------------------------------------------------------------


def route_settings(objects: Sequence[Mapping[str, Any]], route: str, envoy_base_url: str) -> dict[str, str]:
    """The settings that point the experiments at HTTPProxy ``route`` (``NAMESPACE/NAME``) of ``objects``.

    ``ENVOY_HOST`` is its fqdn; ``ENVOY_URL`` is ``envoy_base_url`` (``http://ADDRESS:8080``) with the path of
    its first route that matches on the path alone (the sampler sends no headers or query);
    ``BACKEND_NAMESPACE``, ``BACKEND_SERVICE`` and ``BACKEND_PORT`` name that route's first service,
    ``BACKEND_SELECTOR`` is that Service's selector (the pods ``terminate_pods`` picks from);
    ``ROUTE_NAMESPACE`` and ``ROUTE_HTTPPROXY`` name the HTTPProxy itself (``xds-blackhole.json``'s marker).
    """
    namespace, _, name = route.partition("/")
    if not namespace or not name or "/" in name:
        raise ManifestError(f"--route {route!r}: write NAMESPACE/HTTPPROXY, e.g. shop/cart")

    def find(kind: str, ns: str, wanted: str) -> Mapping[str, Any] | None:
        return next(
            (
                o
                for o in objects
                if o.get("kind") == kind and o["metadata"].get("namespace") == ns and o["metadata"]["name"] == wanted
            ),
            None,
        )

    proxy = find("HTTPProxy", namespace, name)
    if proxy is None:
        raise ManifestError(f"--route {route}: no HTTPProxy {name} in namespace {namespace} in the manifests")
    spec = proxy.get("spec") or {}
    virtualhost = spec.get("virtualhost") or {}
    fqdn = virtualhost.get("fqdn")
    if not fqdn:
        raise ManifestError(f"--route {route}: the HTTPProxy has no virtualhost.fqdn (name the root HTTPProxy)")
    chosen = None
    for candidate in spec.get("routes") or []:
        conditions = candidate.get("conditions") or []
        if candidate.get("services") and all(set(c) <= {"prefix", "exact"} for c in conditions):
            chosen = candidate
            break
    if chosen is None:
        raise ManifestError(
            f"--route {route}: no route with services that matches on the path alone (prefix or exact); the "
            "experiments' requests carry no headers or query (an HTTPProxy that only `includes` others: not supported)"
        )
    if virtualhost.get("tls") and not chosen.get("permitInsecure"):
        raise ManifestError(
            f"--route {route}: the route is served over TLS only (virtualhost.tls without permitInsecure); the "
            "experiments sample plain HTTP on Envoy's port 8080"
        )
    path = "/"
    for condition in chosen.get("conditions") or []:
        path = str(condition.get("prefix") or condition.get("exact") or path)
    target = chosen["services"][0]
    service = find("Service", namespace, str(target.get("name")))
    if service is None:
        raise ManifestError(f"--route {route}: its Service {namespace}/{target.get('name')} is not in the manifests")
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        raise ManifestError(
            f"--route {route}: Service {namespace}/{target.get('name')} has no selector (no pods to kill)"
        )
    return {
        "ENVOY_HOST": str(fqdn),
        "ENVOY_URL": envoy_base_url.rstrip("/") + (path if path.startswith("/") else "/" + path),
        "BACKEND_NAMESPACE": namespace,
        "BACKEND_SERVICE": str(target["name"]),
        "BACKEND_PORT": str(target.get("port")),
        "BACKEND_SELECTOR": ",".join(f"{k}={v}" for k, v in selector.items()),
        "ROUTE_NAMESPACE": namespace,
        "ROUTE_HTTPPROXY": name,
    }
