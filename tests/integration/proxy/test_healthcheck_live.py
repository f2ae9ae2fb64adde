"""healthCheckNodePort answers from a node namespace, asked over a veth from another namespace, as
a cloud load balancer would: 200 while the node has a ready endpoint of the Service, 503 after.

    client netns (192.168.56.2) --veth-- node netns (192.168.56.10; the proxy and its listeners)

Both namespaces come from the netns_factory fixture and are deleted at teardown (the veth goes with
them), also when a test fails; nothing is added to the root namespace.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nodeagent.client import Client, ClientConfig
from nodeagent.machinery.kinds import ENDPOINTSLICES, SERVICES
from nodeagent.netns import arun_in_netns, nsenter_argv, run_in_netns
from nodeagent.proxy.healthcheck import ServiceHealthServer
from nodeagent.proxy.iptables.executor import make_executor
from nodeagent.proxy.iptables.proxier import IptablesBackend
from nodeagent.proxy.proxier import Proxier
from tests.helpers.apiserver import ApiServerProcess
from tests.helpers.netns import NetnsForwarder
from tests.helpers.proxy_objects import endpoint, endpoint_slice, node, service
from tests.helpers.proxy_topology import CLUSTER_CIDR, wait_for

pytestmark = pytest.mark.root

NODE_IP = "192.168.56.10"
CLIENT_IP = "192.168.56.2"
HC_PORT = 32123
PORTS = [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 30080}]
SLICE_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def namespaces(netns_factory: Callable[[str], str]) -> tuple[str, str]:
    node_ns, client_ns = netns_factory("hcn"), netns_factory("hcc")
    ip("-n", node_ns, "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", client_ns)
    ip("-n", node_ns, "addr", "add", f"{NODE_IP}/24", "dev", "vc")
    ip("-n", node_ns, "link", "set", "vc", "up")
    ip("-n", client_ns, "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
    ip("-n", client_ns, "link", "set", "eth0", "up")
    return node_ns, client_ns


def lb_local_service() -> dict[str, Any]:
    return service("web", "10.96.0.50", ports=PORTS, type_="LoadBalancer", externalTrafficPolicy="Local",
                   healthCheckNodePort=HC_PORT)


def ask(host: str, port: int) -> tuple[int, dict[str, Any]] | str:
    """One health check as a balancer does it: status and JSON body, or why it failed."""
    conn = http.client.HTTPConnection(host, port, timeout=3)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    except OSError as e:
        return f"{e.__class__.__name__}"
    finally:
        conn.close()


async def _in_node(client_ns: str) -> None:
    """Runs on a thread inside the node namespace: its loop, listeners, worker threads (the sync,
    iptables-legacy-restore, the netlink address lookup) all inherit that namespace."""
    nodeport_addresses = ("192.168.56.0/24",)
    p = Proxier(IptablesBackend(make_executor("legacy")), "node-a", CLUSTER_CIDR, min_sync_period=0,
                nodeport_addresses=nodeport_addresses)
    srv = ServiceHealthServer("node-a", p.health.healthy, nodeport_addresses=nodeport_addresses)
    p.service_health = srv
    await srv.start()

    async def sync() -> None:
        assert await asyncio.to_thread(p.sync_once)
        await srv.settle()

    try:
        p.on_node(node("node-a", NODE_IP))
        p.on_service(None, lb_local_service())
        p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.1.10", "node-a"), endpoint("10.244.2.10", "n2")],
                                           ports=SLICE_PORTS))
        await sync()
        # bound on the node's address inside --nodeport-addresses only, found through netlink here
        assert srv.listening() == {"default/web": (HC_PORT, [NODE_IP])}
        assert await arun_in_netns(client_ns, ask, NODE_IP, HC_PORT) == (200, {
            "service": {"namespace": "default", "name": "web"}, "localEndpoints": 1, "serviceProxyHealthy": True})
        assert await asyncio.to_thread(ask, "127.0.0.1", HC_PORT) == "ConnectionRefusedError"

        # the local pod goes; the other node's endpoint does not count here
        p.on_endpoint_slice(endpoint_slice("web", [endpoint("10.244.2.10", "n2")], ports=SLICE_PORTS))
        await sync()
        answer = await arun_in_netns(client_ns, ask, NODE_IP, HC_PORT)
        assert isinstance(answer, tuple) and answer[0] == 503 and answer[1]["localEndpoints"] == 0

        p.on_service(lb_local_service(), None)
        await sync()
        assert await arun_in_netns(client_ns, ask, NODE_IP, HC_PORT) == "ConnectionRefusedError"
    finally:
        await srv.close()


def test_health_check_node_port_follows_local_endpoints(namespaces: tuple[str, str]) -> None:
    node_ns, client_ns = namespaces
    run_in_netns(node_ns, asyncio.run, _in_node(client_ns))


# -- the `nodeagent proxy` process, fed by an apiserver ---------------------------------------------------
def _api(apiserver: ApiServerProcess, fn: Callable[[Client], Awaitable[object]]) -> None:
    async def go() -> None:
        async with Client(ClientConfig.from_kubeconfig(str(apiserver.kubeconfig))) as c:
            await fn(c)

    asyncio.run(go())


async def _create(c: Client) -> None:
    await c.create(SERVICES, lb_local_service())
    await c.create(ENDPOINTSLICES, endpoint_slice("web", [endpoint("10.244.1.10", "node-a")], ports=SLICE_PORTS))


async def _drop_local_endpoint(c: Client) -> None:
    es = await c.get(ENDPOINTSLICES, "web-abc12", namespace="default")
    es["endpoints"] = [endpoint("10.244.2.10", "n2")]
    await c.update(ENDPOINTSLICES, es)


def test_proxy_process_serves_health_check_node_port(apiserver: ApiServerProcess, namespaces: tuple[str, str],
                                                     tmp_path: Path) -> None:
    node_ns, client_ns = namespaces
    fwd = NetnsForwarder(node_ns, apiserver.port).start()
    log = tmp_path / "proxy.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        _api(apiserver, _create)
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [*nsenter_argv(node_ns), sys.executable, "-m", "nodeagent", "-v", "proxy",
                 "--kubeconfig", str(apiserver.kubeconfig_for_user("system:kube-proxy")), "--node-name", "node-a",
                 "--metrics-port", "0", "--healthz-port", "10256", "--min-sync-period", "0.1"],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

        def answer() -> tuple[int, dict[str, Any]] | str:
            return run_in_netns(client_ns, ask, NODE_IP, HC_PORT)

        def seen(status: int) -> bool:
            a = answer()
            return proc is not None and proc.poll() is None and isinstance(a, tuple) and a[0] == status

        wait_for(lambda: seen(200), 30, lambda: f"200 from the health check (log: {log.read_text()[-2000:]})")
        assert answer() == (200, {"service": {"namespace": "default", "name": "web"}, "localEndpoints": 1,
                                  "serviceProxyHealthy": True})
        _api(apiserver, _drop_local_endpoint)
        wait_for(lambda: seen(503), 20, lambda: f"503 once the local endpoint is gone (log: {log.read_text()[-2000:]})")
        # the proxy's own /healthz, over the veth too
        status, body = run_in_netns(client_ns, _get_healthz)
        assert status == 200 and set(body) == {"lastUpdated", "currentTime", "nodeEligible"}

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]
        assert answer() == "ConnectionRefusedError"  # the listener went with the process
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        fwd.stop()


def _get_healthz() -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(NODE_IP, 10256, timeout=3)
    try:
        conn.request("GET", "/healthz")
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()
