"""The sandbox's pod addresses: a deleted pod's address is not handed to the next pod (as host-local IPAM's round
robin does), so that an endpoint Envoy still knows behaves as a gone address, not as the replacement pod."""

from __future__ import annotations

import ipaddress

from chaoscontour.sandbox.network import IpPool


def test_a_released_address_goes_to_the_back_of_the_line():
    pool = IpPool(ipaddress.ip_network("10.213.0.0/28"))
    first = pool.allocate("old-pod")
    pool.allocate("other-pod")
    pool.release("old-pod")
    assert pool.allocate("replacement") != first


def test_released_addresses_come_back_once_the_others_are_used():
    pool = IpPool(ipaddress.ip_network("10.213.0.0/28"))  # hosts .10 to .14 are pod addresses
    addresses = [pool.allocate(f"pod-{i}") for i in range(5)]
    pool.release("pod-0")
    assert pool.allocate("new") == addresses[0]
    assert pool.allocate("pod-1") == addresses[1], "an owner keeps its address"
