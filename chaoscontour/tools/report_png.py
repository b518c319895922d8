"""The PNG of ``chaoscontour report``: availability, the lanes of the endpoint-churn and xDS timeline when the journal
has them, latency and requests per second (and, from ``envoy_success_ratio``, the requests and 5xx Envoy itself
counted per interval), on one time axis, with the fault window shaded and each marker numbered and listed in a key
under the plot. matplotlib (the optional ``[report]`` extra) is imported only here, only to draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from chaoscontour.tools.timeline import MARKER_NAMES, ReportData
from chaoscontour.tools.tracks import LANE_NAMES, Tracks

__all__ = ["KEY_LABEL_CHARS", "MAX_KEY_LINES", "MISSING_MATPLOTLIB", "envoy_rates", "label_levels", "render_png"]

MAX_KEY_LINES = 16
KEY_LABEL_CHARS = 54
MISSING_MATPLOTLIB = (
    "chaoscontour report needs matplotlib, which is an optional extra: pip install 'chaostoolkit-contour[report]'"
)

_COLOURS = {
    "availability": "#1f4e9c",
    "loss": "#d62728",
    "p50": "#17a2b8",
    "p95": "#e67e22",
    "p99": "#8e44ad",
    "fault": "#b03a2e",
    "window": "#f4d03f",
    "fault-end": "#1e8449",
    "restart": "#34495e",
    "requests": "#95a5a6",
    "endpoints": "#2e86c1",
    "xds": "#7d3c98",
    "route": "#117a65",
    "restarted-envoy": "#a04000",
    "stop": "#000000",
    "envoy-requests": "#1a5276",
    "envoy-5xx": "#c0392b",
    "prometheus-requests": "#5d6d7e",
    "prometheus-5xx": "#e59866",
}
# Marker kinds: how each is drawn (MARKER_NAMES names them in the legend).
_STYLES: dict[str, Any] = {
    "fault": "-",
    "fault-end": "--",
    "restart": ":",
    "endpoints": "-.",
    "xds": "-.",
    "route": "-.",
    "restarted-envoy": "-.",
    "stop": "-",
}
_SPAN_COLOURS = {"ok": "#58d68d", "bad": "#e74c3c", "held": "#f5b041", "unknown": "#d5dbdb"}


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")  # no display in CI or in a pod
    from matplotlib import pyplot

    return pyplot


def _steps(offsets: list[float], values: list[float | None]) -> tuple[list[float], list[float]]:
    """Step-plot columns where each value covers its whole second; ``None`` becomes a gap (NaN)."""
    xs = [*offsets, offsets[-1] + 1.0]
    ys = [math.nan if v is None else v for v in values]
    return xs, [*ys, ys[-1]]


def label_levels(offsets: Sequence[float], width: float, slots: int = 4) -> list[int]:
    """A vertical slot per marker badge so that badges of markers closer than 3 % of ``width`` do not overlap."""
    gap = width * 0.03
    last: list[float] = [-math.inf] * slots
    levels = []
    for x in offsets:
        level = next((i for i in range(slots) if x - last[i] >= gap), min(range(slots), key=lambda i: last[i]))
        last[level] = x
        levels.append(level)
    return levels


_SPAN_NAMES = {
    "ok": "working / matching",
    "bad": "dead / differing",
    "held": "held back / unnoticed",
    "unknown": "changed within",
}


def _draw_lanes(ax: Any, tracks: Tracks) -> list[Any]:
    """One row per lane of spans (bars labelled inside when wide enough), failed xDS streams as crosses, and the
    age of Envoy's configuration on a second axis; returns the legend handles."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    lanes = list(reversed(tracks.lanes))
    left, right = ax.get_xlim()
    for span in tracks.spans:
        row = lanes.index(span.lane)
        width = span.end_s - span.start_s
        ax.broken_barh(
            [(span.start_s, width)],
            (row - 0.35, 0.7),
            facecolors=_SPAN_COLOURS.get(span.kind, "#d5dbdb"),
            edgecolor="#555555" if span.kind == "unknown" else "none",
            hatch="//" if span.kind == "unknown" else None,
            linewidth=0.5,
        )
        if width > 0.12 * (right - left):
            ax.text(span.start_s + width / 2, row, span.label, ha="center", va="center", fontsize=7, clip_on=True)
    handles: list[Any] = [
        Patch(facecolor=_SPAN_COLOURS[kind], hatch="//" if kind == "unknown" else None, label=_SPAN_NAMES[kind])
        for kind in dict.fromkeys(s.kind for s in tracks.spans)
    ]
    if tracks.failed_streams_s and "xds" in lanes:
        row = lanes.index("xds")
        ax.plot(tracks.failed_streams_s, [row] * len(tracks.failed_streams_s), "x", color="#7b241c", markersize=6)
        handles.append(Line2D([], [], color="#7b241c", marker="x", linestyle="", label="failed xDS stream"))
    ax.set_yticks(range(len(lanes)), [LANE_NAMES.get(lane, lane) for lane in lanes], fontsize=8)
    ax.set_ylim(-0.6, max(len(lanes), 1) - 0.4)
    if tracks.update_age:
        twin = ax.twinx()
        age_style: dict[str, Any] = {"color": "#34495e", "linewidth": 1.2, "alpha": 0.8}
        twin.plot([p[0] for p in tracks.update_age], [p[1] for p in tracks.update_age], **age_style)
        twin.set_ylabel("config age (s)", fontsize=8)
        twin.set_ylim(bottom=0)
        handles.append(Line2D([], [], **age_style, label="age of Envoy's configuration"))
    return handles


