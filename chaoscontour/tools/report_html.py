"""The HTML page of ``chaoscontour report``: self-contained, the PNG inlined next to the gate's outcome and reasons,
Envoy's availability figures and what Envoy's own counters said (``envoy_success_ratio``), the markers, the
endpoint-churn and xDS timeline as tables, and an activity table.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chaoscontour.tools.journal import epoch_of, number
from chaoscontour.tools.timeline import MARKER_NAMES, ReportData
from chaoscontour.tools.tracks import LANE_NAMES

__all__ = ["render_html", "tracks_html", "traffic_html"]


def _fmt(value: Any, unit: str = "", digits: int = 1) -> str:
    figure = number(value)
    if figure is None:
        return "-"
    return f"{figure:.{digits}f}{unit}"


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
    events = [m for m in data.markers if m.kind in LANE_NAMES or m.kind in ("fault", "fault-end")]
    if events:
        rows = "".join(
            f"<tr><td>{m.offset_s:.1f} s</td><td>{e(LANE_NAMES.get(m.kind, MARKER_NAMES[m.kind]))}</td>"
            f"<td>{e(m.label)}</td></tr>"
            for m in events
        )
        parts.append(f"<table><tr><th>t</th><th>lane</th><th>what</th></tr>{rows}</table>")
    if t.spans:
        rows = "".join(
            f"<tr><td>{e(LANE_NAMES.get(s.lane, s.lane))}</td><td>{s.start_s:.1f} s</td><td>{s.end_s:.1f} s</td>"
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


def traffic_html(data: ReportData) -> str:
    """Envoy's own counters over the window, one table row per ``envoy_success_ratio`` output, and the sentences
    that set them beside the sampler's availability."""
    e = html.escape
    rows = []
    for t in data.verdict.traffic:
        ratio = _fmt(t.ratio_pct, " %", 2) if t.ratio_pct is not None else f"none: {t.not_computable or '-'}"
        if t.source == "prometheus" and not t.skipped:
            ratio += f"; Contour restarts seen {_count(t.contour_restarts)}, DAG rebuilds {_count(t.dag_rebuilds)}"
        rows.append(
            f"<tr><td><code>{e(t.name)}</code></td><td>{e(t.source)}</td><td>{e(ratio)}</td>"
            f"<td>{_count(t.successes)} / {_count(t.requests)}</td><td>{_count(t.five_xx)}</td>"
            f"<td>{_count(t.unrouted_5xx)}</td>"
            f"<td>{e(', '.join(t.clusters) or '-')}</td></tr>"
        )
    if not rows:
        return ""
    beside = [f for f in data.verdict.findings if "Envoy's counters" in f]
    return (
        "<h2>Envoy's own counters</h2><table><tr><th>probe</th><th>read from</th><th>success ratio</th>"
        "<th>requests (ok / total)</th>"
        f"<th>5xx</th><th>of them for no cluster</th><th>clusters</th></tr>{''.join(rows)}</table>"
        + "".join(f"<p>{e(line)}</p>" for line in beside)
    )


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
        availability = number(s.get("availability"))
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
{traffic_html(data)}
{tracks_html(data)}
<h2>Activities</h2>
<table><tr><th>phase</th><th>activity</th><th>type</th><th>status</th><th>start</th><th>duration</th><th>note</th></tr>
{"".join(rows)}
</table>
</body></html>
"""
