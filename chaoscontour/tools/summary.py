"""The gate's Markdown summary of a :class:`~chaoscontour.tools.verdict.Verdict`, for a CI job summary
(``$GITHUB_STEP_SUMMARY``): the outcome, the reasons, what happened, Envoy's availability as the sampler measured it
and as Envoy's own counters tell it, and the activities."""

from __future__ import annotations

from chaoscontour.tools.verdict import Verdict

__all__ = ["headline", "markdown_summary"]


def _md(text: object) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")


def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _fmt(value: float | None, unit: str, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} {unit}".rstrip()


def _met(value: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not checked"}[value]


def headline(verdict: Verdict) -> str:
    """``passed`` or ``failed``, saying when a stop condition aborted the run or the verdict rests on an unverified
    fault."""
    outcome = "passed" if verdict.passed else "failed"
    if verdict.stop is not None:
        who = f"stop condition {verdict.stop.name!r}" if verdict.stop.name else "a stop condition"
        return f"{outcome}: aborted by {who}"
    return f"{outcome} on an unverified fault" if verdict.unverified else outcome


def markdown_summary(verdict: Verdict, journal_name: str | None = None) -> str:
    """A Markdown summary whose first line gives the outcome (and says so when it rests on an unverified fault)."""
    mark = "✅" if verdict.passed else "❌"
    lines = [f"## Chaos gate {mark} {headline(verdict)}: {_md(verdict.title)}", ""]
    if verdict.stop is not None:
        lines += [f"> 🛑 {_md(verdict.stop.headline)}", ""]
    if verdict.unverified:
        lines += [f"> ⚠️ {_md(verdict.unverified)} (accepted with `--allow-unverified`).", ""]
    facts = [
        f"run status `{verdict.status}`",
        f"deviated `{str(verdict.deviated).lower()}`",
        f"steady state before: {_met(verdict.before_met)}",
        f"after: {_met(verdict.after_met)}",
        f"duration {_fmt_s(verdict.duration_s)}",
    ]
    if journal_name:
        facts.insert(0, f"journal `{_md(journal_name)}`")
    lines += ["; ".join(facts) + ".", ""]
    if verdict.reasons:
        lines += ["**Why it failed**", ""]
        lines += [f"- {_md(r)}" for r in verdict.reasons]
        lines.append("")
    if verdict.notes:
        lines += ["**Not checked**", ""]
        lines += [f"- {_md(note)}" for note in verdict.notes]
        lines.append("")
    if verdict.findings:
        lines += ["### What happened", ""]
        lines += [f"- {_md(finding)}" for finding in verdict.findings]
        lines.append("")
    for fig in verdict.availability:
        lines += [f"### Envoy availability (`{_md(fig.name)}`)", ""]
        lines += ["| Availability | Longest outage | p50 | p95 | p99 | Requests (ok / total) |"]
        lines += ["|---:|---:|---:|---:|---:|---:|"]
        reqs = (
            "-" if fig.requests is None else f"{fig.successes if fig.successes is not None else '?'} / {fig.requests}"
        )
        lines += [
            f"| {_fmt(fig.availability_pct, '%', 2)} | {_fmt(fig.longest_outage_s, 's', 1)} | "
            f"{_fmt(fig.p50_ms, 'ms')} | {_fmt(fig.p95_ms, 'ms')} | {_fmt(fig.p99_ms, 'ms')} | {reqs} |",
            "",
        ]
    for t in verdict.traffic:
        lines += [f"### Envoy's own counters (`{_md(t.name)}`)", ""]
        lines += ["| Success ratio | Requests (ok / total) | 5xx | of them for no cluster | Clusters |"]
        lines += ["|---:|---:|---:|---:|---|"]
        reqs = "-" if t.requests is None else f"{t.successes if t.successes is not None else '?'} / {t.requests}"
        lines += [
            f"| {_fmt(t.ratio_pct, '%', 2)} | {reqs} | {'-' if t.five_xx is None else t.five_xx} | "
            f"{'-' if t.unrouted_5xx is None else t.unrouted_5xx} | {_md(', '.join(t.clusters) or '-')} |",
            "",
        ]
        if t.not_computable:
            lines += [f"No ratio: {_md(t.not_computable)}.", ""]
    lines += [
        "### Activities",
        "",
        "| Phase | Activity | Type | Status | Duration | Note |",
        "|---|---|---|---|---:|---|",
    ]
    for r in verdict.results:
        status = r.status if not r.failure else f"**{r.status}**"
        note = r.failure or (r.detail if not r.ran else "")
        lines.append(
            f"| {r.phase} | `{_md(r.name)}` | {r.kind} | {status} | {_fmt_s(r.duration_s) if r.ran else '-'} | "
            f"{_md(note or '')} |"
        )
    lines.append("")
    return "\n".join(lines)
