"""Checks of user input, done before anything is sent to a cluster. Each error says what to write instead.

Chaos Toolkit passes arguments as written: values from ``--var``, from configuration entries and from environment
variables arrive as strings, and nothing is coerced from type hints. So every activity parses every argument here,
strictly: ``"false"`` is false (never truthy), ``"30"`` is 30, ``"3O"`` is an error, and every number has an upper
bound so that a typo cannot create a fault that outlives everyone who knows about it.
"""

import ipaddress
import math
import re
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from chaoscontour.domain.clock import parse_utc

__all__ = [
    "MAX_DURATION_S",
    "InvalidInput",
    "parse_bool",
    "parse_choice",
    "parse_cidrs",
    "parse_count",
    "parse_host",
    "parse_http_url",
    "parse_ratio",
    "parse_seconds",
    "parse_statuses",
    "parse_time",
    "redact_url",
    "require_name",
    "require_namespace",
    "require_non_negative",
    "require_positive",
    "require_run_id",
]

# One day: longer than any fault window or wait a chaos experiment has reason for, short enough that a typo
# (an extra zero or two) is refused instead of leaving a fault in place for weeks.
MAX_DURATION_S = 86_400.0

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class InvalidInput(ValueError):
    """An argument that cannot be used; the message names it and says what a valid one looks like."""


def require_namespace(namespace: object, what: str = "namespace") -> str:
    if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace):
        raise InvalidInput(
            f"{what} {namespace!r} is not a valid namespace name (lowercase letters, digits and '-', "
            "at most 63 characters), e.g. 'projectcontour'"
        )
    return namespace


def require_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _DNS_SUBDOMAIN.match(name):
        raise InvalidInput(f"{what} {name!r} is not a valid object name (lowercase letters, digits, '-' and '.')")
    return name


