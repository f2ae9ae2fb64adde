"""Self-registration as kube-system/kube-dns, and the /metrics, /healthz, /readyz endpoint."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

from nodeagent.dns.register import Registration, ensure_kube_dns
from nodeagent.machinery.kinds import ENDPOINTSLICES, NAMESPACES, SERVICES
from tests.helpers.apiserver import free_port
from tests.helpers.dns_client import make_query, service
from tests.helpers.fake_client import FakeClient

D = "cluster.local"


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_registers_selectorless_service_and_own_slice(make_dns: Any, fake: FakeClient) -> None:
    dns = await make_dns([], advertise_address="192.168.56.2")
    await dns.until(lambda: dns.app.registrar is not None and dns.app.registrar.registered.is_set(), "registered")
    svc = await fake.get(SERVICES, "kube-dns", namespace="kube-system")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    assert "selector" not in svc["spec"]
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    ports = {(p["name"], p["port"], p["protocol"]): p["targetPort"] for p in svc["spec"]["ports"]}
    assert ports == {("dns", 53, "UDP"): dns.port, ("dns-tcp", 53, "TCP"): dns.port}  # metrics port 0: none
    (eps,) = [s for s in fake.objects(ENDPOINTSLICES) if s["metadata"]["namespace"] == "kube-system"]
    assert eps["metadata"]["name"] == "kube-dns-192-168-56-2"
    assert eps["metadata"]["labels"] == {"kubernetes.io/service-name": "kube-dns",
                                         "endpointslice.kubernetes.io/managed-by": "nodeagent-dns"}
    assert eps["metadata"]["ownerReferences"][0]["uid"] == svc["metadata"]["uid"]
    assert eps["endpoints"] == [{"addresses": ["192.168.56.2"],
                                 "conditions": {"ready": True, "serving": True, "terminating": False}}]
    assert sorted((p["name"], p["port"], p["protocol"]) for p in eps["ports"]) == [
        ("dns", dns.port, "UDP"), ("dns-tcp", dns.port, "TCP")]
    assert fake.objects(NAMESPACES)[0]["metadata"]["name"] == "kube-system"
    # the server answers for its own Service like any other, once its watch has delivered it
    await dns.until(lambda: dns.app.index.service("kube-system", "kube-dns") is not None, "kube-dns watched")
    r = await dns.q(f"kube-dns.kube-system.svc.{D}")
    assert [str(rr.rdata) for rr in r.rr] == ["10.96.0.10"]
    # someone deletes the slice: it comes back; at a clean stop it goes away
    await fake.delete(ENDPOINTSLICES, "kube-dns-192-168-56-2", namespace="kube-system")
    await dns.until(lambda: any(s["metadata"]["name"] == "kube-dns-192-168-56-2"
                                for s in fake.objects(ENDPOINTSLICES)), "slice recreated")
    await dns.app.stop()
    assert not [s for s in fake.objects(ENDPOINTSLICES) if s["metadata"]["namespace"] == "kube-system"]
    assert fake.objects(SERVICES)  # the Service stays: other servers may still serve it


async def test_registration_repairs_an_existing_service() -> None:
    fake = FakeClient()
    old = service("kube-dns", ns="kube-system", cluster_ip="10.96.0.10",
                  ports=[{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}],
                  selector={"k8s-app": "kube-dns"})
    fake.seed(SERVICES, old)
    reg = Registration("10.96.0.10", "192.168.56.2", port=53, metrics_port=9153)
    await ensure_kube_dns(fake, reg)
    svc = await fake.get(SERVICES, "kube-dns", namespace="kube-system")
    assert "selector" not in svc["spec"]
    assert sorted(p["name"] for p in svc["spec"]["ports"]) == ["dns", "dns-tcp", "metrics"]
    rv = svc["metadata"]["resourceVersion"]
    await ensure_kube_dns(fake, reg)  # idempotent: nothing written the second time
    assert (await fake.get(SERVICES, "kube-dns", namespace="kube-system"))["metadata"]["resourceVersion"] == rv
    writes = [a.verb for a in fake.actions if a.verb in ("create", "update")]
    assert writes == ["create", "update", "create"]  # namespace, service, slice
    # the advertised address moves: the slice follows
    await ensure_kube_dns(fake, Registration("10.96.0.10", "192.168.56.2", port=5353, metrics_port=9153))
    eps = await fake.get(ENDPOINTSLICES, "kube-dns-192-168-56-2", namespace="kube-system")
    assert {p["port"] for p in eps["ports"] if p["name"].startswith("dns")} == {5353}


async def test_registration_retries_until_the_apiserver_takes_it(make_dns: Any, fake: FakeClient) -> None:
    fake.fail_next("create", "services")
    dns = await make_dns([], advertise_address="192.168.56.3")
    await dns.until(lambda: dns.app.registrar is not None and dns.app.registrar.registered.is_set(),
                    "registered after a failure")
    assert (await fake.get(SERVICES, "kube-dns", namespace="kube-system"))["spec"]["clusterIP"] == "10.96.0.10"


async def test_metrics_and_health(make_dns: Any) -> None:
    port = free_port()
    dns = await make_dns([service("web")], metrics_port=port)
    await dns.q(f"web.default.svc.{D}")
    await dns.q(f"web.default.svc.{D}")  # the second from the answer cache: still counted
    await dns.q(f"nope.default.svc.{D}", "AAAA")
    await dns.q("www.example.com", tcp=True)
    status, body = await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    lines = body.splitlines()

    def value(prefix: str) -> float:
        (line,) = [ln for ln in lines if ln.startswith(prefix)]
        return float(line.rsplit(" ", 1)[1])

    srv = f'server="dns://127.0.0.1:{dns.port}"'
    assert value(f'coredns_dns_requests_total{{family="4",proto="udp",{srv},type="A",zone="cluster.local."}}') == 2
    assert value(f'coredns_dns_requests_total{{family="4",proto="udp",{srv},type="AAAA",zone="cluster.local."}}') == 1
    assert value(f'coredns_dns_requests_total{{family="4",proto="tcp",{srv},type="A",zone="."}}') == 1
    assert value(f'coredns_dns_responses_total{{rcode="NXDOMAIN",{srv},zone="cluster.local."}}') == 1
    assert value(f'coredns_dns_responses_total{{rcode="REFUSED",{srv},zone="."}}') == 1
    assert value(f'coredns_dns_request_duration_seconds_count{{{srv},type="A",zone="cluster.local."}}') == 2
    assert value(f'coredns_dns_request_duration_seconds_bucket{{le="+Inf",{srv},type="A",zone="cluster.local."}}') == 2
    assert value(f'nodeagent_dns_answer_cache_entries{{{srv}}}') == 2  # web and nope; REFUSED is not cached
    assert (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/healthz"))[0] == 200
    assert (await asyncio.to_thread(http_get, f"http://127.0.0.1:{port}/readyz")) == (200, "ok")


async def test_stop_leaves_the_service_before_it_stops_answering(make_dns: Any, fake: FakeClient) -> None:
    dns = await make_dns([service("web", cluster_ip="10.96.0.20")], advertise_address="192.168.56.4",
                         lameduck=1.0)
    await dns.until(lambda: dns.app.registrar is not None and dns.app.registrar.registered.is_set(), "registered")
    stopping = asyncio.create_task(dns.app.stop())
    await dns.until(lambda: not fake.objects(ENDPOINTSLICES), "slice removed at stop")
    # in lameduck: no longer an endpoint, still answering what the proxy sends before it moves
    r = await dns.q(f"web.default.svc.{D}")
    assert [str(rr.rdata) for rr in r.rr] == ["10.96.0.20"]
    await stopping
    assert await dns.raw(make_query(f"web.default.svc.{D}").pack(), timeout=0.3) is None  # closed
