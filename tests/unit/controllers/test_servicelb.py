"""servicelb: addresses from the pool into status.loadBalancer, requested addresses, the
loadBalancerClass opt-out, addresses given back on delete and type change, never two Services on
one address (also after a restart, from what the Services hold)."""

from __future__ import annotations

import pytest

from nodeagent.controllers.base import Options
from nodeagent.controllers.servicelb import Pool, ServiceLBController, parse_pool
from nodeagent.machinery.kinds import EVENTS, SERVICES
from tests.helpers.controllers_env import Env


def lb(name: str, **spec: object) -> dict:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": name}, "ports": [{"port": 80}], **spec}}


def ip_of(env: Env, name: str) -> str | None:
    svc = next(s for s in env.objects(SERVICES) if s["metadata"]["name"] == name)
    ing = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    return ing[0]["ip"] if ing else None


async def make(pool: str = "192.168.56.224/30") -> tuple[Env, ServiceLBController]:
    env = Env(Options(extra={"lb_address_pool": pool}))
    ctl = env.add(ServiceLBController)
    await env.start()
    return env, ctl


async def test_assign_request_opt_out_release_and_exhaustion() -> None:
    env, _ = await make()
    try:
        c = env.client
        await c.create(SERVICES, lb("one"))
        await c.create(SERVICES, lb("two", loadBalancerIP="192.168.56.227"))
        await c.create(SERVICES, lb("other", loadBalancerClass="example.com/lb"))
        await c.create(SERVICES, {"metadata": {"name": "plain", "namespace": "default"},
                                  "spec": {"ports": [{"port": 80}]}})
        await env.settle()
        assert ip_of(env, "one") == "192.168.56.224"
        assert ip_of(env, "two") == "192.168.56.227"
        assert ip_of(env, "other") is None and ip_of(env, "plain") is None
        for n in ("three", "four"):
            await c.create(SERVICES, lb(n))
        await c.create(SERVICES, lb("five"))
        await env.settle()
        assert {ip_of(env, n) for n in ("three", "four")} == {"192.168.56.225", "192.168.56.226"}
        assert ip_of(env, "five") is None
        assert {"IPAllocated", "SyncLoadBalancerFailed"} <= {e["reason"] for e in env.objects(EVENTS)}
        # delete frees the address for the waiting Service; a type change gives it back too
        await c.delete(SERVICES, "one", "default")
        await env.settle()
        assert ip_of(env, "five") == "192.168.56.224"
        await c.patch(SERVICES, "two", {"spec": {"type": "ClusterIP", "loadBalancerIP": None}}, namespace="default")
        await env.settle()
        assert ip_of(env, "two") is None
    finally:
        await env.stop()


async def test_restart_keeps_addresses_and_resolves_duplicates() -> None:
    env, _ = await make()
    try:
        c = env.client
        held = lb("held")
        c.seed(SERVICES, {**held, "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.224"}]}}})
        c.seed(SERVICES, {**lb("dup"), "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.224"}]}}})
        await env.settle()
        await c.create(SERVICES, lb("new"))
        await env.settle()
        ips = {n: ip_of(env, n) for n in ("held", "dup", "new")}
        assert len(set(ips.values())) == 3 and None not in ips.values(), ips
    finally:
        await env.stop()


def test_pool_syntax() -> None:
    assert Pool("192.168.56.224/30").size() == 4
    assert Pool("10.0.0.1-10.0.0.3,10.0.1.0/31").size() == 5
    with pytest.raises(ValueError):
        parse_pool("10.0.0.5-10.0.0.1")
    with pytest.raises(ValueError):
        parse_pool("nonsense")
