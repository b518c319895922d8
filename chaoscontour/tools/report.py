"""``chaoscontour report JOURNAL``: a PNG of what Envoy's clients saw during the experiment, and an HTML page.

The PNG plots, per second, the availability and the latency that ``envoy_availability`` measured (its output's
``timeline``), with the fault and its removal marked: the start of ``block_apiserver_egress``, ``block_xds_egress`` or
``kill_leader``, their removal, the window between them shaded, and each Contour container termination that a
``contour_restart_count`` output lists. For the endpoint-churn and xDS experiments a lane panel under the
availability shows, on the same axis, what their probes recorded (:mod:`chaoscontour.tools.tracks`). The HTML page
embeds the PNG next to the gate's outcome, that timeline as tables, and an activity table.

:func:`chaoscontour.tools.timeline.report_data` computes what is drawn, without drawing; matplotlib (the optional
``[report]`` extra) is imported only to draw.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaoscontour.tools import journal as j
from chaoscontour.tools.journal import JournalError, epoch_of, load_journal
from chaoscontour.tools.timeline import ReportData, report_data
from chaoscontour.tools.tracks import Tracks

__all__ = ["MISSING_MATPLOTLIB", "label_levels", "main", "render_html", "render_png", "tracks_html"]

MAX_KEY_LINES = 16
MISSING_MATPLOTLIB = (
    "chaoscontour report needs matplotlib, which is an optional extra: pip install 'chaostoolkit-contour[report]'"
)


# --------------------------------------------------------------------------------------------------------- drawing

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
    "stop": "#000000",
}
# Marker kinds: how each is drawn and named in the legend.
_STYLES: dict[str, Any] = {
    "fault": "-",
    "fault-end": "--",
    "restart": ":",
    "endpoints": "-.",
    "xds": "-.",
    "route": "-.",
    "stop": "-",
}
_NAMES = {
    "fault": "fault injected",
    "fault-end": "fault removed",
    "restart": "Contour restart",
    "endpoints": "endpoint event",
    "xds": "xDS event",
    "route": "route change",
    "stop": "stop condition tripped",
}
_LANES = {
    "slices": "EndpointSlices",
    "endpoints": "Envoy endpoints",
    "xds": "xDS stream",
    "xds-gauge": "xDS gauge",
    "route": "route change",
}
KEY_LABEL_CHARS = 54
_SPAN_COLOURS = {"ok": "#58d68d", "bad": "#e74c3c", "held": "#f5b041", "unknown": "#d5dbdb"}


def _import_pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError(MISSING_MATPLOTLIB) from exc
    matplotlib.use("Agg")  # no display in CI or in a pod
    import matplotlib.pyplot as plt

    return plt


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
    ax.set_yticks(range(len(lanes)), [_LANES.get(lane, lane) for lane in lanes], fontsize=8)
    ax.set_ylim(-0.6, max(len(lanes), 1) - 0.4)
    if tracks.update_age:
        twin = ax.twinx()
        age_style: dict[str, Any] = {"color": "#34495e", "linewidth": 1.2, "alpha": 0.8}
        twin.plot([p[0] for p in tracks.update_age], [p[1] for p in tracks.update_age], **age_style)
        twin.set_ylabel("config age (s)", fontsize=8)
        twin.set_ylim(bottom=0)
        handles.append(Line2D([], [], **age_style, label="age of Envoy's configuration"))
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
        handles.append(Line2D([], [], color=_COLOURS[kind], linestyle=_STYLES[kind], label=_NAMES[kind]))

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
    fig.subplots_adjust(top=1 - 0.75 * inch, bottom=bottom, left=0.11 if lanes else 0.08, right=0.94 if lanes else 0.98)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    number = j.number(value)
    if number is None:
        return "-"
    return f"{number:.{digits}f}{unit}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def tracks_html(data: ReportData) -> str:
    """The endpoint-churn / xDS timeline as HTML: the key figures, every event and interval with its time on the
    plot's axis, Envoy's counters for the backend by cause, and the probes' sentences on why requests failed."""
    t = data.tracks
    if t.empty:
        return ""
    e = html.escape
    parts = ["<h2>Timeline of endpoints and xDS state</h2>"]
    if t.facts:
        parts.append("<ul>" + "".join(f"<li>{e(f)}</li>" for f in t.facts) + "</ul>")
    events = [m for m in data.markers if m.kind in _LANES or m.kind in ("fault", "fault-end")]
    if events:
        rows = "".join(
            f"<tr><td>{m.offset_s:.1f} s</td><td>{e(_LANES.get(m.kind, _NAMES[m.kind]))}</td><td>{e(m.label)}</td></tr>"
            for m in events
        )
        parts.append(f"<table><tr><th>t</th><th>lane</th><th>what</th></tr>{rows}</table>")
    if t.spans:
        rows = "".join(
            f"<tr><td>{e(_LANES.get(s.lane, s.lane))}</td><td>{s.start_s:.1f} s</td><td>{s.end_s:.1f} s</td>"
            f"<td>{s.end_s - s.start_s:.1f} s</td><td>{e(s.label)}</td></tr>"
            for s in t.spans
            if s.lane != "xds-gauge"
        )
        parts.append(
            "<h3>Intervals</h3><table><tr><th>lane</th><th>from</th><th>to</th><th>for</th><th>what</th></tr>"
            f"{rows}</table>"
        )
    if t.counters:
        rows = "".join(
            f"<tr><td>{e(r.label)}</td><td>{_count(r.during_fault)}</td><td>{_count(r.after_heal)}</td>"
            f"<td>{_count(r.whole)}</td></tr>"
            for r in t.counters
        )
        parts.append(
            "<h3>Envoy's counters for the backend, by cause</h3><table><tr><th>counter</th>"
            "<th>up to the end of the window</th><th>from then until converged</th><th>whole episode</th></tr>"
            f"{rows}</table>"
        )
    for interval, sentences in t.causes:
        parts.append(f"<h3>Why requests failed, {e(interval)}</h3><ul>")
        parts.append("".join(f"<li>{e(c)}</li>" for c in sentences) + "</ul>")
    return "\n".join(parts)


