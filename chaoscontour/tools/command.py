"""What the ``chaoscontour`` commands that read a journal (``gate``, ``report``) share: the journal argument, and
reading it with an error said the same way, ``chaoscontour COMMAND: error: ...`` on stderr."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from chaoscontour.tools.journal import JournalError, load_journal

__all__ = ["journal_parser", "read_journal", "say_error"]


def journal_parser(command: str, description: str) -> argparse.ArgumentParser:
    """The parser of ``chaoscontour COMMAND JOURNAL``; the command adds its options."""
    parser = argparse.ArgumentParser(prog=f"chaoscontour {command}", description=description)
    parser.add_argument("journal", help="the journal written by `chaos run --journal-path`")
    return parser


def say_error(command: str, message: object) -> None:
    print(f"chaoscontour {command}: error: {message}", file=sys.stderr)


def read_journal(command: str, path: str) -> dict[str, Any]:
    """The journal at ``path``. When it cannot be read (missing, empty, not JSON, truncated, not a journal), says
    why and raises the :class:`~chaoscontour.tools.journal.JournalError` again for the command to choose its exit."""
    try:
        return load_journal(path)
    except JournalError as exc:
        say_error(command, exc)
        raise
