"""`nodeagent dns` as a process in a "server" network namespace, watching the real apiserver fixture
(reached through a relay opened inside the namespace), queried from a second "client" namespace over a
veth pair with dnslib and busybox nslookup. A dnsmasq in the server namespace is its upstream."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE

from nodeagent.client import Client, ClientConfig, NotFound
from nodeagent.machinery.kinds import ENDPOINTSLICES, SERVICES
from nodeagent.netns import nsenter_argv, run_in_netns
from tests.helpers.apiserver import ApiServerProcess
from tests.helpers.dns_client import endpoint_slice, ep, query_sync, service
from tests.helpers.dns_relay import (
    NetnsRelay,
    add_veth,
    kubeconfig_via,
    nodeagent_argv,
    start_in_netns,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.root

SERVER_IP, CLIENT_IP = "10.53.0.1", "10.53.0.2"
UPSTREAM = ("127.0.0.2", 5300)
D = "cluster.local"


@dataclass
class Setup:
    server_ns: str
    client_ns: str
    proc: subprocess.Popen[bytes]
    log: Path
    kubeconfig: Path

    def q(self, name: str, qtype: str = "A", tcp: bool = False) -> Any:
        return run_in_netns(self.client_ns, query_sync, SERVER_IP, 53, name, qtype, tcp)

    def api(self, fn: Callable[[Client], Any]) -> Any:
        async def go() -> Any:
            async with Client(ClientConfig.from_kubeconfig(self.kubeconfig)) as c:
                return await fn(c)
        return asyncio.run(go())


@pytest.fixture
def dns_setup(apiserver: ApiServerProcess, netns_factory: Callable[[str], str],
              tmp_path: Path) -> Iterator[Setup]:
    server_ns, client_ns = netns_factory("dnss"), netns_factory("dnsc")
    add_veth(server_ns, client_ns, SERVER_IP, CLIENT_IP)
    relay = NetnsRelay(server_ns, ("127.0.0.1", apiserver.port))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        upstream_log = tmp_path / "dnsmasq.log"
        procs.append(start_in_netns(server_ns, [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--listen-address={UPSTREAM[0]}", "--bind-interfaces", f"--port={UPSTREAM[1]}",
            "--host-record=www.example.com,192.0.2.7", "--pid-file=", "--user=root"], upstream_log))
        kc = kubeconfig_via(apiserver.kubeconfig, relay.port, tmp_path / "kubeconfig-dns")
        log = tmp_path / "dns.log"
        proc = start_in_netns(server_ns, nodeagent_argv(
            "-v", "dns", "--kubeconfig", str(kc), "--bind", "0.0.0.0", "--port", "53",
            "--cluster-domain", D, "--upstream", f"{UPSTREAM[0]}:{UPSTREAM[1]}",
            "--advertise-address", SERVER_IP, "--metrics-port", "9153"), log)
        procs.append(proc)
        s = Setup(server_ns, client_ns, proc, log, apiserver.kubeconfig)
        wait_for(lambda: s.q(f"kube-dns.kube-system.svc.{D}").header.rcode == RCODE.NOERROR,
                 "dns answers for its own Service", proc=proc, log=log, timeout=30)
        yield s
    finally:
        for p in reversed(procs):
            stop_process(p)
        relay.close()


def test_answers_from_the_apiserver_across_namespaces(dns_setup: Setup) -> None:
    s = dns_setup

    async def create(c: Client) -> tuple[str, str]:
        web = await c.create(SERVICES, service("web", cluster_ip=None))  # the apiserver allocates it
        await c.create(SERVICES, service("db", cluster_ip="None", ports=[
            {"name": "pg", "port": 5432, "protocol": "TCP"}]))
        await c.create(ENDPOINTSLICES, endpoint_slice(
            "db", endpoints=[ep("10.244.1.5", hostname="db-0"), ep("10.244.2.6"), ep("10.244.3.7", ready=False)],
            ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
        dns = await c.get(SERVICES, "kube-dns", namespace="kube-system")
        return str(web["spec"]["clusterIP"]), str(dns["spec"]["clusterIP"])

    web_ip, dns_ip = s.api(create)
    assert dns_ip == "10.96.0.10"
    wait_for(lambda: [str(r.rdata) for r in s.q(f"web.default.svc.{D}").rr] == [web_ip],
             "web resolves to its ClusterIP", proc=s.proc, log=s.log)
    r = s.q(f"db.default.svc.{D}")
    assert sorted(str(rr.rdata) for rr in r.rr) == ["10.244.1.5", "10.244.2.6"]
    r = s.q(f"_pg._tcp.db.default.svc.{D}", "SRV")
    assert sorted(str(rr.rdata.target) for rr in r.rr) == [f"10-244-2-6.db.default.svc.{D}.",
                                                          f"db-0.db.default.svc.{D}."]
    assert [str(rr.rdata) for rr in s.q(f"db-0.db.default.svc.{D}").rr] == ["10.244.1.5"]
    assert [str(rr.rdata) for rr in s.q(f"10-244-9-9.default.pod.{D}").rr] == ["10.244.9.9"]
    assert s.q(f"nope.default.svc.{D}").header.rcode == RCODE.NXDOMAIN
    assert s.q(f"www.example.com.default.svc.{D}").header.rcode == RCODE.NXDOMAIN
    r = s.q(f"web.default.svc.{D}", tcp=True)
    assert [str(rr.rdata) for rr in r.rr] == [web_ip]
    # outside names through the upstream (a real dnsmasq), over UDP and TCP
    for tcp in (False, True):
        r = s.q("www.example.com", tcp=tcp)
        assert [(rr.rtype, str(rr.rdata)) for rr in r.rr] == [(QTYPE.A, "192.0.2.7")]

    # busybox nslookup, as a pod would run it
    out = subprocess.run([*nsenter_argv(s.client_ns), "busybox", "nslookup", f"web.default.svc.{D}", SERVER_IP],
                         capture_output=True, text=True, timeout=20)
    assert web_ip in out.stdout, out.stdout + out.stderr

    # the kube-dns Service is selector-less; this process's slice points at its advertised address
    async def registration(c: Client) -> tuple[dict[str, Any], dict[str, Any]]:
        svc = await c.get(SERVICES, "kube-dns", namespace="kube-system")
        eps = await c.list(ENDPOINTSLICES, namespace="kube-system",
                           label_selector="kubernetes.io/service-name=kube-dns")
        return svc, eps

    svc, eps = s.api(registration)
    assert "selector" not in svc["spec"]
    assert sorted((p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]) == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    assert [e["addresses"] for item in eps["items"] for e in item["endpoints"]] == [[SERVER_IP]]

    # a deleted Service stops resolving (the watch delivers the deletion; no TTL wait on our side)
    async def delete(c: Client) -> None:
        await c.delete(SERVICES, "web", namespace="default")

    s.api(delete)
    wait_for(lambda: s.q(f"web.default.svc.{D}").header.rcode == RCODE.NXDOMAIN, "deleted web stops resolving",
             timeout=10, proc=s.proc, log=s.log)

    # metrics from inside the server namespace
    def get_metrics() -> str:
        import urllib.request
        with urllib.request.urlopen("http://127.0.0.1:9153/metrics", timeout=3) as resp:
            return str(resp.read().decode())

    body = run_in_netns(s.server_ns, get_metrics)
    assert 'coredns_dns_responses_total{rcode="NXDOMAIN"' in body
    assert 'coredns_forward_responses_total{rcode="NOERROR",to="127.0.0.2:5300"}' in body

    # a clean stop removes this process's endpoint, so the proxy stops sending queries to it
    assert stop_process(s.proc) == 0

    async def slices_left(c: Client) -> list[Any]:
        try:
            lst = await c.list(ENDPOINTSLICES, namespace="kube-system",
                               label_selector="kubernetes.io/service-name=kube-dns")
        except NotFound:
            return []
        return list(lst["items"])

    assert s.api(slices_left) == []
