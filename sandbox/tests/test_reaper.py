"""The conntrack reaper's pure part: ``conntrack -L`` lines in, entries out; entries + cluster in, deletions out."""

from datetime import UTC, datetime

import pytest

from chaoscontour.domain.policy import build_block_policy, policy_name
from chaoscontour_sandbox.netpol import Allow, EgressPlan
from chaoscontour_sandbox.reaper import Entry, FlowTuple, NewPods, allowed, cluster_view, decide, parse_conntrack

# Real output of `conntrack -L` (conntrack-tools 1.4.7) in a scratch network namespace with a DNAT rule
# 10.218.0.1:443 -> 10.216.0.2:6443, a UDP datagram, a SYN nobody answered and a ping.
PLAIN = """\
tcp      6 119 SYN_SENT src=10.217.0.5 dst=10.216.0.2 sport=40000 dport=9 [UNREPLIED] src=10.216.0.2 dst=10.217.0.5 sport=9 dport=40000 mark=0 use=1
udp      17 29 src=10.217.0.5 dst=10.216.0.2 sport=5353 dport=53 [UNREPLIED] src=10.216.0.2 dst=10.217.0.5 sport=53 dport=5353 mark=0 use=1
icmp     1 29 src=10.216.0.2 dst=10.216.0.2 type=8 code=0 id=1 src=10.216.0.2 dst=10.216.0.2 type=0 code=0 id=1 mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.217.0.5 dst=10.218.0.1 sport=41234 dport=443 src=10.216.0.2 dst=10.217.0.5 sport=6443 dport=41234 [ASSURED] mark=0 use=1
"""  # noqa: E501
EXTENDED = "".join(f"ipv4     2 {line}\n" for line in PLAIN.splitlines())

NODE = "sandbox-node"
CONTOUR_IP, API_SERVER, KUBERNETES_SVC = "10.217.0.5", "10.216.0.2", "10.218.0.1"
COREDNS_IP, KUBE_DNS_SVC = "10.217.0.9", "10.218.0.10"
CONTOUR_LABELS = {"app.kubernetes.io/name": "contour"}


def pod(name, ip, namespace="projectcontour", labels=None, node=NODE, host_network=False, phase="Running"):
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"nodeName": node, "hostNetwork": host_network},
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
    }


