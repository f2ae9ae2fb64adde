"""A real host (a Vagrant VM running `nodeagent up`) as the node that trace and netns look at."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from nodeagent.cluster import podnet, trace
from nodeagent.cluster.topology import ClusterPlan


def test_this_host_is_its_root_namespace() -> None:
    m = podnet.HostNodes("agent1", "192.168.56.11").member("agent1")
    assert (m.name, m.ip, m.netns_path) == ("agent1", "192.168.56.11", "/proc/1/ns/net")


def test_another_node_is_another_machine() -> None:
    with pytest.raises(podnet.PodNetError, match="node agent2 is another machine .*this host is node agent1"):
        podnet.HostNodes("agent1", "192.168.56.11").member("agent2")


def test_local_cluster_members_keep_their_named_namespaces() -> None:
    assert ClusterPlan("lab", 2).member("lab-n1").netns_path == "/var/run/netns/na-lab-n1"


def test_without_a_local_cluster_or_a_kubeconfig_the_error_says_what_to_give(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    args = argparse.Namespace(kubeconfig=None, name="nosuch", base_dir=str(tmp_path), node_name=None)
    with pytest.raises(RuntimeError, match="cluster 'nosuch' not found.*--kubeconfig"):
        trace.target(args)