def parse_bool(value: object, what: str) -> bool:
    """``True``/``False``, or one of ``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case); nothing else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise InvalidInput(f"{what} must be true or false (also yes/no, on/off, 1/0), not {value!r}")


def _number(value: object, what: str, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(f"{what} must be a number{unit}, not {value!r}")
    try:
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError:
        raise InvalidInput(f"{what} must be a number{unit}, not {value!r}") from None
    if not math.isfinite(number):
        raise InvalidInput(f"{what} must be a finite number{unit}, not {value!r}")
    return number


def parse_seconds(
    value: object,
    what: str,
    *,
    minimum: float = 0.0,
    maximum: float = MAX_DURATION_S,
    allow_zero: bool = False,
) -> float:
    """A number of seconds in ``[minimum, maximum]`` (``minimum`` exclusive when it is 0 unless ``allow_zero``)."""
    number = _number(value, what, " of seconds")
    if allow_zero and number == 0:
        return 0.0
    if number < minimum or (minimum == 0 and number <= 0):
        if allow_zero and minimum == 0:
            raise InvalidInput(f"{what} must be 0 or more seconds, got {value!r}")
        floor = f"at least {minimum:g}" if minimum > 0 else "greater than 0"
        raise InvalidInput(f"{what} must be {floor}{' (or 0)' if allow_zero else ''} seconds, got {value!r}")
    if number > maximum:
        raise InvalidInput(f"{what} must be at most {maximum:g} seconds, got {value!r}: is there a typo?")
    return number


def parse_count(value: object, what: str, *, minimum: int = 0, maximum: int) -> int:
    """A whole number in ``[minimum, maximum]`` (``"3"`` is 3; ``"3.5"`` and ``True`` are errors)."""
    number = _number(value, what, "")
    if number != int(number):
        raise InvalidInput(f"{what} must be a whole number, not {value!r}")
    if not minimum <= number <= maximum:
        raise InvalidInput(f"{what} must be between {minimum} and {maximum}, got {value!r}")
    return int(number)


def parse_ratio(value: object, what: str) -> float:
    """A ratio between 0 and 1, such as 0.999."""
    number = _number(value, what, " between 0 and 1 (e.g. 0.999)")
    if not 0 <= number <= 1:
        raise InvalidInput(f"{what} must be a ratio between 0 and 1, such as 0.999, got {value!r}")
    return number


def require_positive(value: object, what: str, maximum: float = MAX_DURATION_S) -> float:
    """Seconds greater than 0 and at most ``maximum``."""
    return parse_seconds(value, what, maximum=maximum)


def require_non_negative(value: object, what: str, maximum: float = MAX_DURATION_S) -> float:
    """Seconds from 0 to ``maximum``."""
    return parse_seconds(value, what, maximum=maximum, allow_zero=True)


def parse_choice(value: object, what: str, choices: Iterable[str]) -> str:
    options = tuple(choices)
    word = value.strip().lower() if isinstance(value, str) else value
    if word not in options:
        raise InvalidInput(f"{what} must be one of {', '.join(options)}, not {value!r}")
    return str(word)


def redact_url(url: str) -> str:
    """``url`` without credentials, for errors, logs and results."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = "***@" + parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse_http_url(value: object, what: str, example: str = "http://127.0.0.1:8080/") -> str:
    """An ``http://`` or ``https://`` URL with a host; an error never echoes the credentials it may carry."""
    url = value.strip() if isinstance(value, str) else ""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise InvalidInput(f"{what} has an invalid host or port: {_safe(url)!r}; write e.g. {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        shown = _safe(url) if isinstance(value, str) else value
        raise InvalidInput(f"{what} must be an http:// or https:// URL such as {example}, got {shown!r}")
    return url


def _safe(url: str) -> str:
    try:
        shown = redact_url(url)
    except ValueError:
        return "<unparsable URL>" if "@" in url else url
    if "@" in shown and shown == url:
        # Credentials that urlsplit did not see (no "scheme://", e.g. "admin:secret@envoy:8080"): hide them anyway.
        return "***@" + url.rpartition("@")[2]
    return shown


def parse_host(value: object, what: str = "host") -> str:
    """A Host header value (``echo.example.com``, optionally ``:port``), or empty for none."""
    if value is None:
        return ""
    if not isinstance(value, str) or any(c.isspace() for c in value.strip()):
        raise InvalidInput(f"{what} must be a host name such as 'echo.example.com' (or empty), got {value!r}")
    return value.strip()


def parse_statuses(value: object, what: str = "expected_status") -> frozenset[int]:
    """HTTP status codes: ``[200, 204]``, ``200``, or ``"200,204"``."""
    items: Iterable[object]
    if isinstance(value, str):
        items = [v for v in value.replace(" ", ",").split(",") if v]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = value
    else:
        items = []
    codes = set()
    for item in items:
        try:
            code = int(item) if isinstance(item, (int, str)) and not isinstance(item, bool) else -1
        except ValueError:
            code = -1
        if not 100 <= code <= 599:
            raise InvalidInput(
                f"{what} must list HTTP status codes between 100 and 599, such as [200, 204]; {item!r} is not one"
            )
        codes.add(code)
    if not codes:
        raise InvalidInput(f"{what} must list at least one HTTP status code, such as [200]; got {value!r}")
    return frozenset(codes)


# The widest block extra CIDRs may add without force: no prefix shorter than /8, and together at most 1/16 of their
# address family (a /4's worth). 0.0.0.0/1 + 128.0.0.0/1 is 0.0.0.0/0 in two halves, not two networks.
MIN_CIDR_PREFIX = 8
MAX_CIDR_SHARE = 1 / 16


def parse_cidrs(values: Iterable[object] | None, what: str = "extra_cidrs", *, bounded: bool = True) -> list[str]:
    """Normalise CIDRs (``10.0.0.0/8``, ``fd00::/64``; a bare address is a host route) or explain the bad one.

    ``bounded`` (the default) also refuses any prefix shorter than ``/MIN_CIDR_PREFIX`` and sets that together cover
    more than ``MAX_CIDR_SHARE`` of IPv4 or of IPv6: such a "block" cuts the pods off from most of the world.
    """
    if values is None or values == "":
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    elif not isinstance(values, (list, tuple)):
        raise InvalidInput(f"{what} must be a list of CIDRs or a comma-separated string, not {values!r}")
    cidrs: list[str] = []
    for value in values:
        try:
            network = ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            raise InvalidInput(
                f"{what}: {value!r} is not a CIDR; write e.g. '10.0.0.0/8', '203.0.113.7/32' or 'fd00::/64'"
            ) from None
        if network.prefixlen == 0:
            raise InvalidInput(f"{what}: {value!r} would block every address; name the networks to block")
        if bounded and network.prefixlen < MIN_CIDR_PREFIX:
            raise InvalidInput(
                f"{what}: {value!r} is wider than a /{MIN_CIDR_PREFIX}; name the networks in front of the API server "
                "(force=true accepts it)"
            )
        cidrs.append(str(network))
    for version in (4, 6):
        family = [ipaddress.ip_network(c) for c in cidrs if ipaddress.ip_network(c).version == version]
        total = 2 ** (32 if version == 4 else 128)
        covered = sum(n.num_addresses for n in ipaddress.collapse_addresses(family))  # type: ignore[type-var,misc]
        if bounded and covered > total * MAX_CIDR_SHARE:
            raise InvalidInput(
                f"{what}: together {', '.join(str(n) for n in family)} cover {covered / total:.1%} of IPv{version}, "
                f"more than {MAX_CIDR_SHARE:.2%}; name the networks in front of the API server (force=true accepts "
                "it)"
            )
    return cidrs


def parse_time(value: object, what: str = "since") -> datetime:
    """An ISO 8601 time (``2026-11-26T19:00:00Z``); a time without zone is taken as UTC."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be an ISO 8601 time such as '2026-11-26T19:00:00Z', got {value!r}")
    try:
        return parse_utc(value)
    except ValueError:
        raise InvalidInput(f"{what} must be an ISO 8601 time such as '2026-11-26T19:00:00Z', got {value!r}") from None


_RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def require_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidInput(
            f"run_id {run_id!r} must be 1-32 lowercase letters, digits or '-' (it becomes a label value and part "
            "of object names), e.g. 'gameday-7'"
        )
    return run_id
