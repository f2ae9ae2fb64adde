"""The speaker's election (one Ready node with a ready endpoint per address, the same on every node)
and its ARP frames."""

from __future__ import annotations

import socket

from nodeagent.speaker.arp import arp_packet, interface_for, parse_request
from nodeagent.speaker.election import announcer, lb_addresses, wants_announcement


def node(name: str, ready: bool = True) -> dict:
    return {"metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def slice_on(*nodes: str, ready: bool = True) -> dict:
    return {"endpoints": [{"addresses": ["10.244.0.9"], "nodeName": n, "conditions": {"ready": ready}}
                          for n in nodes]}


def test_only_nodes_with_a_ready_endpoint_and_the_same_answer_everywhere() -> None:
    nodes = {n: node(n) for n in ("n1", "n2", "n3")}
    assert announcer("192.168.56.224", [slice_on("n2")], nodes) == "n2"
    assert announcer("192.168.56.224", [slice_on("n2", ready=False)], nodes) is None
    assert announcer("192.168.56.224", [slice_on("n2")], {**nodes, "n2": node("n2", ready=False)}) is None
    both = announcer("192.168.56.224", [slice_on("n1", "n3")], nodes)
    assert both in ("n1", "n3")
    assert announcer("192.168.56.224", [slice_on("n3", "n1")], dict(reversed(list(nodes.items())))) == both
    spread = {announcer(f"192.168.56.{i}", [slice_on("n1", "n2", "n3")], nodes) for i in range(224, 240)}
    assert len(spread) > 1  # addresses spread over the candidates


def test_which_services_and_addresses() -> None:
    svc = {"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.224"},
                                                                                      {"hostname": "x"}]}}}
    assert wants_announcement(svc) and lb_addresses(svc) == ["192.168.56.224"]
    other = {"spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/x"}}
    assert not wants_announcement(other) and wants_announcement(other, "example.com/x")
    assert not wants_announcement({"spec": {"type": "NodePort"}})


def test_arp_frames() -> None:
    mac, peer = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
    req = arp_packet(1, peer, "192.168.56.1", b"\0" * 6, "192.168.56.224", b"\xff" * 6)
    assert parse_request(req) == (peer, "192.168.56.1", "192.168.56.224")
    reply = arp_packet(2, mac, "192.168.56.224", peer, "192.168.56.1", peer)
    assert parse_request(reply) is None  # only requests are answered
    assert reply[:6] == peer and reply[20:22] == b"\x00\x02" and reply[28:32] == socket.inet_aton("192.168.56.224")
    assert interface_for("192.168.56.224", {"eth0": ["192.168.56.11/24"], "cni0": ["10.244.0.1/24"]}) == "eth0"
    assert interface_for("10.9.9.9", {"eth0": ["192.168.56.11/24"]}) is None
