"""Operator tools behind the `chaoscontour` command: cleanup, the CI gate, the report."""
