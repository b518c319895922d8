"""``chaoscontour annotations`` as a user runs it: the installed command, its output and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chaoscontour.tools.annotations import grafana_bodies
from chaoscontour.tools.journal import load_journal
from tests.support.paths import FIXTURES

COMMAND = Path(sys.executable).with_name("chaoscontour")
JOURNAL = FIXTURES / "journals" / "endpoint-churn-demo.json"


def annotations(*args: str) -> subprocess.CompletedProcess[str]:
    if not COMMAND.exists():
        pytest.skip(f"the chaoscontour command is not installed next to {sys.executable}")
    return subprocess.run(
        [str(COMMAND), "annotations", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_prints_the_journals_annotations_as_json():
    done = annotations(str(JOURNAL))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == grafana_bodies(load_journal(JOURNAL))
    assert done.stderr == ""


def test_out_writes_the_file_and_says_where(tmp_path):
    out = tmp_path / "grafana" / "annotations.json"

    done = annotations(str(JOURNAL), "--out", str(out))

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {out}\n"
    assert json.loads(out.read_text(encoding="utf-8")) == grafana_bodies(load_journal(JOURNAL))


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file; pass the path given to `chaos run --journal-path`"),
        ("", "the file is empty"),
        ('{"experiment": {"title": "cut', "the journal is truncated"),
        ('{"method": []}', "this looks like an experiment, not the journal"),
    ],
)
def test_a_journal_that_cannot_be_read_exits_2_with_one_line(tmp_path, content, says):
    journal = tmp_path / "journal.json"
    if content is not None:
        journal.write_text(content, encoding="utf-8")

    done = annotations(str(journal))

    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("chaoscontour annotations: error: ") and says in line


def test_an_output_that_cannot_be_written_exits_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")

    done = annotations(str(JOURNAL), "--out", str(blocker / "annotations.json"))

    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"chaoscontour annotations: error: cannot write {blocker / 'annotations.json'}: ")


def test_no_journal_is_a_usage_error():
    done = annotations()

    assert done.returncode == 2
    assert "usage: chaoscontour annotations" in done.stderr
