"""Which Contour replica serves Envoy's xDS streams, read from Contour's own gRPC server metrics.

Envoy cannot say which replica configures it: its ``control_plane.identifier`` stats name the management server
only when the server fills ``DiscoveryResponse.control_plane``, and Contour (its xDS server is go-control-plane's)
leaves it empty, so Envoy shows ``""``. Contour's side can: its metrics port (``:8000/metrics``) exports the
go-grpc-prometheus counters ``grpc_server_started_total`` and ``grpc_server_handled_total`` per gRPC method. A
stream that started and was not handled yet is open. Envoy opens one stream per xDS type (``StreamClusters``,
``StreamListeners``, ...; one ``StreamAggregatedResources`` with ADS), so the largest open count over the
discovery methods is how many Envoys that replica serves.

Pure: metrics text in, numbers out.
"""

import math
import re
from collections.abc import Mapping

__all__ = ["envoy_streams", "open_xds_streams"]

_SAMPLE = re.compile(r"^(grpc_server_started_total|grpc_server_handled_total)\{([^}]*)\}\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def open_xds_streams(metrics_text: str) -> dict[str, int]:
    """Open xDS streams per gRPC method (``StreamClusters``: 1) in one replica's Prometheus metrics text.

    Only bidirectional streams of an ``envoy.service.*DiscoveryService`` count; a method whose streams all ended
    is absent. A replica that never served a stream exports no such sample: the result is empty."""
    started: dict[str, float] = {}
    handled: dict[str, float] = {}
    for line in metrics_text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        name, labels_text, value_text = match.groups()
        labels = dict(_LABEL.findall(labels_text))
        service, method = labels.get("grpc_service", ""), labels.get("grpc_method", "")
        if labels.get("grpc_type") != "bidi_stream" or not service.startswith("envoy.service."):
            continue
        if not service.endswith("DiscoveryService") or not method:
            continue
        try:
            value = float(value_text)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        into = started if name == "grpc_server_started_total" else handled
        into[method] = into.get(method, 0.0) + value  # handled is one sample per gRPC code
    opened = {method: int(count - handled.get(method, 0.0)) for method, count in started.items()}
    return {method: count for method, count in sorted(opened.items()) if count > 0}


def envoy_streams(open_streams: Mapping[str, int]) -> int:
    """How many Envoys a replica serves: each Envoy holds one stream per xDS method it subscribes to."""
    return max(open_streams.values(), default=0)
