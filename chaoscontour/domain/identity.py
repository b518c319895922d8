"""Contour's leader identity: the Lease's ``holderIdentity`` is ``<hostname>_<uuid>``.

controller-runtime builds it as ``os.Hostname() + "_" + uuid``; in a pod the hostname is the pod name, so the pod is
the identity minus its last 37 characters (what Contour's own e2e test, test/e2e/incluster/leaderelection_test.go,
does). We check the UUID instead of trusting the length, so a foreign or hand-edited Lease is refused, not misread.
"""

import re
from dataclasses import dataclass

__all__ = ["HolderIdentity", "InvalidHolderIdentity", "parse_holder_identity"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
# A pod name is a DNS subdomain (at most 253 characters of lowercase alphanumerics, '-' and '.').
_POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


class InvalidHolderIdentity(ValueError):
    """A ``holderIdentity`` that is not ``<pod-name>_<uuid>``."""


@dataclass(frozen=True)
class HolderIdentity:
    pod_name: str
    uuid: str

    def __str__(self) -> str:
        return f"{self.pod_name}_{self.uuid}"


def parse_holder_identity(identity: str) -> HolderIdentity:
    """Split a Contour Lease ``holderIdentity`` into the pod name and the per-process UUID."""
    if not isinstance(identity, str) or not identity:
        raise InvalidHolderIdentity("the Lease has no holderIdentity: no Contour replica holds it right now")
    pod_name, sep, uid = identity.rpartition("_")
    if not sep or not _UUID.match(uid):
        raise InvalidHolderIdentity(
            f"holderIdentity {identity!r} is not '<pod-name>_<uuid>' as Contour writes it; "
            "is this Lease written by Contour (controller-runtime leader election)?"
        )
    if not _POD_NAME.match(pod_name):
        raise InvalidHolderIdentity(f"holderIdentity {identity!r}: {pod_name!r} is not a valid pod name")
    return HolderIdentity(pod_name=pod_name, uuid=uid.lower())
