"""``chaoscontour annotations JOURNAL``: the moments of a run as annotations a Grafana dashboard overlays.

Prints (or writes with ``--out``) a JSON list, one element per annotation, each the body of Grafana's HTTP
annotations API (``POST /api/annotations``): ``time`` and ``timeEnd`` in epoch milliseconds (equal for a moment, apart
for a region), ``tags`` and ``text``. Without a ``dashboardUID`` Grafana stores an organization annotation, which any
dashboard shows through an annotation query on the Grafana data source filtered by tags (docs/dashboards.md).

The annotations come from what the report computes (:func:`chaoscontour.tools.timeline.report_data`: its markers and
the plotted ``envoy_availability`` output), so the dashboard and the report mark the same moments:

- ``fault``: each ``block_apiserver_egress`` / ``block_xds_egress``, from its start (the policy is created then)
  to the start of the first unblock of the same fault after it (in the method or the rollbacks), or to the run's end
  when nothing removed it, which the text then says; a block that failed ends with itself (it removes what it
  created before it returns);
- ``kill``: each pod a chaostoolkit-kubernetes ``terminate_pods`` killed, and each ``kill_leader`` (a region to the
  new leader when its output gives the failover time);
- ``restart``: each Contour container termination a ``contour_restart_count`` output lists within the run;
- ``stop``: the stop condition's failing result, to when its control acted on it;
- ``outage``: the longest outage the plotted ``envoy_availability`` measured.

Exit codes: 0 written, 2 the journal could not be read (missing, empty, not JSON, truncated, not a journal), the
output could not be written, or the command line was wrong.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoscontour import contract
from chaoscontour.contract import FaultVerification
from chaoscontour.tools import journal
from chaoscontour.tools.churn_track import POD_KILLERS
from chaoscontour.tools.command import journal_parser, read_journal, say_error
from chaoscontour.tools.journal import KILL_LEADER, JournalError
from chaoscontour.tools.timeline import Marker, ReportData, report_data

__all__ = ["KINDS", "TAG", "Annotation", "grafana_bodies", "main", "title_tag"]

TAG = "chaoscontour"
# The kinds, each also a tag, so a dashboard can show some and hide others.
KINDS = ("fault", "kill", "restart", "stop", "outage")
# A tag longer than this is cut at a word: Grafana shows tags as chips, and a whole title is unreadable there.
MAX_TAG_CHARS = 64


@dataclass(frozen=True)
class Annotation:
    """One moment (``end_s`` equal to ``start_s``) or region of a run, in epoch seconds."""

    kind: str
    text: str
    start_s: float
    end_s: float

    def body(self, tags: Sequence[str]) -> dict[str, Any]:
        """The body of Grafana's ``POST /api/annotations``."""
        return {
            "time": round(self.start_s * 1000),
            "timeEnd": round(self.end_s * 1000),
            "tags": [*tags, self.kind],
            "text": self.text,
        }


# --------------------------------------------------------------------------------------------------------- pure part


def title_tag(title: str) -> str:
    """The experiment's title as a tag: lower case, words joined by ``-`` (no ``:``, which Grafana reads as
    ``key:value``), at most :data:`MAX_TAG_CHARS` characters."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "experiment"
    if len(slug) > MAX_TAG_CHARS:
        slug = slug[: MAX_TAG_CHARS + 1].rsplit("-", 1)[0]
    return slug


def _runs_by_start(data: Mapping[str, Any]) -> dict[float, Mapping[str, Any]]:
    """The method's and rollbacks' runs by their start: a marker of the report is dated by its run's start."""
    found: dict[float, Mapping[str, Any]] = {}
    for run in [*journal.runs(data), *journal.runs(data, "rollbacks")]:
        start = journal.epoch_of(run.get("start"))
        if start is not None:
            found.setdefault(start, run)
    return found


def _confirmation(run: Mapping[str, Any]) -> str:
    found = journal.output_of(run, contract.BLOCK_APISERVER_EGRESS).get("verification")  # the keys both blocks return
    check: FaultVerification = found if isinstance(found, Mapping) else {}
    if check.get("confirmed") is not True:
        return "not confirmed"
    evidence = check.get("evidence_text") or check.get("evidence")
    return f"confirmed after {check.get('confirmed_after_s')} s" + (f": {evidence}" if evidence else "")


