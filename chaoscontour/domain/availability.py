"""Availability maths over request samples: the ratio, the outages, latency percentiles and a per-second timeline.

Pure functions over :class:`Sample` values, or over a :class:`SampleSeries` (the same samples held in columns,
cheap enough for a million requests); the traffic sampler that produces them lives in
``chaoscontour.edges.sampler``. Every time is in seconds since the epoch (UTC), every latency reported in ms.

Definitions used throughout (they are what the docs and the experiments' tolerances rely on):

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
* A request that was due but **could not be sent** (every connection the sampler may open was busy, e.g. with
  requests hanging on a hung backend) is a failure with outcome ``not_sent`` at its due time: open-loop traffic
  never silently drops a request, and the outage it belongs to stays one outage. ``requests_not_sent`` counts them.
"""

import math
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoscontour.domain.clock import format_utc

__all__ = [
    "NOT_SENT",
    "UNFINISHED",
    "Availability",
    "Outage",
    "OutageTracker",
    "Sample",
    "SampleSeries",
    "find_outages",
    "iso_utc",
    "latency_percentiles_ms",
    "longest_outage_s",
    "per_second_timeline",
    "percentile",
    "summarize",
]


NOT_SENT = "not_sent"
UNFINISHED = "unfinished"


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


class SampleSeries:
    """Samples in columns, in the order they were sent: what a sampler at thousands of requests per second keeps.

    ``started_at`` and ``duration_s`` are arrays of floats, ``ok`` one byte per sample, ``outcome`` an index into
    ``kinds`` (the distinct outcomes). Iterating yields :class:`Sample` values.
    """

    def __init__(self) -> None:
        self.started_at: array[float] = array("d")
        self.duration_s: array[float] = array("d")
        self.ok = bytearray()
        self.outcome: array[int] = array("H")
        self.kinds: list[str] = []
        self._kind_index: dict[str, int] = {}

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> "SampleSeries":
        series = cls()
        for s in sorted(samples, key=lambda s: s.started_at):
            series.append(s.started_at, s.duration_s, s.ok, s.outcome)
        return series

    @classmethod
    def of_columns(
        cls,
        started_at: "array[float]",
        duration_s: "array[float]",
        ok: bytearray,
        outcome: "array[int]",
        kinds: list[str],
    ) -> "SampleSeries":
        """A series over columns already in send order (``outcome[i]`` indexes ``kinds``); nothing is copied."""
        if not len(started_at) == len(duration_s) == len(ok) == len(outcome):
            raise ValueError("columns of different lengths")
        series = cls()
        series.started_at, series.duration_s, series.ok, series.outcome = started_at, duration_s, ok, outcome
        for kind in kinds:
            series.kind(kind)
        return series

    def kind(self, outcome: str) -> int:
        """The index of ``outcome`` in ``kinds`` (added when new)."""
        index = self._kind_index.get(outcome)
        if index is None:
            index = self._kind_index[outcome] = len(self.kinds)
            self.kinds.append(outcome)
        return index

    def append(self, started_at: float, duration_s: float, ok: bool, outcome: str) -> None:
        """Add a sample sent no earlier than the last one."""
        self.started_at.append(started_at)
        self.duration_s.append(duration_s)
        self.ok.append(1 if ok else 0)
        self.outcome.append(self.kind(outcome))

    def __len__(self) -> int:
        return len(self.started_at)

    def __iter__(self) -> Iterator[Sample]:
        kinds = self.kinds
        for t, d, ok, o in zip(self.started_at, self.duration_s, self.ok, self.outcome, strict=True):
            yield Sample(t, d, bool(ok), kinds[o])

    def count(self, outcome: str) -> int:
        index = self._kind_index.get(outcome)
        return 0 if index is None else self.outcome.count(index)


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
    not_sent: int = 0

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
            "requests_not_sent": self.not_sent,
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
    return format_utc(epoch_s, "milliseconds")


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


def _series(samples: Iterable[Sample] | SampleSeries) -> SampleSeries:
    return samples if isinstance(samples, SampleSeries) else SampleSeries.of(samples)


def latency_percentiles_ms(samples: Iterable[Sample] | SampleSeries) -> dict[str, float | None]:
    """p50, p95 and p99 latency in ms of the successful samples (``None`` each when none succeeded)."""
    series = _series(samples)
    durations = sorted(d for d, ok in zip(series.duration_s, series.ok, strict=True) if ok)
    return {
        "p50": _ms(percentile(durations, 50)),
        "p95": _ms(percentile(durations, 95)),
        "p99": _ms(percentile(durations, 99)),
    }


