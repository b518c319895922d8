"""Where the tests find the repository's files: its root and the fixture data under ``tests/fixtures``."""

from __future__ import annotations

from pathlib import Path

__all__ = ["FIXTURES", "ROOT"]

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
