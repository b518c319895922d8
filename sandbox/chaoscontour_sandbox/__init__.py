"""chaoscontour-sandbox: a local one-node Contour cluster (real control plane, kubelet on containerd, Contour, Envoy)
and the builder of its pinned binaries. Test and demo tooling of chaoscontour: the extension never imports it."""

__version__ = "0.1.0"
