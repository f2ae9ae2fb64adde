"""containerd (managed, in a node namespace) calls our plugin during RunPodSandbox, through the
conflist the daemon writes, and the chained reference portmap makes a hostPort reachable from
another machine on the underlay."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from nodeagent.cni import conflist
from nodeagent.netns import run_in_netns
from nodeagent.runtime import podconfig
from nodeagent.runtime.containerd import ManagedContainerd
from nodeagent.runtime.cri import RuntimeClient
from tests.helpers.cni_node import CniNode, connect_to_switch, link_names

pytestmark = pytest.mark.root

TOOLBOX = "nodeagent.local/toolbox:1"


def _fetch(url: str) -> str:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy from env
        with opener.open(url, timeout=2) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def wget(client_ns: str, url: str) -> str:
    """GET from inside client_ns (the socket is opened on a thread in that namespace)."""
    return run_in_netns(client_ns, _fetch, url)


async def test_runpodsandbox_calls_plugin_and_portmap_serves_host_port(netns_factory: Callable[[str], str]) -> None:
    base = tempfile.mkdtemp(prefix="na-cni-")  # short: containerd's socket path must fit sun_path
    mc = None
    node = None
    try:
        switch, client = netns_factory("sw"), netns_factory("cl")
        node = CniNode(netns_factory("cnode"), base, "10.244.12.0/24")
        node.start_daemon()
        connect_to_switch(switch, node.ns, "192.168.56.31/24", "pnode")
        connect_to_switch(switch, client, "192.168.56.32/24", "pclient")
        conf_dir = os.path.join(base, "cni", "net.d")
        conflist.write(conf_dir, conflist.build("10.244.12.0/24", ipam_dir=os.path.join(base, "cni", "ipam"),
                                                daemon_socket=node.socket, cluster_cidr="10.244.0.0/16"))
        mc = ManagedContainerd(base, netns=node.ns, cni_bin_dir=node.bin_dir, cni_conf_dir=conf_dir)
        await mc.start()
        async with RuntimeClient(mc.endpoint) as rt:
            pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": f"web-{secrets.token_hex(2)}", "namespace": "cni-test",
                                "uid": f"uid-{secrets.token_hex(6)}"},
                   "spec": {"containers": [{
                       "name": "web", "image": TOOLBOX,
                       "command": ["sh", "-c", "echo hello-from-pod > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"],
                       "ports": [{"containerPort": 8080, "hostPort": 30080, "protocol": "TCP"}]}]}}
            log_dir = os.path.join(base, "logs", pod["metadata"]["uid"])
            os.makedirs(log_dir)
            sc = podconfig.sandbox_config(pod, log_directory=log_dir)
            sid = await rt.run_pod_sandbox(sc)
            status = (await rt.pod_sandbox_status(sid)).status
            pod_ip = status.network.ip
            assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network("10.244.12.0/24")
            reservations = os.listdir(os.path.join(base, "cni", "ipam", "nodeagent"))
            assert pod_ip in reservations  # our host-local store, under the network's name
            assert "cni0" in link_names(node.ns)
            assert "command=ADD" in node.daemon_log()  # served by the daemon, not standalone

            cid = await rt.create_container(sid, podconfig.container_config(pod, pod["spec"]["containers"][0]), sc)
            await rt.start_container(cid)
            body = ""
            for _ in range(100):
                body = await asyncio.to_thread(wget, client, "http://192.168.56.31:30080/index.html")
                if body:
                    break
                await asyncio.sleep(0.1)
            assert body.strip() == "hello-from-pod"  # hostPort -> portmap DNAT -> pod:8080

            await rt.stop_pod_sandbox(sid)
            await rt.remove_pod_sandbox(sid)
            assert pod_ip not in os.listdir(os.path.join(base, "cni", "ipam", "nodeagent"))
            assert node.bridge_ports() == []
    finally:
        if mc is not None:
            await mc.stop()
        if node is not None:
            node.stop_daemon()
        shutil.rmtree(base, ignore_errors=True)