class OutageTracker:
    """Outages found as samples are added in send order, at a constant cost per sample (for progress lines)."""

    def __init__(self) -> None:
        self.outages: list[Outage] = []
        self.requests = 0
        self.successes = 0
        self.longest_closed_s = 0.0
        self._start: float | None = None
        self._failed = 0
        self._last_start: float | None = None

    def add(self, started_at: float, ok: bool) -> None:
        self.requests += 1
        self._last_start = started_at
        if ok:
            self.successes += 1
            if self._start is not None:
                outage = Outage(self._start, started_at, self._failed, still_running=False)
                self.outages.append(outage)
                self.longest_closed_s = max(self.longest_closed_s, outage.duration_s)
                self._start, self._failed = None, 0
        else:
            if self._start is None:
                self._start = started_at
            self._failed += 1

    def running(self, window_end: float) -> Outage | None:
        """The outage still running, counted until ``window_end`` (or the last failure's start, if later)."""
        if self._start is None:
            return None
        end = max(window_end, self._last_start if self._last_start is not None else window_end)
        return Outage(self._start, end, self._failed, still_running=True)

    def all(self, window_end: float) -> list[Outage]:
        running = self.running(window_end)
        return [*self.outages, running] if running else list(self.outages)

    def longest_s(self, window_end: float) -> float:
        running = self.running(window_end)
        return max(self.longest_closed_s, running.duration_s if running else 0.0)


def find_outages(samples: Iterable[Sample] | SampleSeries, window_end: float) -> list[Outage]:
    """Every outage in ``samples``, in time order (see the module docstring for the definition).

    An outage still running after the last sample lasts until ``window_end`` (or the last failure's start, if that
    is later).
    """
    series = _series(samples)
    tracker = OutageTracker()
    for started_at, ok in zip(series.started_at, series.ok, strict=True):
        tracker.add(started_at, bool(ok))
    return tracker.all(window_end)


def longest_outage_s(samples: Iterable[Sample] | SampleSeries, window_end: float) -> float:
    """The duration in seconds of the longest outage in ``samples``; 0.0 when every request succeeded."""
    return max((o.duration_s for o in find_outages(samples, window_end)), default=0.0)


def per_second_timeline(
    samples: Iterable[Sample] | SampleSeries, window_start: float, window_end: float
) -> list[dict[str, Any]]:
    """One row per whole second of the window, for plots.

    Row ``i`` covers requests sent in ``[window_start + i, window_start + i + 1)`` and holds ``second`` (``i``),
    ``epoch_s`` (the row's start, epoch seconds), ``requests``, ``successes`` and ``p50_ms`` / ``p95_ms`` /
    ``p99_ms`` of the successful requests (``None`` when there were none). Seconds without requests are kept, with
    zeros, so a plot shows the gap. A request sent after ``window_end`` lands in the last row.
    """
    rows = max(1, math.ceil(window_end - window_start - 1e-9))
    sent = [0] * rows
    ok = [0] * rows
    latencies: list[list[float]] = [[] for _ in range(rows)]
    series = _series(samples)
    for started_at, duration_s, succeeded in zip(series.started_at, series.duration_s, series.ok, strict=True):
        i = min(rows - 1, max(0, int(started_at - window_start)))
        sent[i] += 1
        if succeeded:
            ok[i] += 1
            latencies[i].append(duration_s)
    return [
        {
            "second": i,
            "epoch_s": round(window_start + i, 3),
            "requests": sent[i],
            "successes": ok[i],
            "p50_ms": _ms(percentile(latencies[i], 50)),
            "p95_ms": _ms(percentile(latencies[i], 95)),
            "p99_ms": _ms(percentile(latencies[i], 99)),
        }
        for i in range(rows)
    ]


def summarize(
    samples: Sequence[Sample] | SampleSeries, window_start: float, window_end: float, with_timeline: bool = True
) -> Availability:
    """Everything a sampling window showed: counts, availability ratio, outages, latency, error kinds, timeline.

    ``availability`` is ``successes / requests``, and 0.0 when there were no requests (no evidence of service).
    ``requests`` includes the requests that were due but could not be sent (``not_sent``, failures).
    ``error_kinds`` counts the ``outcome`` of every failed request.
    """
    if window_end < window_start:
        raise ValueError(f"window ends ({window_end}) before it starts ({window_start})")
    series = _series(samples)
    requests = len(series)
    successes = series.ok.count(1)
    failed = Counter(o for o, ok in zip(series.outcome, series.ok, strict=True) if not ok)
    return Availability(
        window_start=window_start,
        window_end=window_end,
        requests=requests,
        successes=successes,
        availability=(successes / requests) if requests else 0.0,
        outages=find_outages(series, window_end),
        latency_ms=latency_percentiles_ms(series),
        error_kinds=dict(sorted((series.kinds[o], n) for o, n in failed.items())),
        timeline=per_second_timeline(series, window_start, window_end) if with_timeline else [],
        not_sent=series.count(NOT_SENT),
    )