PODS = [
    pod("contour-a", CONTOUR_IP, labels=CONTOUR_LABELS),
    pod("coredns-a", COREDNS_IP, namespace="kube-system", labels={"k8s-app": "kube-dns"}),
    pod("kube-apiserver-node", API_SERVER, namespace="kube-system", host_network=True),
]
NAMESPACES = [
    {"metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}}
    for name in ("projectcontour", "kube-system")
]


def block(*cidrs, namespace="projectcontour", labels=None):
    """The policy the experiments create, from the domain code itself."""
    return build_block_policy(
        namespace=namespace,
        pod_labels=labels or CONTOUR_LABELS,
        blocked_cidrs=list(cidrs),
        run_id="r1",
        expires_at=datetime(2030, 1, 1, tzinfo=UTC),
    )


def allow_policy(name, port, end_port=None, protocol="TCP", to=None):
    entry = {"protocol": protocol, "port": port, **({"endPort": end_port} if end_port else {})}
    rule = {"ports": [entry], **({"to": to} if to else {})}
    return {
        "metadata": {"name": name, "namespace": "projectcontour"},
        "spec": {"podSelector": {"matchLabels": CONTOUR_LABELS}, "policyTypes": ["Egress"], "egress": [rule]},
    }


def flow(src, sport, dst, dport, real_dst=None, real_dport=None, protocol="tcp"):
    """An entry for src:sport -> dst:dport, DNATed to real_dst:real_dport when given."""
    reply_src, reply_sport = real_dst or dst, real_dport or dport
    return Entry(protocol, FlowTuple(src, dst, sport, dport), FlowTuple(reply_src, src, reply_sport, sport))


WATCH = flow(CONTOUR_IP, 41234, KUBERNETES_SVC, 443, API_SERVER, 6443)  # Contour's watch, via the ClusterIP


def deleted(entries, policies, pods=PODS):
    return decide(entries, cluster_view(pods, NAMESPACES, policies, NODE))


# --- parsing -------------------------------------------------------------------------------------------------------


def test_parses_an_established_dnated_tcp_entry_with_the_reply_tuple_as_the_real_destination():
    entries, skipped = parse_conntrack(PLAIN)
    assert entries[2] == Entry(
        "tcp",
        FlowTuple(CONTOUR_IP, KUBERNETES_SVC, 41234, 443),
        FlowTuple(API_SERVER, CONTOUR_IP, 6443, 41234),
        "ESTABLISHED",
    )
    assert len(entries) == 3
    assert skipped == 1  # the ICMP line: no ports to judge


def test_parses_an_unreplied_syn_and_a_stateless_udp_entry():
    entries, _ = parse_conntrack(PLAIN)
    syn, udp = entries[0], entries[1]
    assert (syn.protocol, syn.state, syn.original.dport, syn.reply.sport) == ("tcp", "SYN_SENT", 9, 9)
    assert syn.unreplied and udp.unreplied and not entries[2].unreplied
    assert udp == Entry(
        "udp", FlowTuple(CONTOUR_IP, API_SERVER, 5353, 53), FlowTuple(API_SERVER, CONTOUR_IP, 53, 5353), None, True
    )


def test_the_extended_format_parses_to_the_same_entries():
    assert parse_conntrack(EXTENDED) == parse_conntrack(PLAIN)


def test_extra_fields_do_not_disturb_the_tuples():
    line = (
        "tcp      6 86399 ESTABLISHED src=10.217.0.5 dst=10.218.0.1 sport=41234 dport=443 packets=12 bytes=3000"
        " zone-orig=3 src=10.216.0.2 dst=10.217.0.5 sport=6443 dport=41234 packets=10 bytes=9000 [ASSURED]"
        " mark=4 secctx=system_u:object_r:unlabeled_t:s0 zone=7 use=2 id=3735928559"
    )
    entries, skipped = parse_conntrack(line)
    assert skipped == 0
    assert entries == [parse_conntrack(PLAIN)[0][2]]


ORIGINAL, REPLY = "src=10.217.0.5 dst=10.218.0.1 sport=1 dport=2", "src=10.216.0.2 dst=10.217.0.5 sport=3 dport=1"


@pytest.mark.parametrize(
    "line",
    [
        "conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.",
        f"tcp 6 oops ESTABLISHED {ORIGINAL} {REPLY}",
        f"tcp 6 10 ESTABLISHED {ORIGINAL}",  # one tuple only
        f"tcp 6 10 ESTABLISHED {ORIGINAL} {REPLY} {REPLY}",  # a third tuple: not a format we know
        f"tcp 6 10 ESTABLISHED {ORIGINAL.replace('sport=1', 'sport=x')} {REPLY}",
        "tcp 6 10 ESTABLISHED src=fd00::5 dst=fd00::1 sport=1 dport=2 src=fd00::1 dst=fd00::5 sport=2 dport=1",
        f"sctp 132 10 ESTABLISHED {ORIGINAL} {REPLY}",
        f"tcp 6 10 ESTABLISHED {ORIGINAL} {REPLY}"[:-3],  # cut short
        "\x00garbage",
    ],
)
def test_what_cannot_be_judged_is_counted_and_skipped(line):
    assert parse_conntrack(f"{line}\n\n") == ([], 1)


# --- the allow decision ---------------------------------------------------------------------------------------------


def test_allowed_follows_the_plan():
    assert allowed(EgressPlan(), API_SERVER, "tcp", 6443)  # not isolated
    assert not allowed(EgressPlan(isolated=True), API_SERVER, "tcp", 6443)
    everything_but = EgressPlan(True, (Allow("0.0.0.0/0", (f"{API_SERVER}/32",)),))
    assert not allowed(everything_but, API_SERVER, "tcp", 6443)
    assert allowed(everything_but, "10.216.0.3", "tcp", 6443)
    ranged = EgressPlan(True, (Allow(None, (), "tcp", 6000, 7000),))
    assert allowed(ranged, API_SERVER, "tcp", 6443)
    assert allowed(ranged, API_SERVER, "tcp", 7000)
    assert not allowed(ranged, API_SERVER, "tcp", 7001)
    assert not allowed(ranged, API_SERVER, "udp", 6443)
    assert not allowed(EgressPlan(True, (Allow("::/0"),)), API_SERVER, "tcp", 6443)


# --- decisions ------------------------------------------------------------------------------------------------------


def test_the_block_cuts_contours_watch_through_the_clusterip():
    found = deleted([WATCH], [block(f"{API_SERVER}/32", f"{KUBERNETES_SVC}/32")])
    assert [d.entry for d in found] == [WATCH]
    assert found[0].pod.name == "contour-a"
    assert found[0].policies == (f"projectcontour/{policy_name('r1')}",)
    assert "contour-a" in str(found[0]) and f"{API_SERVER}:6443" in str(found[0])


def test_the_destination_judged_is_the_one_after_dnat():
    # Blocking only the ClusterIP blocks nothing: the engine sees the endpoint (kube-proxy DNATs first).
    assert deleted([WATCH], [block(f"{KUBERNETES_SVC}/32")]) == []


def test_unreplied_entries_are_left_to_the_engine():
    # Their packets are still conntrack NEW, so the engine drops them itself: a retried SYN is nothing to reap.
    syn = Entry("tcp", WATCH.original, WATCH.reply, "SYN_SENT", unreplied=True)
    assert deleted([syn], [block(f"{API_SERVER}/32")]) == []
    assert len(deleted([WATCH], [block(f"{API_SERVER}/32")])) == 1


def test_kept_when_no_policy_selects_the_pod():
    assert deleted([WATCH], []) == []
    assert deleted([WATCH], [block(f"{API_SERVER}/32", labels={"app": "envoy"})]) == []
    assert deleted([WATCH], [block(f"{API_SERVER}/32", namespace="other")]) == []


def test_kept_when_a_policy_allows_the_real_port():
    blocked = block(f"{API_SERVER}/32")
    assert deleted([WATCH], [blocked, allow_policy("api", 6443)]) == []
    ranged = allow_policy("range", 6000, 7000, to=[{"ipBlock": {"cidr": "10.216.0.0/16"}}])
    assert deleted([WATCH], [blocked, ranged]) == []
    # The Service port is not what the engine judges, nor another protocol.
    assert len(deleted([WATCH], [blocked, allow_policy("svc", 443)])) == 1
    assert len(deleted([WATCH], [blocked, allow_policy("udp", 6443, protocol="UDP")])) == 1


def test_dns_to_a_pod_stays_allowed_by_the_blocks_dns_rule():
    dns = flow(CONTOUR_IP, 5353, KUBE_DNS_SVC, 53, COREDNS_IP, 53, protocol="udp")
    other = flow(CONTOUR_IP, 40001, COREDNS_IP, 8080)
    found = deleted([dns, other], [block(f"{API_SERVER}/32", f"{COREDNS_IP}/32")])
    assert [d.entry for d in found] == [other]


def test_named_ports_are_widened_rather_than_trusted_to_deny():
    named = allow_policy("named", "https", to=[{"ipBlock": {"cidr": f"{API_SERVER}/32"}}])
    assert deleted([WATCH], [block(f"{API_SERVER}/32"), named]) == []
    assert len(deleted([WATCH], [block(f"{API_SERVER}/32"), allow_policy("numbered", 443)])) == 1


def test_hostnetwork_and_other_nodes_pods_are_left_alone():
    everyone = {"podSelector": {}, "policyTypes": ["Egress"]}  # isolates every pod of the namespace, allows nothing
    deny_all = [{"metadata": {"name": "deny", "namespace": ns}, "spec": everyone} for ns in ("kube-system", "remote")]
    from_host = flow(API_SERVER, 50000, "10.217.0.1", 10250)
    elsewhere = pod("remote-a", "10.219.0.7", namespace="remote", node="other-node")
    from_elsewhere = flow("10.219.0.7", 50001, API_SERVER, 6443)
    from_coredns = flow(COREDNS_IP, 50002, API_SERVER, 6443)
    found = deleted([from_host, from_elsewhere, from_coredns], deny_all, [*PODS, elsewhere])
    assert [d.entry for d in found] == [from_coredns]  # the one local pod-network pod in kube-system


def test_ingress_entries_are_left_alone():
    # The API server host dials Contour (say a webhook); the reply side is Contour, which a deny-all isolates.
    deny_all = {
        "metadata": {"name": "deny", "namespace": "projectcontour"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"]},
    }
    inbound = flow(API_SERVER, 50000, CONTOUR_IP, 8000)
    assert deleted([inbound], [deny_all]) == []
    assert len(deleted([flow(CONTOUR_IP, 8000, API_SERVER, 50000)], [deny_all])) == 1


def test_peer_selectors_name_pods_of_every_node_by_namespace_labels():
    remote = pod("coredns-b", "10.219.0.9", namespace="kube-system", labels={"k8s-app": "kube-dns"}, node="other-node")
    to_system = allow_policy(
        "to-system", 8080, to=[{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]
    )
    local_peer, remote_peer = flow(CONTOUR_IP, 40001, COREDNS_IP, 8080), flow(CONTOUR_IP, 40002, "10.219.0.9", 8080)
    blocked = block(f"{API_SERVER}/32", f"{COREDNS_IP}/32", "10.219.0.9/32")
    assert deleted([local_peer, remote_peer], [blocked, to_system], [*PODS, remote]) == []
    assert len(deleted([local_peer, remote_peer], [blocked], [*PODS, remote])) == 2


def test_a_running_pod_owns_an_ip_a_finished_pod_still_shows():
    done = pod("job-old", CONTOUR_IP, labels={"app": "job"}, phase="Succeeded")
    for pods in ([done, *PODS], [*PODS, done]):
        found = deleted([WATCH], [block(f"{API_SERVER}/32")], pods)
        assert [d.pod.name for d in found] == ["contour-a"]


# --- conntrack mode: only pods that just started (--new-pods-s) ----------------------------------------------------

REPLACEMENT_IP = "10.217.0.6"
REPLACEMENT_WATCH = flow(REPLACEMENT_IP, 50000, KUBERNETES_SVC, 443, API_SERVER, 6443)


def test_pods_running_when_the_reaper_starts_are_not_new_and_keep_their_connections():
    cluster = cluster_view(PODS, NAMESPACES, [block(f"{API_SERVER}/32")], NODE)
    new_pods = NewPods(5.0)
    assert new_pods.update(cluster, now=100.0) == {}
    assert decide([WATCH], cluster, new_pods.update(cluster, now=101.0)) == []
    assert [d.entry for d in decide([WATCH], cluster)] == [WATCH]  # what the per-packet mode would cut


def test_a_pod_started_under_a_block_is_judged_by_it_until_its_window_ends():
    policies = [block(f"{API_SERVER}/32")]
    new_pods = NewPods(5.0)
    new_pods.update(cluster_view(PODS, NAMESPACES, policies, NODE), now=100.0)
    pods = [*PODS, pod("contour-b", REPLACEMENT_IP, labels=CONTOUR_LABELS)]
    cluster = cluster_view(pods, NAMESPACES, policies, NODE)
    assert set(new_pods.update(cluster, now=102.0)) == {REPLACEMENT_IP}
    cut = decide([WATCH, REPLACEMENT_WATCH], cluster, new_pods.update(cluster, now=106.9))
    assert [d.entry for d in cut] == [REPLACEMENT_WATCH]  # the old pod's connection lives on, conntrack-style
    assert decide([WATCH, REPLACEMENT_WATCH], cluster, new_pods.update(cluster, now=107.1)) == []


def test_a_block_that_arrives_after_a_new_pod_was_seen_leaves_its_connections_alone():
    """Conntrack semantics: the engine judges only new connections of a pod it knows; NRI changes only when it
    knows the pod, not what a later policy does."""
    new_pods = NewPods(5.0)
    new_pods.update(cluster_view(PODS, NAMESPACES, [], NODE), now=100.0)
    pods = [*PODS, pod("contour-b", REPLACEMENT_IP, labels=CONTOUR_LABELS)]
    new_pods.update(cluster_view(pods, NAMESPACES, [], NODE), now=101.0)  # seen before any block
    blocked = cluster_view(pods, NAMESPACES, [block(f"{API_SERVER}/32")], NODE)
    assert decide([REPLACEMENT_WATCH], blocked, new_pods.update(blocked, now=102.0)) == []
    assert [d.entry for d in decide([REPLACEMENT_WATCH], blocked)] == [REPLACEMENT_WATCH]  # per-packet would


def test_a_replacement_with_the_same_name_and_a_new_address_is_new_again():
    policies = [block(f"{API_SERVER}/32")]
    new_pods = NewPods(5.0)
    new_pods.update(cluster_view(PODS, NAMESPACES, policies, NODE), now=100.0)
    moved = [pod("contour-a", REPLACEMENT_IP, labels=CONTOUR_LABELS), *PODS[1:]]
    assert set(new_pods.update(cluster_view(moved, NAMESPACES, policies, NODE), now=200.0)) == {REPLACEMENT_IP}
