"""Label selectors, accepted as ``k=v,k2=v2`` strings or as mappings (chaostoolkit-kubernetes#139)."""

import re
from collections.abc import Mapping

__all__ = ["InvalidSelector", "format_label_selector", "parse_label_selector", "selector_matches"]

# Kubernetes label keys: an optional DNS-subdomain prefix and a name of at most 63 characters; values likewise
# (apimachinery/pkg/util/validation). Checked here so a typo fails before anything is sent.
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}$")
_VALUE = re.compile(rf"^({_NAME})?$")


class InvalidSelector(ValueError):
    """A label selector that cannot be used; the message says what to write instead."""


def _check(key: str, value: str, original: object) -> None:
    if not _KEY.match(key):
        raise InvalidSelector(f"label selector {original!r}: {key!r} is not a valid label key")
    if not _VALUE.match(value):
        raise InvalidSelector(f"label selector {original!r}: {value!r} is not a valid label value for {key!r}")


def parse_label_selector(selector: object) -> dict[str, str]:
    """Return the equality requirements of ``selector`` as a mapping.

    ``selector`` is a string such as ``"app=contour,release=prod"`` (``==`` is accepted for ``=``) or a mapping of
    label keys to values. Set-based forms (``in``, ``!=``, ``!key``) are refused: a NetworkPolicy's
    ``podSelector.matchLabels`` and our safety checks need exact labels. An empty selector is refused too, since it
    would select every pod in the namespace.
    """
    if isinstance(selector, Mapping):
        # Only strings (numbers as JSON gives them): str(None) would select the label value "None".
        bad = {
            k: v
            for k, v in selector.items()
            if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, (str, int))
        }
        if bad:
            raise InvalidSelector(
                f"label selector {dict(selector)!r}: keys and values must be strings, not {bad!r}; quote the value "
                '(a label value may be empty: "")'
            )
        labels = {k.strip(): str(v).strip() for k, v in selector.items()}
    elif isinstance(selector, str):
        labels = {}
        for part in selector.split(","):
            part = part.strip()
            if not part:
                continue
            if "!=" in part or part.startswith("!") or re.search(r"\s(in|notin)\s*\(", part):
                raise InvalidSelector(
                    f"label selector {selector!r}: {part!r} is set-based; use equality terms like 'app=contour'"
                )
            key, sep, value = part.replace("==", "=").partition("=")
            if not sep:
                raise InvalidSelector(f"label selector {selector!r}: {part!r} has no '='; write 'key=value'")
            key, value = key.strip(), value.strip()
            if key in labels and labels[key] != value:
                raise InvalidSelector(f"label selector {selector!r}: {key!r} is given two different values")
            labels[key] = value
    else:
        raise InvalidSelector(
            f"label selector must be a 'k=v,k2=v2' string or a mapping, not {type(selector).__name__}"
        )
    if not labels:
        raise InvalidSelector(f"label selector {selector!r} is empty; it would match every pod, e.g. use 'app=contour'")
    for key, value in labels.items():
        _check(key, value, selector)
    return labels


def format_label_selector(labels: Mapping[str, str]) -> str:
    """The ``k=v,k2=v2`` string form of ``labels``, as the Kubernetes API's ``labelSelector`` expects."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def selector_matches(labels: Mapping[str, str], pod_labels: Mapping[str, str] | None) -> bool:
    """Whether a pod carrying ``pod_labels`` is selected by the equality selector ``labels``."""
    pod_labels = pod_labels or {}
    return all(pod_labels.get(k) == v for k, v in labels.items())
