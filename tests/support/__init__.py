"""Helpers that start real components for tests and the benchmark: a local HTTP backend and a real Envoy."""
