"""The edges: the only modules that talk to the Kubernetes API, HTTP endpoints or processes."""
