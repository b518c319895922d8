"""Benchmarks of chaoscontour, run as scripts (``python bench/<name>.py``); not part of the distribution.

They import the package and their own helpers (``bench.contour_like``), never the tests. The integration tests
import ``bench.contour_like`` too: it is the one home of the Contour-shaped objects written to a real API server.
"""
