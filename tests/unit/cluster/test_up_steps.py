"""Pieces of `cluster up` that run without root: the credentials written before any process starts
and the node watch read from kubectl's stream."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import yaml

from nodeagent.api.pki import ensure_pki
from nodeagent.cluster import components
from nodeagent.cluster.kube import Kubectl
from nodeagent.cluster.lifecycle import NodeWatch, write_credentials
from nodeagent.cluster.topology import ClusterPlan


def test_credentials_are_written_before_the_apiserver_and_kept_by_it() -> None:
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="na-cred-"))  # short: the plan checks containerd's socket length
    try:
        _check_credentials(ClusterPlan("cred", 2, base))
    finally:
        shutil.rmtree(base)


def _check_credentials(plan: ClusterPlan) -> None:
    write_credentials(plan, 41234)
    admin = yaml.safe_load(plan.kubeconfig.read_text())
    assert admin["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:41234"
    internal = yaml.safe_load(plan.internal_kubeconfig.read_text())
    assert internal["clusters"][0]["cluster"]["server"] == plan.api_url_internal
    for m in plan.node_members:
        kc = yaml.safe_load(components.node_kubeconfig(plan, m).read_text())
        assert kc["users"][0]["name"] == f"system:node:{m.name}"
    data = components.apiserver_data_dir(plan)
    crt = data / "pki" / "apiserver.crt"
    before = crt.read_bytes()
    # what the apiserver asks for at its start (its --tls-san, --advertise-address, the first
    # Service IP): the certificate written here already covers it and stays
    ensure_pki(data, ["127.0.0.1", "localhost", "10.96.0.1", "192.168.56.2"])
    assert crt.read_bytes() == before


def test_node_watch_reads_events_as_kubectl_streams_them(tmp_path: Path) -> None:
    ev1 = {"type": "ADDED", "object": {"metadata": {"name": "n1"}}}
    ev2 = {"type": "MODIFIED", "object": {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.0.0/24"}}}
    fake = tmp_path / "kubectl"
    fake.write_text(f"#!/bin/sh\necho '{json.dumps(ev1)}'\nsleep 0.2\necho '{json.dumps(ev2)}'\nsleep 30\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    w = NodeWatch(Kubectl(tmp_path / "kc", binary=str(fake)))
    try:
        got: list[dict[str, object]] = []
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            got += w.events(0.5)
        assert [o.get("spec") for o in got] == [None, {"podCIDR": "10.244.0.0/24"}]
        assert not w.ended
    finally:
        w.close()
    assert w.ended
    assert os.path.exists(fake)
