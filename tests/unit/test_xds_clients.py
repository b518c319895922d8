"""Which Contour replica serves Envoy's xDS streams, from its gRPC server metrics (domain/xds_clients)."""

from chaoscontour.domain.xds_clients import envoy_streams, open_xds_streams

CDS = 'grpc_method="StreamClusters",grpc_service="envoy.service.cluster.v3.ClusterDiscoveryService"'
LDS = 'grpc_method="StreamListeners",grpc_service="envoy.service.listener.v3.ListenerDiscoveryService"'
ADS = 'grpc_method="StreamAggregatedResources",grpc_service="envoy.service.discovery.v3.AggregatedDiscoveryService"'
BIDI = 'grpc_type="bidi_stream"'


def test_started_minus_handled_streams_are_open_per_method() -> None:
    text = "\n".join(
        [
            "# HELP grpc_server_started_total Total number of RPCs started on the server.",
            "# TYPE grpc_server_started_total counter",
            f"grpc_server_started_total{{{CDS},{BIDI}}} 3",
            f"grpc_server_started_total{{{LDS},{BIDI}}} 2",
            # handled is one sample per gRPC code: both are subtracted
            f'grpc_server_handled_total{{grpc_code="Canceled",{CDS},{BIDI}}} 1',
            f'grpc_server_handled_total{{grpc_code="Unavailable",{CDS},{BIDI}}} 1',
            f'grpc_server_handled_total{{grpc_code="Canceled",{LDS},{BIDI}}} 2',
        ]
    )
    assert open_xds_streams(text) == {"StreamClusters": 1}
    assert envoy_streams(open_xds_streams(text)) == 1


def test_only_envoy_discovery_streams_count() -> None:
    text = "\n".join(
        [
            f"grpc_server_started_total{{{ADS},{BIDI}}} 2",
            'grpc_server_started_total{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 9',
            'grpc_server_started_total{grpc_method="Watch",grpc_service="grpc.health.v1.Health",'
            'grpc_type="server_stream"} 4',
            f'grpc_server_started_total{{{CDS},grpc_type="unary"}} 5',
            "grpc_server_started_total{not parsed at all",
            f"grpc_server_started_total{{{LDS},{BIDI}}} NaNish",
            f"grpc_server_started_total{{{LDS},{BIDI}}} NaN",
            "contour_dagrebuild_total 7",
        ]
    )
    assert open_xds_streams(text) == {"StreamAggregatedResources": 2}
    assert envoy_streams(open_xds_streams(text)) == 2


def test_a_replica_that_never_served_envoy_has_no_streams() -> None:
    assert open_xds_streams("# TYPE grpc_server_started_total counter\ncontour_build_info 1\n") == {}
    assert envoy_streams({}) == 0


def test_the_most_streams_of_any_method_is_the_number_of_envoys() -> None:
    # two Envoys, one of which has not subscribed to listeners yet
    assert envoy_streams({"StreamClusters": 2, "StreamListeners": 1}) == 2