def render_html(data: ReportData, png_name: str, png_bytes: bytes | None = None) -> str:
    """A self-contained page: the PNG inlined (or linked when ``png_bytes`` is None), the outcome, the activities."""
    e = html.escape
    v = data.verdict
    src = f"data:image/png;base64,{base64.b64encode(png_bytes).decode('ascii')}" if png_bytes else e(png_name)
    outcome = "passed" if v.passed else "failed"
    who = "a stop condition" if v.stop is None or not v.stop.name else f"stop condition {v.stop.name!r}"
    aborted = e(f", ABORTED by {who}") if v.stop is not None else ""
    reasons = "".join(f"<li>{e(r)}</li>" for r in v.reasons)
    reasons += "".join(f'<li class="note">not checked: {e(n)}</li>' for n in v.notes)
    figures = ""
    if data.summary:
        s = data.summary
        latency = s.get("latency_ms") if isinstance(s.get("latency_ms"), Mapping) else {}
        assert isinstance(latency, Mapping)
        availability = j.number(s.get("availability"))
        pct = availability * 100 if availability is not None and availability <= 1 else availability
        figures = (
            f"<h2>Envoy availability (<code>{e(data.source or '')}</code>)</h2><table><tr><th>availability</th>"
            "<th>longest outage</th><th>p50</th><th>p95</th><th>p99</th><th>requests (ok / total)</th></tr>"
            f"<tr><td>{_fmt(pct, ' %', 2)}</td><td>{_fmt(s.get('longest_outage_s'), ' s')}</td>"
            f"<td>{_fmt(latency.get('p50'), ' ms')}</td><td>{_fmt(latency.get('p95'), ' ms')}</td>"
            f"<td>{_fmt(latency.get('p99'), ' ms')}</td>"
            f"<td>{e(str(s.get('successes', '-')))} / {e(str(s.get('requests', '-')))}</td></tr></table>"
        )
    origin = data.origin_epoch_s
    rows = []
    for r in v.results:
        start = epoch_of(r.start)
        # round(...) + 0.0 turns a tiny negative offset into "0.0", not "-0.0".
        at = f"{round(start - origin, 1) + 0.0:.1f} s" if start is not None and origin is not None else "-"
        css = "bad" if r.failure else ("skip" if not r.ran else "ok")
        note = r.failure or (r.detail if not r.ran else "") or ""
        rows.append(
            f'<tr class="{css}"><td>{e(r.phase)}</td><td><code>{e(r.name)}</code></td><td>{e(r.kind)}</td>'
            f"<td>{e(r.status)}</td><td>{at}</td><td>{_fmt(r.duration_s, ' s', 2) if r.ran else '-'}</td>"
            f"<td>{e(note)}</td></tr>"
        )
    markers = "".join(
        f"<li>{e(m.label)} at t={m.offset_s:.1f} s ({datetime.fromtimestamp(m.epoch_s, tz=UTC).isoformat()})</li>"
        for m in data.markers
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(data.title)}: chaos report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
.outcome {{ font-size: 1.3em; font-weight: bold; }}
.outcome.passed {{ color: #1e8449; }} .outcome.failed {{ color: #c0392b; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
tr.bad td {{ background: #fdecea; }} tr.skip td {{ color: #888; }} li.note {{ color: #7d6608; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head>
<body>
<h1>{e(data.title)}</h1>
<p class="outcome {outcome}">Chaos gate {outcome.upper()}{aborted}: run status <code>{e(v.status)}</code>,
deviated <code>{str(v.deviated).lower()}</code>.</p>
{f"<ul>{reasons}</ul>" if reasons else ""}
<img src="{src}" alt="availability and latency over time, with the fault and its removal marked">
{f"<h2>Markers</h2><ul>{markers}</ul>" if markers else ""}
{figures}
{tracks_html(data)}
<h2>Activities</h2>
<table><tr><th>phase</th><th>activity</th><th>type</th><th>status</th><th>start</th><th>duration</th><th>note</th></tr>
{"".join(rows)}
</table>
</body></html>
"""


# --------------------------------------------------------------------------------------------------------- command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chaoscontour report",
        description="Render a journal as a PNG (availability and latency over time, fault marked) and an HTML page.",
    )
    parser.add_argument("journal", help="the journal written by `chaos run --journal-path`")
    parser.add_argument("--out", metavar="DIR", default="reports", help="where to write the files (default: reports)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        journal = load_journal(args.journal)
    except JournalError as exc:
        print(f"chaoscontour report: error: {exc}", file=sys.stderr)
        return 2
    data = report_data(journal)
    out = Path(args.out)
    stem = Path(args.journal).stem
    png, page = out / f"{stem}.png", out / f"{stem}.html"
    try:
        render_png(data, png)
    except RuntimeError as exc:
        if str(exc) == MISSING_MATPLOTLIB:
            print(f"chaoscontour report: error: {exc}", file=sys.stderr)
            return 2
        raise
    page.write_text(render_html(data, png.name, png.read_bytes()), encoding="utf-8")
    if data.note:
        print(f"chaoscontour report: note: {data.note}; only markers are drawn")
    print(f"wrote {png}")
    print(f"wrote {page}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
