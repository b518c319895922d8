"""Helpers that start real components for tests and the benchmark: a local HTTP backend and a real Envoy.

They start and stop their processes with :class:`chaoscontour_sandbox.process.Process`, as the sandbox does.
"""
