"""The tests' one library, imported as ``tests.support.<module>`` by every tier (conftests keep fixtures and hooks).

A real Envoy and the backend in its own process are started and stopped with
:class:`chaoscontour_sandbox.process.Process`, as the sandbox does; the chaos runner starts ``chaos`` as a user's
shell would; local HTTP stand-ins are served by :mod:`tests.support.http_server`.
"""