def _faults(
    report: ReportData, data: Mapping[str, Any], by_start: Mapping[float, Mapping[str, Any]]
) -> list[Annotation]:
    found = []
    ends = [m for m in report.markers if m.kind == "fault-end"]
    run_end = journal.epoch_of(data.get("end"))
    for marker in report.markers:
        run = by_start.get(marker.epoch_s)
        func = journal.chaoscontour_func(run) if run is not None and marker.kind == "fault" else None
        if run is None or func not in contract.UNBLOCK_OF:
            continue
        name = marker.label.removesuffix(" starts")
        unblock = contract.UNBLOCK_OF[func]
        removal: Marker | None = next(
            (
                m
                for m in ends
                if m.epoch_s >= marker.epoch_s and journal.chaoscontour_func(by_start.get(m.epoch_s, {})) == unblock
            ),
            None,
        )
        confirmed = _confirmation(run)
        block_end = journal.epoch_of(run.get("end"))
        if run.get("status") == "failed" and block_end is not None and block_end >= marker.epoch_s:
            # A block that fails removes what it created before it returns (or created nothing): the fault ends there.
            found.append(
                Annotation(
                    "fault",
                    f"{name}: the block failed and removed its own policy, or created none; nothing of it outlived "
                    "the block",
                    marker.epoch_s,
                    block_end,
                )
            )
        elif removal is not None:
            found.append(
                Annotation(
                    "fault",
                    f"{name}: the fault, {confirmed}; removed by {removal.label}",
                    marker.epoch_s,
                    removal.epoch_s,
                )
            )
        else:
            end = run_end if run_end is not None and run_end >= marker.epoch_s else marker.epoch_s
            found.append(
                Annotation(
                    "fault",
                    f"{name}: the fault, {confirmed}; never removed by the run (no {unblock} after it): shown to the "
                    "run's end; `chaoscontour cleanup` removes what is left",
                    marker.epoch_s,
                    end,
                )
            )
    return found


def _kills(report: ReportData, by_start: Mapping[float, Mapping[str, Any]]) -> list[Annotation]:
    found = []
    for marker in report.markers:
        run = by_start.get(marker.epoch_s)
        if run is None:
            continue
        provider = journal.activity_of(run).get("provider")
        target = (provider.get("module"), provider.get("func")) if isinstance(provider, Mapping) else None
        if marker.kind != "fault" and target in POD_KILLERS:
            found.append(Annotation("kill", marker.label, marker.epoch_s, marker.epoch_s))
        elif marker.kind == "fault" and journal.chaoscontour_func(run) == KILL_LEADER:
            kill = journal.output_of(run, contract.KILL_LEADER)
            failover = journal.number(kill.get("failover_s"))
            name = marker.label.removesuffix(" starts")
            if kill.get("new_pod") and failover is not None:
                text = f"{name}: leader {kill.get('old_pod')} killed; {kill.get('new_pod')} took over in {failover:g} s"
                found.append(Annotation("kill", text, marker.epoch_s, marker.epoch_s + failover))
            else:
                found.append(Annotation("kill", f"{name}: Contour leader killed", marker.epoch_s, marker.epoch_s))
    return found


def _outage(report: ReportData) -> list[Annotation]:
    longest = journal.number(report.summary.get("longest_outage_s"))
    started = journal.epoch_of(report.summary.get("longest_outage_started_at"))
    if not longest or started is None:
        return []
    text = f"longest outage {report.source or 'envoy_availability'} measured: {longest:g} s of failed requests"
    return [Annotation("outage", text, started, started + longest)]


def _from(report: ReportData, data: Mapping[str, Any]) -> list[Annotation]:
    by_start = _runs_by_start(data)
    found = _faults(report, data, by_start) + _kills(report, by_start)
    found += [Annotation("restart", m.label, m.epoch_s, m.epoch_s) for m in report.markers if m.kind == "restart"]
    stop = report.verdict.stop
    if stop is not None and stop.result_epoch_s is not None:
        acted = stop.tripped_epoch_s or stop.result_epoch_s
        found.append(Annotation("stop", stop.headline, stop.result_epoch_s, acted))
    found += _outage(report)
    return sorted(found, key=lambda a: (a.start_s, KINDS.index(a.kind)))


def grafana_bodies(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The bodies to ``POST /api/annotations``, tagged ``chaoscontour``, the experiment's title and the kind."""
    report = report_data(data)
    tags = [TAG, title_tag(report.title)]
    return [a.body(tags) for a in _from(report, data)]


# --------------------------------------------------------------------------------------------------------- command


def main(argv: Sequence[str] | None = None) -> int:
    parser = journal_parser(
        "annotations",
        "Print the run's fault windows, pod kills, Contour restarts, stop condition and longest outage as a JSON list "
        "of Grafana annotations (the body of POST /api/annotations: time and timeEnd in epoch milliseconds, tags, "
        "text).",
    )
    parser.add_argument("--out", metavar="FILE", help="write the JSON here instead of printing it")
    args = parser.parse_args(argv)
    try:
        bodies = grafana_bodies(read_journal("annotations", args.journal))
    except JournalError:
        return 2
    text = json.dumps(bodies, indent=2) + "\n"
    if not args.out:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        say_error("annotations", f"cannot write {out}: {exc}")
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
