"""The labels on every object chaoscontour creates: how unblock, cleanup and the admission policies find them."""

__all__ = ["FAULT_LABEL", "MANAGED_BY", "MANAGED_BY_LABEL", "RUN_ID_LABEL"]

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "chaoscontour"
RUN_ID_LABEL = "chaoscontour/run-id"
FAULT_LABEL = "chaoscontour/fault"
