"""JUnit XML for a gate :class:`~chaoscontour.tools.verdict.Verdict`.

One ``<testcase>`` per steady-state probe (before and after), per method activity and per rollback, plus one for the
experiment's outcome so that a failure that belongs to no single activity (an interrupted run, a deviation) still
shows as a failed test (of type ``StopConditionTripped`` when a stop condition aborted the run, its first reason
saying which and what it saw); that case's ``<system-out>`` says when the verdict rests on an unverified fault and
what it could not check. Activities that never ran are ``<skipped>``. The layout follows the common JUnit schema that
CI systems (GitHub test reporters, GitLab, Jenkins) read: ``testsuites`` > ``testsuite`` > ``testcase`` with
``failure``/``error``/``skipped`` children.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from xml.etree import ElementTree

if TYPE_CHECKING:
    from chaoscontour.tools.verdict import Verdict

__all__ = ["junit_xml"]

# XML 1.0 cannot carry most control characters, even escaped; a traceback can contain them.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: object) -> str:
    return _INVALID_XML.sub("?", str(text))


def junit_xml(verdict: Verdict, *, errored: bool = False) -> str:
    """The verdict as a JUnit XML document (a string, with an XML declaration).

    ``errored`` marks a journal that could not be judged at all: the outcome test case is an ``<error>`` rather than a
    ``<failure>``.
    """
    suite_name = _clean(f"chaos: {verdict.title}")
    cases: list[ElementTree.Element] = []
    failures = errors = skipped = 0
    total_time = 0.0

    outcome = ElementTree.Element("testcase", classname="chaoscontour.gate", name="experiment outcome", time="0")
    if not verdict.passed:
        tag = "error" if errored else "failure"
        child = ElementTree.SubElement(
            outcome,
            tag,
            message=_clean("; ".join(verdict.reasons)),
            type="JournalError" if errored else ("StopConditionTripped" if verdict.stop else "GateFailed"),
        )
        child.text = _clean("\n".join(verdict.reasons))
        if errored:
            errors += 1
        else:
            failures += 1
    said = ([verdict.unverified] if verdict.unverified else []) + [f"not checked: {n}" for n in verdict.notes]
    if said:
        ElementTree.SubElement(outcome, "system-out").text = _clean("\n".join(said))
    cases.append(outcome)

    for r in verdict.results:
        classname = "chaos." + r.phase.replace(" ", "-")
        duration = r.duration_s or 0.0
        total_time += duration
        case = ElementTree.Element("testcase", classname=classname, name=_clean(r.name), time=f"{duration:.3f}")
        if not r.ran:
            ElementTree.SubElement(case, "skipped", message=_clean(r.detail or "not run"))
            skipped += 1
        elif r.failure:
            kind = "ToleranceNotMet" if r.failure.startswith("tolerance not met") else "ActivityFailed"
            failure = ElementTree.SubElement(case, "failure", message=_clean(r.failure), type=kind)
            failure.text = _clean(r.detail or r.failure)
            failures += 1
        cases.append(case)

    root = ElementTree.Element(
        "testsuites",
        name="chaoscontour gate",
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{total_time:.3f}",
    )
    suite_attrs = {
        "name": suite_name,
        "tests": str(len(cases)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{(verdict.duration_s or total_time):.3f}",
    }
    if verdict.start:
        suite_attrs["timestamp"] = verdict.start
    suite = ElementTree.SubElement(root, "testsuite", suite_attrs)
    props = ElementTree.SubElement(suite, "properties")
    for key, value in (
        ("status", verdict.status),
        ("deviated", str(verdict.deviated).lower()),
        ("steady_state_before", str(verdict.before_met).lower()),
        ("steady_state_after", str(verdict.after_met).lower()),
        ("unverified_fault", "true" if verdict.unverified else "false"),
        ("stop_condition", (verdict.stop.name or "(not recorded)") if verdict.stop else ""),
    ):
        ElementTree.SubElement(props, "property", name=key, value=value)
    suite.extend(cases)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n"