def envoy_rates(
    intervals: Sequence[tuple[float, float, int | None, int | None]], origin: float
) -> tuple[list[float], list[float], list[float]]:
    """Step-plot columns (``where="post"``) of Envoy's own counts per second, from ``envoy_success_ratio``'s
    intervals: offsets from ``origin``, and the requests and 5xx per second over each interval. NaN, a gap, where a
    restart left an interval unknown, and between two intervals a failed reading left apart."""
    rows = sorted(intervals)
    xs: list[float] = []
    sent_ys: list[float] = []
    failed_ys: list[float] = []
    for index, (epoch, duration, sent, failed) in enumerate(rows):
        start = epoch - origin
        known = duration > 0 and sent is not None and failed is not None
        xs.append(start)
        sent_ys.append(sent / duration if known and sent is not None else math.nan)
        failed_ys.append(failed / duration if known and failed is not None else math.nan)
        following = rows[index + 1][0] - origin if index + 1 < len(rows) else None
        if following is None or following - (start + duration) > 0.01:
            xs.append(start + duration)
            sent_ys.append(sent_ys[-1] if following is None else math.nan)
            failed_ys.append(failed_ys[-1] if following is None else math.nan)
    return xs, sent_ys, failed_ys


def _draw_envoy_counts(ax: Any, data: ReportData) -> list[Any]:
    """Envoy's own requests per second on the requests panel, and its 5xx per second on a second axis (a few 5xx
    among thousands of requests would not show on one): the first output of each source, Envoy's stats endpoint
    (solid) and Prometheus (dashed); returns the legend handles."""
    from matplotlib.lines import Line2D

    handles: list[Any] = []
    twin = None
    peak = 0.0
    firsts = {t.source: t for t in reversed(data.verdict.traffic) if t.intervals}
    for source, t in sorted(firsts.items()):
        if data.origin_epoch_s is None:
            continue
        xs, sent, failed = envoy_rates(t.intervals, data.origin_epoch_s)
        kind = "prometheus" if source == "prometheus" else "envoy"
        style: Literal["--", "-"] = "--" if source == "prometheus" else "-"
        label = "Prometheus" if source == "prometheus" else "Envoy's counters"
        ax.step(xs, sent, where="post", color=_COLOURS[f"{kind}-requests"], linewidth=1.2, linestyle=style)
        twin = twin or ax.twinx()
        twin.step(xs, failed, where="post", color=_COLOURS[f"{kind}-5xx"], linewidth=1.6, linestyle=style)
        twin.fill_between(xs, failed, 0, step="post", color=_COLOURS[f"{kind}-5xx"], alpha=0.2, linewidth=0)
        peak = max(peak, max((v for v in failed if not math.isnan(v)), default=0.0))
        handles.append(
            Line2D([], [], color=_COLOURS[f"{kind}-requests"], linestyle=style, label=f"{label}: requests / s")
        )
        handles.append(
            Line2D([], [], color=_COLOURS[f"{kind}-5xx"], linestyle=style, label=f"{label}: 5xx / s (right)")
        )
    if twin is not None:
        twin.set_ylim(0, max(peak * 1.25, 1.0))
        twin.set_ylabel("Envoy's 5xx / s", color=_COLOURS["envoy-5xx"], fontsize=8)
    return handles


