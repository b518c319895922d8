"""Every relative link of the README and of docs/ resolves: to a file of the repository and, with a `#fragment`, to a
heading of that file (GitHub's anchor rules)."""

import re
from pathlib import Path

import pytest

from tests.support.paths import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces to hyphens,
    a repeated heading suffixed -1, -2..."""
    found: set[str] = set()
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if fenced or not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(2).lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def broken_links(doc: Path, root: Path) -> list[str]:
    """The links of ``doc`` that point at no file under ``root``, or at no heading of that file."""
    text = doc.read_text(encoding="utf-8")
    problems = []
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            path, _, fragment = target.partition("#")
            where = (doc.parent / path).resolve() if path else doc
            if not where.is_relative_to(root) or not where.exists():
                problems.append(f"{doc.relative_to(root)}:{number}: {target}: no such file")
            elif fragment and where.is_file() and fragment not in anchors(where.read_text(encoding="utf-8")):
                problems.append(f"{doc.relative_to(root)}:{number}: {target}: no heading #{fragment} there")
    return problems


@pytest.mark.parametrize("doc", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc):
    assert broken_links(doc, ROOT) == []


def test_the_check_finds_a_missing_file_and_a_missing_heading(tmp_path):
    (tmp_path / "docs").mkdir()
    heading_and_fence = "# Title\n\n## The gate: `chaoscontour gate`\n\n```\n# not a heading\n```\n"
    (tmp_path / "docs" / "a.md").write_text(heading_and_fence)
    doc = tmp_path / "README.md"
    doc.write_text(
        "[ok](docs/a.md#the-gate-chaoscontour-gate) [gone](docs/b.md) [no heading](docs/a.md#not-a-heading)\n"
        "[self](#nowhere) [web](https://example.org/x)\n"
    )
    assert broken_links(doc, tmp_path) == [
        "README.md:1: docs/b.md: no such file",
        "README.md:1: docs/a.md#not-a-heading: no heading #not-a-heading there",
        "README.md:2: #nowhere: no heading #nowhere there",
    ]


def test_the_readme_stays_short():
    # A newcomer reads it in a minute; the rest lives in docs/.
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 150
