"""``chaoscontour gate JOURNAL``: judge a Chaos Toolkit journal for CI.

``chaos run`` exits 0 when the steady state is missed *before* the method (the method is then never played), when
an action of the method fails, and when a rollback fails, so a CI job cannot trust its exit code. The gate reads the
journal instead (:func:`chaoscontour.tools.verdict.judge` says what it checks) and writes JUnit XML and a Markdown
summary around the verdict.

Exit codes: 0 passed, 1 failed (the reasons are printed one per line), 2 the journal could not be judged
(missing, empty, not JSON, truncated, or not a journal) or the command line was wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from chaoscontour.tools.command import journal_parser, read_journal, say_error
from chaoscontour.tools.journal import JournalError
from chaoscontour.tools.junit import junit_xml
from chaoscontour.tools.summary import markdown_summary
from chaoscontour.tools.verdict import GateOptions, Verdict, judge

__all__ = ["main"]


def _unreadable(message: str) -> Verdict:
    return Verdict(
        passed=False,
        reasons=(message,),
        title="(journal could not be read)",
        status="unreadable",
        deviated=False,
        before_met=None,
        after_met=None,
        duration_s=None,
        start=None,
    )


def _write(path: str, text: str, append: bool) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a" if append else "w", encoding="utf-8") as f:
        f.write(text)


def _parser() -> argparse.ArgumentParser:
    parser = journal_parser(
        "gate",
        "Judge a Chaos Toolkit journal for CI. Exit 0 only when the run completed, the steady state was met "
        "before and after, the experiment did not deviate, every planned method activity and rollback ran and "
        "none failed, Envoy's availability was measured and met its bound, the API-server fault was confirmed "
        "and still held at the end of its window; exit 1 with the reasons otherwise; exit 2 when the journal "
        "cannot be read.",
    )
    parser.add_argument("--junit", metavar="PATH", help="write JUnit XML here (one test case per activity)")
    parser.add_argument("--summary", metavar="PATH", help="write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    parser.add_argument(
        "--append", action="store_true", help="append to the --summary file instead of replacing it (several gates)"
    )
    parser.add_argument(
        "--allow-unverified",
        action="store_true",
        help=(
            "accept a block_apiserver_egress run with verify=false (nothing confirmed the fault) instead of failing; "
            "the outcome then says that it rests on an unverified fault. A verification that ran and did not "
            "confirm the fault still fails"
        ),
    )
    return parser


def _outputs(args: argparse.Namespace, verdict: Verdict, errored: bool) -> None:
    if args.junit:
        _write(args.junit, junit_xml(verdict, errored=errored), append=False)
    if args.summary:
        _write(args.summary, markdown_summary(verdict, Path(args.journal).name), append=args.append)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        journal = read_journal("gate", args.journal)
    except JournalError as exc:
        try:
            _outputs(args, _unreadable(str(exc)), errored=True)
        except OSError as write_exc:
            say_error("gate", f"cannot write the outputs: {write_exc}")
        return 2
    verdict = judge(journal, GateOptions(allow_unverified=args.allow_unverified))
    try:
        _outputs(args, verdict, errored=False)
    except OSError as exc:
        say_error("gate", f"cannot write the outputs: {exc}")
        return 2
    print(
        f"{'PASSED' if verdict.passed else 'FAILED'}{' on an unverified fault' if verdict.unverified else ''}: "
        f"{verdict.title}"
    )
    for line in (*verdict.reasons, *([verdict.unverified] if verdict.unverified else [])):
        print(line)
    for note in verdict.notes:
        print(f"note: {note}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
