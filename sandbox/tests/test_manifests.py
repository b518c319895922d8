"""A user's manifests for the sandbox: reading, checking, ordering, their images and route settings (pure, no root)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chaoscontour_sandbox import cli, lifecycle, manifests, nodeimages
from chaoscontour_sandbox.manifests import ManifestError, check, route_settings

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "my-app"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def deployment(image: str = "registry.example.com/shop/cart:2.3", **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {
            "selector": {"matchLabels": {"app": "cart"}},
            "template": {
                "metadata": {"labels": {"app": "cart"}},
                "spec": {"containers": [{"name": "cart", "image": image, **container}]},
            },
        },
    }


def service(target: Any, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"selector": selector or {"app": "cart"}, "ports": [{"port": 80, "targetPort": target}]},
    }


# --- the worked example -------------------------------------------------------------------------------------------


def test_the_worked_example_is_applied_namespace_first_and_httpproxy_last() -> None:
    plan = check([EXAMPLE], route="shop/cart")
    kinds = [d.kind for d in plan.documents]
    assert kinds == ["Namespace", "ConfigMap", "Service", "Deployment", "HTTPProxy"]
    assert [d.kind for d in plan.deletion_order()] == list(reversed(kinds))
    assert plan.route == "shop/cart"


def test_the_worked_example_is_applied_as_written() -> None:
    written = {d["kind"]: d for d in manifests.load([EXAMPLE]) for d in [d.obj]}
    planned = {d.kind: d.obj for d in check([EXAMPLE]).documents}
    assert planned["Deployment"] == written["Deployment"]


CART = "registry.example.com/shop/cart:2.3"


def test_images_the_node_lacks_are_named_with_where_they_are_used() -> None:
    plan = check([EXAMPLE])
    missing = nodeimages.unavailable_images(plan, ["docker.io/library/busybox:1.37"])
    assert len(missing) == 1 and missing[0].startswith(f"{CART}: not on the node (Deployment shop/cart, container cart")
    assert nodeimages.unavailable_images(plan, [CART]) == []


@pytest.mark.parametrize(
    ("image", "policy", "pulls"),
    [
        ("shop/cart", None, True),
        ("shop/cart:latest", None, True),
        ("shop/cart:2.3", "Always", True),
        ("shop/cart:2.3", None, False),
        ("shop/cart:latest", "IfNotPresent", False),
        ("localhost:5000/shop/cart", "Never", False),
    ],
)
def test_an_image_the_kubelet_would_pull_anyway_is_refused_even_when_present(
    image: str, policy: str | None, pulls: bool
) -> None:
    container = {"imagePullPolicy": policy} if policy else {}
    plan = manifests.Plan([manifests.Document(deployment(image, **container), "f.yaml", 1)])
    problems = nodeimages.unavailable_images(plan, [image])
    assert (problems != []) is pulls, problems
    if pulls:
        assert "set imagePullPolicy: IfNotPresent" in problems[0]


def test_a_malformed_image_reference_is_named() -> None:
    plan = manifests.Plan([manifests.Document(deployment("Shop/Cart:2.3"), "f.yaml", 1)])
    assert "'Shop/Cart:2.3'" in nodeimages.unavailable_images(plan, [])[0]


def test_the_worked_example_points_the_experiments_at_its_route() -> None:
    plan = check([EXAMPLE])
    assert route_settings(plan.objects, "shop/cart", "http://10.213.0.9:8080/") == {
        "ENVOY_HOST": "shop.example.com",
        "ENVOY_URL": "http://10.213.0.9:8080/cart",
        "BACKEND_NAMESPACE": "shop",
        "BACKEND_SERVICE": "cart",
        "BACKEND_PORT": "80",
        "BACKEND_SELECTOR": "app=cart",
        "ROUTE_NAMESPACE": "shop",
        "ROUTE_HTTPPROXY": "cart",
    }


def test_the_demo_route_gives_the_experiments_own_defaults() -> None:
    # `up` writes these for the demo, and `delete` restores them: they must be the experiments' defaults.
    settings = lifecycle._demo_route("http://10.213.0.9:8080")
    experiment = json.loads((ROOT / "experiments" / "endpoint-churn-during-outage.json").read_text())
    defaults = {e["key"]: str(e["default"]) for e in experiment["configuration"].values() if isinstance(e, dict)}
    for key in ("BACKEND_NAMESPACE", "BACKEND_SERVICE", "BACKEND_PORT", "BACKEND_SELECTOR"):
        assert settings[key] == defaults[key], key
    assert settings["ENVOY_URL"] == "http://10.213.0.9:8080/" and settings["ENVOY_HOST"] == "echo.sandbox.local"


# --- reading: errors name the file and the document --------------------------------------------------------------


def test_a_yaml_error_names_the_file_the_document_and_the_line(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\napiVersion: v1\nkind: [Service\n"
    write(tmp_path, "app.yaml", text)
    with pytest.raises(ManifestError, match=r"app\.yaml document 2, line \d+: not valid YAML"):
        check([tmp_path])


def test_an_unsupported_kind_is_refused_with_the_supported_ones(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    write(tmp_path, "b.yml", "---\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x, namespace: shop}\n")
    with pytest.raises(ManifestError) as caught:
        check([tmp_path])
    message = str(caught.value)
    assert "b.yml document" in message and "kind CronJob is not supported" in message
    assert "Namespace, ServiceAccount, ConfigMap, Secret, Service, Deployment, HTTPProxy" in message


def test_a_wrong_api_version_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.json", json.dumps({**deployment(), "apiVersion": "extensions/v1beta1"}))
    with pytest.raises(ManifestError, match=r"a\.json document 1: Deployment must have apiVersion apps/v1"):
        check([tmp_path], namespace="shop", existing=["shop"])


def test_a_list_is_flattened_and_its_items_are_named(tmp_path: Path) -> None:
    items = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}, {"kind": "Service"}]
    write(tmp_path, "list.yaml", json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    with pytest.raises(ManifestError, match=r"list\.yaml document 1 item 2: Service must have apiVersion v1, not None"):
        check([tmp_path])


def test_no_manifest_file_at_all_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "# not a manifest")
    with pytest.raises(ManifestError, match=r"no \*\.yaml, \*\.yml or \*\.json file"):
        check([tmp_path])


def test_an_object_given_twice_is_refused_naming_both_places(tmp_path: Path) -> None:
    ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
    write(tmp_path, "a.yaml", ns + "---\n" + ns)
    also = r"a\.yaml document 2: Namespace shop is also given in \S*a\.yaml document 1"
    with pytest.raises(ManifestError, match=also):
        check([tmp_path])


# --- namespaces ---------------------------------------------------------------------------------------------------


def test_objects_without_a_namespace_go_to_the_default_one(tmp_path: Path) -> None:
    write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n")
    assert check([tmp_path]).documents[0].namespace == "default"
    assert check([tmp_path], namespace="shop", existing=["shop"]).documents[0].namespace == "shop"


def test_a_namespace_neither_declared_nor_existing_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\n")
    with pytest.raises(ManifestError, match="namespace shop, which the manifests do not declare"):
        check([tmp_path])


@pytest.mark.parametrize("namespace", ["projectcontour", "demo", "kube-system"])
def test_the_sandboxs_own_namespaces_are_refused(tmp_path: Path, namespace: str) -> None:
    write(tmp_path, "cm.yaml", f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x, namespace: {namespace}}}\n")
    with pytest.raises(ManifestError, match=f"namespace {namespace} belongs to the sandbox"):
        check([tmp_path], existing=[namespace])


def test_the_demo_fqdn_and_a_duplicate_fqdn_are_refused(tmp_path: Path) -> None:
    def proxy(name: str, fqdn: str) -> str:
        return (
            "apiVersion: projectcontour.io/v1\nkind: HTTPProxy\n"
            f"metadata: {{name: {name}}}\nspec: {{virtualhost: {{fqdn: {fqdn}}}}}\n"
        )

    write(tmp_path / "a", "p.yaml", proxy("a", "echo.sandbox.local"))
    with pytest.raises(ManifestError, match=r"fqdn echo\.sandbox\.local is the sandbox's demo route"):
        check([tmp_path / "a"])
    write(tmp_path / "b", "p.yaml", proxy("a", "shop.example.com") + "---\n" + proxy("b", "shop.example.com"))
    with pytest.raises(ManifestError, match=r"fqdn shop\.example\.com is also the fqdn of HTTPProxy default/a"):
        check([tmp_path / "b"])


# --- route settings -----------------------------------------------------------------------------------------------


def _proxy(routes: list[dict[str, Any]], **virtualhost: Any) -> dict[str, Any]:
    return {
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": "cart", "namespace": "shop"},
        "spec": {"virtualhost": {"fqdn": "shop.example.com", **virtualhost}, "routes": routes},
    }


def test_the_route_is_the_first_that_matches_on_the_path_alone() -> None:
    routes = [
        {"conditions": [{"header": {"name": "x-beta", "present": True}}], "services": [{"name": "beta", "port": 80}]},
        {"conditions": [{"exact": "/cart/v2"}], "services": [{"name": "cart", "port": 80}]},
    ]
    settings = route_settings([_proxy(routes), service(8080)], "shop/cart", "http://e:8080")
    assert settings["ENVOY_URL"] == "http://e:8080/cart/v2" and settings["BACKEND_SERVICE"] == "cart"


@pytest.mark.parametrize(
    ("objects", "route", "message"),
    [
        ([], "cart", "write NAMESPACE/HTTPPROXY"),
        ([], "shop/cart", "no HTTPProxy cart in namespace shop"),
        ([_proxy([])], "shop/cart", "no route with services that matches on the path alone"),
        ([_proxy([{"services": [{"name": "cart", "port": 80}]}], tls={"secretName": "c"})], "shop/cart", "TLS only"),
        ([_proxy([{"services": [{"name": "cart", "port": 80}]}])], "shop/cart", "Service shop/cart is not in"),
    ],
)
def test_a_route_the_experiments_cannot_use_is_refused(objects: list[Any], route: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        route_settings(objects, route, "http://e:8080")


# --- the CLI: refused before anything starts ----------------------------------------------------------------------


def test_up_with_bad_manifests_fails_before_anything_is_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No root needed: the manifests are checked before the preflight, so nothing is created and no dir appears.
    write(tmp_path / "m", "a.yaml", "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\n")
    sandbox = tmp_path / "sandbox"
    assert cli.main(["up", "--dir", str(sandbox), "--manifests", str(tmp_path / "m")]) == 1
    assert "kind PodDisruptionBudget is not supported" in capsys.readouterr().err
    assert not sandbox.exists()


def test_up_refuses_a_route_that_is_not_in_the_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = tmp_path / "sandbox"
    assert cli.main(["up", "--dir", str(sandbox), "--manifests", str(EXAMPLE), "--route", "shop/checkout"]) == 1
    assert "no HTTPProxy checkout in namespace shop" in capsys.readouterr().err
    assert not sandbox.exists()


def test_every_supported_kind_has_an_api_path() -> None:
    for kind, spec in manifests.KINDS.items():
        meta = {"name": "x"} | ({"namespace": "ns"} if spec.namespaced else {})
        path = manifests.api_path({"kind": kind, "apiVersion": spec.api_version, "metadata": meta})
        assert path.endswith(f"/{spec.plural}/x") and ("/namespaces/ns/" in path) == spec.namespaced
