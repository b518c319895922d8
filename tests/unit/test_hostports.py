"""hostPort: the release manifest's Envoy ports to DNAT rules on the node's address (pure, no root)."""

from chaoscontour.sandbox.hostports import CHAIN, HostPort, assign, host_ports, render_chain

ENVOY_SPEC = {
    "containers": [
        {"name": "shutdown-manager", "ports": []},
        {
            "name": "envoy",
            "ports": [
                {"containerPort": 8080, "hostPort": 80, "name": "http", "protocol": "TCP"},
                {"containerPort": 8443, "hostPort": 443, "name": "https", "protocol": "TCP"},
                {"containerPort": 8002, "name": "metrics", "protocol": "TCP"},
            ],
        },
    ]
}
HTTP = HostPort(80, "tcp", "10.213.0.12", 8080, "projectcontour/envoy-x")
HTTPS = HostPort(443, "tcp", "10.213.0.12", 8443, "projectcontour/envoy-x")


def test_only_ports_with_a_host_port_are_published() -> None:
    assert host_ports(ENVOY_SPEC, "10.213.0.12", "projectcontour/envoy-x") == [HTTP, HTTPS]
    assert host_ports(
        {"containers": [{"name": "c", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}]}]}, "ip", "p"
    ) == [HostPort(53, "udp", "ip", 53, "p")]


def test_the_first_pod_keeps_a_host_port_another_pod_asks_for() -> None:
    other = HostPort(80, "tcp", "10.213.0.13", 8080, "projectcontour/envoy-y")
    ports, notes = assign([HTTP, HTTPS, other, HostPort(80, "udp", "10.213.0.13", 8080, "projectcontour/envoy-y")])
    assert ports == [HTTP, HTTPS, HostPort(80, "udp", "10.213.0.13", 8080, "projectcontour/envoy-y")]
    assert notes == ["hostPort 80/tcp of projectcontour/envoy-y is taken by projectcontour/envoy-x"]


def test_the_chain_dnats_only_the_nodes_address_and_is_replaced_whole() -> None:
    assert render_chain([HTTPS, HTTP], "10.213.0.1").splitlines() == [
        "*nat",
        f":{CHAIN} - [0:0]",
        f"-A {CHAIN} -d 10.213.0.1/32 -p tcp -m tcp --dport 80"
        ' -m comment --comment "projectcontour/envoy-x" -j DNAT --to-destination 10.213.0.12:8080',
        f"-A {CHAIN} -d 10.213.0.1/32 -p tcp -m tcp --dport 443"
        ' -m comment --comment "projectcontour/envoy-x" -j DNAT --to-destination 10.213.0.12:8443',
        "COMMIT",
    ]
    assert render_chain([], "10.213.0.1").splitlines() == ["*nat", f":{CHAIN} - [0:0]", "COMMIT"]
