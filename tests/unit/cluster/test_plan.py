"""Address plans and command lines of local clusters and of `nodeagent up` (pure)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import yaml

from nodeagent.cli import build_parser
from nodeagent.cluster import components, host, underlay
from nodeagent.cluster.components import Options
from nodeagent.cluster.topology import ClusterPlan, PlanError, node_ip

B = Path("/var/lib/nodeagent/clusters")  # plans are pure: nothing is created


def test_plan_addresses_and_names_follow_the_vagrant_layout() -> None:
    plan = ClusterPlan("demo", 3, B)
    assert plan.switch_netns == "na-demo-sw"
    assert [m.netns for m in plan.members] == ["na-demo-cp", "na-demo-n1", "na-demo-n2", "na-demo-n3"]
    assert [m.ip for m in plan.members] == ["192.168.56.2", "192.168.56.11", "192.168.56.12", "192.168.56.13"]
    assert [m.name for m in plan.node_members] == ["demo-n1", "demo-n2", "demo-n3"]
    assert plan.node(2).data_dir == B / "demo" / "demo-n2"
    # every address is in the underlay and unique; veth names fit IFNAMSIZ (15)
    ips = [ipaddress.ip_address(m.ip) for m in plan.members]
    assert len(set(ips)) == len(ips) and all(ip in ipaddress.ip_network("192.168.56.0/24") for ip in ips)
    assert all(len(m.switch_port) <= 15 for m in ClusterPlan("x", 200, B).members)
    assert plan.member("demo-n3").ip == "192.168.56.13"
    assert plan.member("na-demo-cp").role == "control-plane"
    with pytest.raises(PlanError):
        plan.member("other-n1")


def test_two_clusters_share_no_namespace() -> None:
    a, b = ClusterPlan("a", 2, B), ClusterPlan("b", 2, B)
    assert not set(a.netns_names) & set(b.netns_names)
    assert a.dir != b.dir


@pytest.mark.parametrize("name", ["", "Demo", "-x", "x-", "a_b", "a" * 21, "a/b"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(PlanError, match="not valid"):
        ClusterPlan(name, 1, B)


def test_data_dirs_too_long_for_containerd_sockets_are_refused() -> None:
    ClusterPlan("c" * 20, 200, Path("/var/lib/nodeagent/clusters"))
    with pytest.raises(PlanError, match="too long"):
        ClusterPlan("c", 2, Path("/tmp/" + "x" * 70))


def test_node_count_limits() -> None:
    with pytest.raises(PlanError):
        ClusterPlan("c", 0, B)
    assert node_ip(200) == "192.168.56.210"
    with pytest.raises(PlanError):
        node_ip(245)


def test_underlay_commands() -> None:
    plan = ClusterPlan("c", 1, B)
    n1 = plan.node(1)
    assert underlay.member_switch_commands(n1)[0] == "link add p-n1 type veth peer name eth0 netns na-c-n1"
    assert "addr add 192.168.56.11/24 dev eth0" in underlay.member_commands(n1)
    assert "route add default via 192.168.56.1" in underlay.member_commands(n1)
    # the control plane is not a router for anything but the pod routes the cluster command adds
    assert not any("default" in c for c in underlay.member_commands(plan.control_plane))
    assert "addr add 192.168.56.1/24 dev br0" in underlay.switch_commands()


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_component_command_lines_match_the_contract() -> None:
    plan = ClusterPlan("c", 2, B)
    opts = Options(node_monitor_grace_period=8, default_toleration_seconds=5)
    comps = components.all_components(plan, opts)
    assert [c.id for c in comps] == ["cp-apiserver", "cp-controllers", "cp-dns",
                                     "c-n1-cni-daemon", "c-n1-kubelet", "c-n1-proxy", "c-n1-ingress",
                                     "c-n1-speaker",
                                     "c-n2-cni-daemon", "c-n2-kubelet", "c-n2-proxy", "c-n2-ingress",
                                     "c-n2-speaker"]
    api = comps[0].args
    assert api[0] == "apiserver" and _flag(api, "--advertise-address") == "192.168.56.2"
    assert "127.0.0.1" in api  # the forwarder's address is a SAN
    ctrl = comps[1].args
    assert _flag(ctrl, "--cluster-cidr") == "10.244.0.0/16"
    assert _flag(ctrl, "--node-monitor-grace-period") == "8"
    assert _flag(ctrl, "--default-toleration-seconds") == "5"
    assert _flag(ctrl, "--lb-address-pool") == "192.168.56.224/28"  # a range of the underlay
    assert _flag(comps[6].args, "--run-dir") == str(B / "c" / "c-n1" / "ingress")
    assert _flag(comps[7].args, "--interface") == "eth0"
    assert _flag(comps[2].args, "--advertise-address") == "192.168.56.2"
    kubelet = comps[4].args
    assert _flag(kubelet, "--node-ip") == "192.168.56.11"
    assert _flag(kubelet, "--node-name") == "c-n1"
    assert _flag(kubelet, "--kubeconfig") == str(B / "c" / "c-n1" / "kubeconfig")
    assert _flag(kubelet, "--cni-conf-dir") == str(B / "c" / "c-n1" / "cni" / "net.d")
    assert _flag(kubelet, "--node-status-update-frequency") == "2"  # a few heartbeats per grace period
    assert _flag(components.node(plan, plan.node(1), Options())[1].args, "--node-lease-renew-interval") == "10"
    assert comps[4].pid_file(plan) == B / "c" / "run" / "c-n1-kubelet.pid"
    # every flag we pass is one the component's parser knows (when the component is installed)
    parser = build_parser()
    known = set(parser._subparsers._group_actions[0].choices or ())  # type: ignore[union-attr]
    for c in comps:
        if c.args[0] in known:
            parser.parse_args(c.args)


def test_agent_kubeconfig_is_a_kubeconfig() -> None:
    text = host.agent_kubeconfig_text("https://192.168.56.10:6443", "tok", "/etc/ca.crt", "agent1")
    kc = yaml.safe_load(text)
    assert kc["clusters"][0]["cluster"] == {"server": "https://192.168.56.10:6443",
                                           "certificate-authority": "/etc/ca.crt"}
    assert kc["users"][0]["user"] == {"token": "tok"}
    assert kc["contexts"][0]["context"] == {"cluster": "nodeagent", "user": "agent1"}
    insecure = yaml.safe_load(host.agent_kubeconfig_text("https://x:6443", "t", None, "a"))
    assert insecure["clusters"][0]["cluster"]["insecure-skip-tls-verify"] is True


def test_host_roles_and_commands(tmp_path: Path) -> None:
    args = build_parser().parse_args(["up", "--data-dir", str(tmp_path), "--node-name", "server",
                                      "--node-ip", "192.168.56.10", "--join", "agent1,agent2"])
    p = host.plan_from_args(args)
    assert p.role == "server" and p.join == ["agent1", "agent2"]
    assert _flag(host.apiserver_command(p), "--advertise-address") == "192.168.56.10"
    names = [n for n, _ in host.server_commands(p) + host.node_commands(p)]
    assert names == ["controllers", "dns", "cni-daemon", "kubelet", "proxy", "ingress", "speaker"]
    assert "--lb-address-pool" not in host.server_commands(p)[0][1]  # only when asked for
    agent = host.plan_from_args(build_parser().parse_args(
        ["up", "--server", "https://192.168.56.10:6443", "--token", "t", "--node-ip", "192.168.56.11"]))
    assert agent.role == "agent" and agent.server_url == "https://192.168.56.10:6443"
    assert _flag(host.node_commands(agent)[1][1], "--node-ip") == "192.168.56.11"


def test_progress_lines_show_each_step_and_notes_on_their_own_lines() -> None:
    import io

    from nodeagent.cluster.lifecycle import Progress

    out = io.StringIO()
    p = Progress(out, total=2)
    done = p.step("creating namespaces")
    done()
    done = p.step("waiting for nodes to be Ready")
    p.note("registered 1/2")
    p.note("registered 2/2")
    done()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/2] creating namespaces ... ok (")
    assert lines[1] == "[2/2] waiting for nodes to be Ready ..."
    assert [ln.strip() for ln in lines[2:4]] == ["registered 1/2", "registered 2/2"]
    assert lines[4].strip().startswith("ok (") and len(lines) == 5


def test_cluster_commands_parse() -> None:
    parser = build_parser()
    up = parser.parse_args(["cluster", "up", "--nodes", "3", "--name", "lab", "--node-monitor-grace-period", "8"])
    assert (up.nodes, up.name, up.node_monitor_grace_period) == (3, "lab", 8)
    assert parser.parse_args(["cluster", "down", "--all"]).all
    assert parser.parse_args(["cluster", "kubeconfig"]).name == "demo"
    tr = parser.parse_args(["trace", "web", "--from", "client", "-n", "ns1"])
    assert (tr.service, tr.from_pod, tr.namespace, tr.name) == ("web", "client", "ns1", "demo")
    assert parser.parse_args(["netns", "p", "--exec", "ip", "-4", "addr"]).exec == ["ip", "-4", "addr"]
    assert parser.parse_args(["netns", "p", "--exec"]).exec == []
    assert parser.parse_args(["netns", "p"]).exec is None
