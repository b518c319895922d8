"""Chaos Toolkit controls of chaoscontour: code that runs around an experiment rather than in it.

- :mod:`chaoscontour.controls.traces`: each run's OpenTelemetry spans (the experiment, every activity, the fault
  window), sent to an OTLP endpoint (docs/traces.md);
- :mod:`chaoscontour.controls.spans`: the spans a journal gives, as plain data (what the control exports).
"""

__all__: list[str] = []
