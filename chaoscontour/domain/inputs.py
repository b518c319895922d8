"""Checks of user input, done before anything is sent to a cluster. Each error says what to write instead."""

import ipaddress
import re
from collections.abc import Iterable
from datetime import UTC, datetime

__all__ = [
    "InvalidInput",
    "parse_cidrs",
    "parse_time",
    "require_name",
    "require_namespace",
    "require_non_negative",
    "require_positive",
    "require_run_id",
]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


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


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidInput(f"{what} must be a number of seconds, not {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(f"{what} must be a number of seconds, not {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidInput(f"{what} must be a finite number of seconds, not {value!r}")
    return number


def require_positive(value: object, what: str) -> float:
    number = _number(value, what)
    if number <= 0:
        raise InvalidInput(f"{what} must be greater than 0, got {value!r}")
    return number


def require_non_negative(value: object, what: str) -> float:
    number = _number(value, what)
    if number < 0:
        raise InvalidInput(f"{what} must be 0 or more, got {value!r}")
    return number


def parse_cidrs(values: Iterable[object] | None, what: str = "extra_cidrs") -> list[str]:
    """Normalise CIDRs (``10.0.0.0/8``, ``fd00::/64``; a bare address is a host route) or explain the bad one."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
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
        cidrs.append(str(network))
    return cidrs


def parse_time(value: object, what: str = "since") -> datetime:
    """An ISO 8601 time (``2026-11-26T19:00:00Z``); a time without zone is taken as UTC."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be an ISO 8601 time such as '2026-11-26T19:00:00Z', got {value!r}")
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{what} must be an ISO 8601 time such as '2026-11-26T19:00:00Z', got {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


_RUN_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")


def require_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidInput(
            f"run_id {run_id!r} must be 1-32 lowercase letters, digits or '-' (it becomes a label value and part "
            "of object names), e.g. 'gameday-7'"
        )
    return run_id
