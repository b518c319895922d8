"""Availability maths over request samples: the ratio, the outages, latency percentiles and a per-second timeline.

Pure functions over :class:`Sample` values; the traffic sampler that produces them lives in
``chaoscontour.activities.envoy``. Every time is in seconds since the epoch (UTC), every latency reported in ms.

Definitions used throughout (they are what the README and the experiments' tolerances rely on):

* A request **succeeded** when it got one of the expected HTTP statuses; anything else (another status, a
  timeout, a refused or reset connection) is a failure. The sample's ``outcome`` says which.
* Samples are ordered by the time the request was **sent** (``started_at``), not by when it finished: a request
  that hangs for its whole timeout belongs to the moment it was sent.
* An **outage** starts at the start of the first failed request after a success (or at the first request of the
  window, when the window opens with failures) and ends at the start of the next successful request. An outage
  still running when sampling stops counts until ``window_end``. At a sampling rate ``r`` a real outage of length
  ``T`` is therefore reported as ``T`` within about ``1/r`` seconds.
* **Latency percentiles** are over successful requests only (a timeout's latency is the timeout, a refused
  connection's is near zero: neither says how fast Envoy serves), using the nearest-rank method; ``None`` when no
  request succeeded.
"""

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "Availability",
    "Outage",
    "Sample",
    "find_outages",
    "iso_utc",
    "latency_percentiles_ms",
    "longest_outage_s",
    "per_second_timeline",
    "percentile",
    "summarize",
]


@dataclass(frozen=True)
class Sample:
    """One request: when it was sent (epoch s), how long it took (s), whether it succeeded, and its outcome.

    ``outcome`` is ``"http_<status>"`` for an answer, or an error kind such as ``"timeout"`` or
    ``"connection_refused"``.
    """

    started_at: float
    duration_s: float
    ok: bool
    outcome: str


@dataclass(frozen=True)
class Outage:
    """A run of failed requests: from the first failure's start to the next success's start (or the window end)."""

    started_at: float
    ended_at: float
    failed_requests: int
    still_running: bool

    @property
    def duration_s(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class Availability:
    """What a sampling window showed; :meth:`as_dict` is the JSON-ready form the probe returns."""

    window_start: float
    window_end: float
    requests: int
    successes: int
    availability: float
    outages: list[Outage]
    latency_ms: dict[str, float | None]
    error_kinds: dict[str, int]
    timeline: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return self.requests - self.successes

    @property
    def longest_outage(self) -> Outage | None:
        return max(self.outages, key=lambda o: o.duration_s, default=None)

    @property
    def longest_outage_s(self) -> float:
        longest = self.longest_outage
        return longest.duration_s if longest else 0.0

    def as_dict(self) -> dict[str, Any]:
        longest = self.longest_outage
        return {
            "started_at": iso_utc(self.window_start),
            "ended_at": iso_utc(self.window_end),
            "duration_s": round(self.window_end - self.window_start, 3),
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "availability": self.availability,
            "longest_outage_s": round(self.longest_outage_s, 4),
            "longest_outage_started_at": iso_utc(longest.started_at) if longest else None,
            "outage_count": len(self.outages),
            "latency_ms": dict(self.latency_ms),
            "error_kinds": dict(self.error_kinds),
            "timeline": [dict(row) for row in self.timeline],
        }


def iso_utc(epoch_s: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2025-01-31T12:00:00.250Z``."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 < q <= 100) of ``values`` by the nearest-rank method; ``None`` when empty.

    Nearest rank returns an observed value (the smallest one with at least ``q`` % of the values at or below it),
    so a p99 is a latency some request really had.
    """
    if not 0 < q <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q / 100.0 * len(ordered))
    return ordered[max(rank, 1) - 1]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def latency_percentiles_ms(samples: Iterable[Sample]) -> dict[str, float | None]:
    """p50, p95 and p99 latency in ms of the successful samples (``None`` each when none succeeded)."""
    durations = sorted(s.duration_s for s in samples if s.ok)
    return {
        "p50": _ms(percentile(durations, 50)),
        "p95": _ms(percentile(durations, 95)),
        "p99": _ms(percentile(durations, 99)),
    }


def find_outages(samples: Iterable[Sample], window_end: float) -> list[Outage]:
    """Every outage in ``samples``, in time order (see the module docstring for the definition).

    An outage still running after the last sample lasts until ``window_end`` (or the last failure's start, if that
    is later).
    """
    outages: list[Outage] = []
    start: float | None = None
    failed = 0
    last_start = None
    for sample in sorted(samples, key=lambda s: s.started_at):
        last_start = sample.started_at
        if sample.ok:
            if start is not None:
                outages.append(Outage(start, sample.started_at, failed, still_running=False))
                start, failed = None, 0
        else:
            if start is None:
                start = sample.started_at
            failed += 1
    if start is not None:
        end = max(window_end, last_start if last_start is not None else window_end)
        outages.append(Outage(start, end, failed, still_running=True))
    return outages


def longest_outage_s(samples: Iterable[Sample], window_end: float) -> float:
    """The duration in seconds of the longest outage in ``samples``; 0.0 when every request succeeded."""
    return max((o.duration_s for o in find_outages(samples, window_end)), default=0.0)


def per_second_timeline(samples: Iterable[Sample], window_start: float, window_end: float) -> list[dict[str, Any]]:
    """One row per whole second of the window, for plots.

    Row ``i`` covers requests sent in ``[window_start + i, window_start + i + 1)`` and holds ``second`` (``i``),
    ``epoch_s`` (the row's start, epoch seconds), ``requests``, ``successes`` and ``p50_ms`` / ``p99_ms`` of the
    successful requests (``None`` when there were none). Seconds without requests are kept, with zeros, so a plot
    shows the gap. A request sent after ``window_end`` lands in the last row.
    """
    rows = max(1, math.ceil(window_end - window_start - 1e-9))
    sent = [0] * rows
    ok = [0] * rows
    latencies: list[list[float]] = [[] for _ in range(rows)]
    for s in samples:
        i = min(rows - 1, max(0, int(s.started_at - window_start)))
        sent[i] += 1
        if s.ok:
            ok[i] += 1
            latencies[i].append(s.duration_s)
    return [
        {
            "second": i,
            "epoch_s": round(window_start + i, 3),
            "requests": sent[i],
            "successes": ok[i],
            "p50_ms": _ms(percentile(latencies[i], 50)),
            "p99_ms": _ms(percentile(latencies[i], 99)),
        }
        for i in range(rows)
    ]


def summarize(
    samples: Sequence[Sample], window_start: float, window_end: float, with_timeline: bool = True
) -> Availability:
    """Everything a sampling window showed: counts, availability ratio, outages, latency, error kinds, timeline.

    ``availability`` is ``successes / requests``, and 0.0 when there were no requests (no evidence of service).
    ``error_kinds`` counts the ``outcome`` of every failed request.
    """
    if window_end < window_start:
        raise ValueError(f"window ends ({window_end}) before it starts ({window_start})")
    requests = len(samples)
    successes = sum(1 for s in samples if s.ok)
    return Availability(
        window_start=window_start,
        window_end=window_end,
        requests=requests,
        successes=successes,
        availability=(successes / requests) if requests else 0.0,
        outages=find_outages(samples, window_end),
        latency_ms=latency_percentiles_ms(samples),
        error_kinds=dict(sorted(Counter(s.outcome for s in samples if not s.ok).items())),
        timeline=per_second_timeline(samples, window_start, window_end) if with_timeline else [],
    )
