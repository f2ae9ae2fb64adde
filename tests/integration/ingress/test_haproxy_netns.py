"""The ingress controller with real HAProxy inside a network namespace, fed by the fake client (the
real registry in memory): routing and precedence as served, TLS by SNI, scaling through the runtime
API without a reload, a rule change by a graceful reload, and a rule HAProxy refuses kept out while
the rest is served. Backends are busybox httpd servers in the same namespace."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodeagent.ingress.controller import IngressController, Options
from nodeagent.ingress.render import Listen
from nodeagent.machinery.kinds import ENDPOINTSLICES, EVENTS, INGRESSCLASSES, INGRESSES, SECRETS, SERVICES
from nodeagent.netns import nsenter_argv
from tests.helpers.fake_client import FakeClient
from tests.helpers.ingress_objects import endpoint_slice, ingress, path, service, tls_secret

pytestmark = pytest.mark.root

HTTP, HTTPS = 18080, 18443
BACKENDS = {"a1": 18101, "a2": 18102, "a3": 18103, "b1": 18201, "d1": 18301}


@dataclass
class Env:
    ns: str
    client: FakeClient
    ctl: IngressController
    tmp: Path

    def curl(self, url: str, host: str = "example.com", *extra: str) -> tuple[int, str]:
        p = subprocess.run([*nsenter_argv(self.ns), "curl", "-sk", "-m", "3", "-o", "-", "-w", "\n%{http_code}",
                            "-H", f"Host: {host}", *extra, url], capture_output=True, text=True, timeout=10)
        body, _, code = p.stdout.rpartition("\n")
        return int(code or 0), body.strip()

    def sh(self, script: str) -> str:
        return subprocess.run([*nsenter_argv(self.ns), "sh", "-c", script], capture_output=True, text=True,
                              timeout=10).stdout

    def get(self, path_: str, host: str = "example.com") -> tuple[int, str]:
        return self.curl(f"http://127.0.0.1:{HTTP}{path_}", host)

    async def settle(self) -> None:
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not self.ctl.dirty.is_set():
                await asyncio.sleep(0.3)  # the sync that cleared it has run
                if not self.ctl.dirty.is_set():
                    return


def _httpd(ns: str, name: str, port: int, root: Path) -> subprocess.Popen[bytes]:
    d = root / name
    d.mkdir()
    (d / "index.html").write_text(name + "\n")
    for sub in ("a", "ab", "b", "x"):
        (d / sub).mkdir()
        (d / sub / "index.html").write_text(name + "\n")
    (d / "a" / "x").write_text(name + "\n")
    return subprocess.Popen([*nsenter_argv(ns), "busybox", "httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(d)])


@pytest.fixture
async def env(netns_factory: Callable[[str], str], tmp_path: Path) -> AsyncIterator[Env]:
    ns = netns_factory("ing")
    servers = [_httpd(ns, n, p, tmp_path) for n, p in BACKENDS.items()]
    client = FakeClient()
    await client.create(INGRESSCLASSES, {"metadata": {"name": "nodeagent", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}, "spec": {"controller": "nodeagent.io/ingress"}})
    for svc, names in (("svc-a", ["a1", "a2"]), ("svc-b", ["b1"]), ("svc-d", ["d1"])):
        await client.create(SERVICES, service(svc, port_name="http"))
        for n in names:  # one slice per backend: they differ by port only
            await client.create(ENDPOINTSLICES, endpoint_slice(svc, f"{svc}-{n}", ["127.0.0.1"], BACKENDS[n]))
    ctl = IngressController(client, Options(node_name="n1", listen=Listen("127.0.0.1", HTTP, HTTPS, tmp_path / "run"),
                                            haproxy_binary=[*nsenter_argv(ns), "haproxy"], min_sync_interval=0.01,
                                            publish_addresses=("192.0.2.10",)))
    try:
        yield Env(ns, client, ctl, tmp_path)
    finally:
        await ctl.stop()
        for s in servers:
            s.terminate()
            s.wait(5)


async def test_routes_tls_scaling_and_reloads(env: Env) -> None:
    c = env.client
    await c.create(SECRETS, tls_secret("web-tls", "example.com"))
    await c.create(INGRESSES, ingress("web", rules=[
        {"host": "example.com", "http": {"paths": [path("/a", "svc-a"), path("/b", "svc-b"),
                                                     path("/a/x", "svc-b", "Exact")]}},
        {"host": "*.wild.test", "http": {"paths": [path("/", "svc-b")]}},
    ], tls=[{"hosts": ["example.com"], "secretName": "web-tls"}], default="svc-d"))
    await env.ctl.start()
    code, body = env.get("/a/")
    assert code == 308  # TLS host: HTTP is redirected
    https = f"https://127.0.0.1:{HTTPS}"
    sni = ["--resolve", f"example.com:{HTTPS}:127.0.0.1"]
    assert env.curl(f"https://example.com:{HTTPS}/a/", "example.com", *sni)[1] in ("a1", "a2")
    assert env.curl(f"https://example.com:{HTTPS}/b/", "example.com", *sni)[1] == "b1"
    assert env.curl(f"https://example.com:{HTTPS}/a/x", "example.com", *sni)[1] == "b1"  # Exact beats Prefix
    code, body = env.curl(f"https://example.com:{HTTPS}/ab/", "example.com", *sni)
    assert body == "d1", "/ab is not under the Prefix /a: the host's default backend answers"
    # wildcard: one label only; an unknown host gets the default backend
    assert env.get("/x/", "foo.wild.test")[1] == "b1"
    assert env.get("/x/", "a.b.wild.test")[1] == "d1"
    assert env.get("/", "nobody.test")[1] == "d1"
    # the Secret's certificate for SNI example.com, the fake one otherwise
    issuer = env.sh(f"curl -skv --resolve example.com:{HTTPS}:127.0.0.1 https://example.com:{HTTPS}/ "
                    "2>&1 >/dev/null | grep -i 'subject:'")
    assert "CN=example.com" in issuer
    other = env.sh(f"curl -skv {https}/ 2>&1 >/dev/null | grep -i subject:")
    assert "Fake Certificate" in other

    # scale svc-a to three pods: no reload, the new endpoint answers
    reloads = env.ctl.proxy.reloads
    worker = await env.ctl.proxy.worker_pid()
    await c.create(ENDPOINTSLICES, endpoint_slice("svc-a", "svc-a-a3", ["127.0.0.1"], BACKENDS["a3"]))
    await env.settle()
    seen = {env.curl(f"https://example.com:{HTTPS}/a/", "example.com", *sni)[1] for _ in range(6)}
    assert seen == {"a1", "a2", "a3"}
    await c.delete(ENDPOINTSLICES, "svc-a-a1", "default")
    await env.settle()
    seen = {env.curl(f"https://example.com:{HTTPS}/a/", "example.com", *sni)[1] for _ in range(6)}
    assert seen == {"a2", "a3"}
    assert env.ctl.proxy.reloads == reloads and await env.ctl.proxy.worker_pid() == worker
    assert env.ctl.metrics.endpoint_updates._value.get() >= 1

    # a rule change: a graceful reload
    ing = await c.get(INGRESSES, "web", "default")
    ing["spec"]["rules"][0]["http"]["paths"].append(path("/ab/", "svc-b", "Exact"))
    await c.update(INGRESSES, ing)
    await env.settle()
    assert env.curl(f"https://example.com:{HTTPS}/ab/", "example.com", *sni)[1] == "b1"
    assert env.ctl.proxy.reloads == reloads + 1

    # status written with the published address
    got = await c.get(INGRESSES, "web", "default")
    assert got["status"]["loadBalancer"] == {"ingress": [{"ip": "192.0.2.10"}]}


async def test_bad_input_is_reported_and_the_rest_served(env: Env) -> None:
    c = env.client
    await c.create(INGRESSES, ingress("good", rules=[{"host": "good.test", "http": {"paths": [path("/", "svc-b")]}}]))
    await c.create(INGRESSES, ingress("missing", rules=[
        {"host": "missing.test", "http": {"paths": [path("/", "nosuch"), path("/a", "svc-a")]}}],
        tls=[{"hosts": ["missing.test"], "secretName": "nosecret"}]))
    await env.ctl.start()
    assert env.get("/", "good.test") == (200, "b1")
    assert env.curl(f"https://127.0.0.1:{HTTPS}/", "missing.test")[0] == 503  # no such Service: 503
    assert env.curl(f"https://127.0.0.1:{HTTPS}/a/", "missing.test")[1] in ("a1", "a2")
    await asyncio.sleep(0.2)
    await env.ctl.recorder.flush()
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in (await c.list(EVENTS, "default"))["items"]}
    assert {("missing", "ServiceNotFound"), ("missing", "SecretNotFound")} <= reasons

    # a regex HAProxy refuses: that Ingress is left out with an Event, the good one keeps serving
    reloads = env.ctl.proxy.reloads
    await c.create(INGRESSES, ingress("regex", annotations={"nodeagent.io/use-regex": "true"}, rules=[
        {"host": "regex.test", "http": {"paths": [path("/(unclosed", "svc-a", "ImplementationSpecific")]}}]))
    await env.settle()
    assert env.get("/", "good.test") == (200, "b1")
    assert env.get("/(unclosed", "regex.test")[1] == "404 Not Found" or env.get("/", "regex.test")[0] == 404
    await env.ctl.recorder.flush()
    events = [e for e in (await c.list(EVENTS, "default"))["items"] if e["involvedObject"]["name"] == "regex"]
    assert events and events[0]["reason"] == "RejectedConfig", events
    # and fixing it serves it
    ing = await c.get(INGRESSES, "regex", "default")
    ing["spec"]["rules"][0]["http"]["paths"][0]["path"] = "/(closed)"
    await c.update(INGRESSES, ing)
    await env.settle()
    assert env.get("/closed", "regex.test")[0] in (200, 404)  # served by svc-a's httpd (no such file: 404)
    assert env.get("/closed", "regex.test")[1] != "default backend - 404"
    assert env.ctl.proxy.reloads > reloads
