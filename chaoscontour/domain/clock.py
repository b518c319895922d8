"""Times as this project writes and reads them: ISO 8601 (RFC 3339) in UTC, with a ``Z``.

One place for the formats the journals, the activities' outputs and the objects we write carry, so that they stay
byte-identical wherever they are made. Pure: nothing here reads a clock.

The precisions in use:

* ``"seconds"``: Kubernetes' ``Time`` (``2026-11-26T19:00:00Z``), e.g. the fault's ``expires-at`` annotation;
* ``"milliseconds"``: the traffic sampler's figures (``2026-11-26T19:00:00.250Z``);
* ``"microseconds"``: the fault and route-marker times our activities return (``2026-11-26T19:00:00.250000Z``);
* ``"auto"``: as Kubernetes' ``MicroTime`` reads back: microseconds when there are any, none otherwise.
"""

from datetime import UTC, datetime
from typing import Literal

__all__ = ["Precision", "format_api_time", "format_utc", "parse_api_time", "parse_utc"]

Precision = Literal["auto", "seconds", "milliseconds", "microseconds"]


def format_utc(when: datetime | float, precision: Precision = "auto") -> str:
    """``when`` (a datetime, or seconds since the epoch) in UTC to ``precision``, truncated, with a ``Z``.

    A naive datetime is taken as this machine's local time, as :meth:`datetime.astimezone` takes it.
    """
    moment = when.astimezone(UTC) if isinstance(when, datetime) else datetime.fromtimestamp(when, tz=UTC)
    return moment.isoformat(timespec=precision).replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-26T19:00:00Z``, ``...+02:00``, ``...z``) as an aware datetime; a time without a
    zone is taken as UTC. Raises ``ValueError`` when ``text`` is not such a time."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    when = datetime.fromisoformat(value)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_api_time(value: object) -> datetime | None:
    """A Kubernetes Time/MicroTime field (``2026-11-26T19:00:00.123456Z``) as an aware datetime; an absent one
    (``None``, ``""``) is ``None``, and a datetime (as the kubernetes client returns them) is kept, naive as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_utc(str(value))


def format_api_time(when: datetime | None) -> str | None:
    """A time for a Kubernetes-shaped field or an output beside one (``"auto"`` precision); ``None`` stays ``None``."""
    return format_utc(when) if when else None
