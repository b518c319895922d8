"""``chaoscontour report JOURNAL``: a PNG of what Envoy's clients saw during the experiment, and an HTML page.

The PNG plots, per second, the availability and the latency that ``envoy_availability`` measured (its output's
``timeline``), with the fault and its removal marked: the start of ``block_apiserver_egress``, ``block_xds_egress`` or
``kill_leader``, their removal, the window between them shaded, and each Contour container termination that a
``contour_restart_count`` output lists. For the endpoint-churn and xDS experiments a lane panel under the
availability shows, on the same axis, what their probes recorded (:mod:`chaoscontour.tools.tracks`). The HTML page
embeds the PNG next to the gate's outcome, that timeline as tables, and an activity table.

:func:`chaoscontour.tools.timeline.report_data` computes what is drawn, without drawing; matplotlib (the optional
``[report]`` extra) is imported only to draw (:mod:`chaoscontour.tools.report_png`); the page is
:mod:`chaoscontour.tools.report_html`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from chaoscontour.tools.command import journal_parser, read_journal, say_error
from chaoscontour.tools.journal import JournalError
from chaoscontour.tools.report_html import render_html
from chaoscontour.tools.report_png import MISSING_MATPLOTLIB, render_png
from chaoscontour.tools.timeline import report_data

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = journal_parser(
        "report", "Render a journal as a PNG (availability and latency over time, fault marked) and an HTML page."
    )
    parser.add_argument("--out", metavar="DIR", default="reports", help="where to write the files (default: reports)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        journal = read_journal("report", args.journal)
    except JournalError:
        return 2
    data = report_data(journal)
    out = Path(args.out)
    stem = Path(args.journal).stem
    png, page = out / f"{stem}.png", out / f"{stem}.html"
    try:
        render_png(data, png)
    except RuntimeError as exc:
        if str(exc) == MISSING_MATPLOTLIB:
            say_error("report", exc)
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