def render_png(data: ReportData, path: Path) -> None:
    plt = _import_pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    key_rows = min(len(data.markers), MAX_KEY_LINES + 1)
    lanes = bool(data.tracks.spans or data.tracks.update_age)
    heights = [3, 0.45 * len(data.tracks.lanes) + 0.6, 3, 1.4] if lanes else [3, 3, 1.4]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(12, 8.5 + heights[1] * lanes + 0.2 * (key_rows if key_rows <= 4 else math.ceil(key_rows / 2))),
        sharex=True,
        gridspec_kw={"height_ratios": heights, "hspace": 0.12},
    )
    ax_av, ax_lat, ax_req = (axes[0], axes[2], axes[3]) if lanes else axes
    outcome = "PASSED" if data.verdict.passed else "FAILED"
    fig.suptitle(f"{data.title}\nchaos gate: {outcome} (run status {data.verdict.status})", fontsize=13)

    handles: list[Any] = []
    series = data.series
    if series is not None and series.offset_s:
        xs, av = _steps(series.offset_s, series.availability_pct)
        ax_av.step(xs, av, where="post", color=_COLOURS["availability"], linewidth=1.8)
        ax_av.fill_between(xs, av, 100, step="post", color=_COLOURS["loss"], alpha=0.18, linewidth=0)
        handles.append(Line2D([], [], color=_COLOURS["availability"], label="availability per second"))
        handles.append(Patch(color=_COLOURS["loss"], alpha=0.25, label="failed requests"))
        for q, values in (("p50", series.p50_ms), ("p95", series.p95_ms), ("p99", series.p99_ms)):
            if any(v is not None for v in values):
                lx, ly = _steps(series.offset_s, values)
                ax_lat.step(lx, ly, where="post", color=_COLOURS[q], linewidth=1.4)
                handles.append(Line2D([], [], color=_COLOURS[q], label=f"{q} latency"))
        latencies = [v for vs in (series.p50_ms, series.p95_ms, series.p99_ms) for v in vs if v is not None and v > 0]
        if latencies and max(latencies) / max(min(latencies), 1e-6) > 30:
            ax_lat.set_yscale("log")
        else:
            ax_lat.set_ylim(bottom=0)
        ax_req.bar(series.offset_s, series.requests, width=1.0, align="edge", color=_COLOURS["requests"], alpha=0.7)
        right = max([series.offset_s[-1] + 1.0, *(m.offset_s + 0.5 for m in data.markers)])
        ax_req.set_xlim(min([0.0, *(m.offset_s - 0.5 for m in data.markers)]), right)
    else:
        ax_av.text(0.5, 0.5, "no envoy_availability timeline in this journal", transform=ax_av.transAxes, ha="center")
        offsets = [m.offset_s for m in data.markers]
        if offsets:
            ax_req.set_xlim(min(0.0, *offsets) - 1, max(offsets) + 5)

    handles += _draw_envoy_counts(ax_req, data)
    ax_av.set_ylim(-3, 105)
    ax_av.set_ylabel("availability (%)")
    ax_lat.set_ylabel("latency of successes (ms)")
    ax_req.set_ylabel("requests / s")
    origin = (
        datetime.fromtimestamp(data.origin_epoch_s, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        if data.origin_epoch_s is not None
        else "the journal's start"
    )
    ax_req.set_xlabel(f"seconds since {origin}")
    for ax in axes:
        ax.grid(True, alpha=0.3)

    if data.fault_window is not None:
        for ax in axes:
            ax.axvspan(*data.fault_window, color=_COLOURS["window"], alpha=0.22, linewidth=0, zorder=0)
        handles.append(Patch(color=_COLOURS["window"], alpha=0.35, label="fault window"))
    if lanes:
        handles += _draw_lanes(axes[1], data.tracks)
    # Each marker line carries a numbered badge at the top; the key under the plot says what each number is, so
    # labels never overlap however close the markers are.
    left, right = ax_av.get_xlim()
    for number, (marker, level) in enumerate(
        zip(data.markers, label_levels([m.offset_s for m in data.markers], right - left), strict=True), start=1
    ):
        for ax in axes:
            ax.axvline(marker.offset_s, color=_COLOURS[marker.kind], linestyle=_STYLES[marker.kind], linewidth=1.6)
        ax_av.annotate(
            str(number),
            xy=(marker.offset_s, 0.97 - 0.1 * level),
            xycoords=("data", "axes fraction"),
            ha="center",
            va="top",
            fontsize=8,
            fontweight="bold",
            color="white",
            bbox={"boxstyle": "circle,pad=0.25", "facecolor": _COLOURS[marker.kind], "edgecolor": "none"},
        )
    for kind in dict.fromkeys(m.kind for m in data.markers):
        handles.append(Line2D([], [], color=_COLOURS[kind], linestyle=_STYLES[kind], label=MARKER_NAMES[kind]))

    # Long labels are cut in the key (the HTML page lists them whole).
    key = [
        f"({n}) t={m.offset_s:.1f} s  "
        + (m.label if len(m.label) <= KEY_LABEL_CHARS else m.label[: KEY_LABEL_CHARS - 3] + "...")
        for n, m in enumerate(data.markers[:MAX_KEY_LINES], start=1)
    ]
    if len(data.markers) > MAX_KEY_LINES:
        key.append(f"... and {len(data.markers) - MAX_KEY_LINES} more (see the HTML page)")
    key_columns = 2 if len(key) > 4 else 1
    key_rows = math.ceil(len(key) / key_columns)
    inch = 1.0 / fig.get_figheight()
    key_height = (0.15 + 0.16 * key_rows) if key else 0.0
    for column in range(key_columns):
        lines = key[column * key_rows : (column + 1) * key_rows]
        fig.text(0.08 + 0.46 * column, 0.12 * inch, "\n".join(lines), fontsize=8.5, va="bottom", family="monospace")
    if handles:
        fig.legend(
            handles=handles,
            loc="lower center",
            bbox_to_anchor=(0.5, key_height * inch),
            ncol=min(len(handles), 5),
            frameon=False,
            fontsize=9,
        )
    legend_rows = math.ceil(len(handles) / 5)
    bottom = (key_height + 0.35 + 0.22 * legend_rows + 0.6) * inch
    # A second axis on the right (the lanes' config age, Envoy's 5xx) needs room for its labels.
    twin = lanes or any(t.intervals for t in data.verdict.traffic)
    fig.subplots_adjust(top=1 - 0.75 * inch, bottom=bottom, left=0.11 if lanes else 0.08, right=0.94 if twin else 0.98)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
