"""The ingress model and its HAProxy text: the spec's path and host precedence, backends by port name
or number, problems on missing Services and Secrets, slots and fingerprints, runtime commands; and
every rendered config passes `haproxy -c` when HAProxy is installed."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from nodeagent.ingress import certs
from nodeagent.ingress.haproxy import HAProxy, server_commands
from nodeagent.ingress.model import Builder, World, host_matches, select
from nodeagent.ingress.render import Listen, fingerprint, render, slot_count
from tests.helpers.ingress_objects import endpoint_slice, ingress, path, service, tls_secret


def world(*ings: dict, secrets: dict | None = None) -> World:
    svcs = {f"default/{n}": service(n, port_name="http") for n in ("a", "b", "c", "d")}
    svcs["default/num"] = service("num", port=8000)
    slices = [endpoint_slice(n, f"{n}-1", [f"10.244.0.{i + 2}"], 8080) for i, n in enumerate("abcd")]
    slices.append(endpoint_slice("num", "num-1", ["10.244.1.9"], 9000, port_name=""))
    return World(list(ings), svcs, World.slices_by_service(slices), secrets or {})


def test_the_specs_path_table() -> None:
    """networking.k8s.io/v1 Ingress docs, 'Examples' of path matching."""
    cfg = Builder(world(ingress("x", rules=[{"host": "h", "http": {"paths": [
        path("/aaa/bbb", "a"), path("/foo", "b", "Exact"), path("/foo/", "c"), path("/", "d")]}}]))).build()
    be = {n: b.service for n, b in cfg.backends.items()}
    got = {p: be.get(select(cfg, "h", p) or "") for p in
           ["/aaa/bbb", "/aaa/bbb/", "/aaa/bbbxyz", "/foo", "/foo/", "/foo/x", "/bar", "/"]}
    assert got == {"/aaa/bbb": "a", "/aaa/bbb/": "a", "/aaa/bbbxyz": "d", "/foo": "b",  # Exact beats Prefix
                   "/foo/": "c", "/foo/x": "c", "/bar": "d", "/": "d"}


def test_longest_prefix_wins_and_implementation_specific_is_a_string_prefix() -> None:
    cfg = Builder(world(ingress("x", rules=[{"host": "h", "http": {"paths": [
        path("/a", "a"), path("/a/b", "b"), path("/ab", "c", "ImplementationSpecific")]}}]))).build()
    svc = {n: b.service for n, b in cfg.backends.items()}
    assert svc[select(cfg, "h", "/a/b/c") or ""] == "b"
    assert svc[select(cfg, "h", "/a/x") or ""] == "a"
    assert svc[select(cfg, "h", "/abc") or ""] == "c"
    assert select(cfg, "h", "/x") is None  # no default backend: the 404


def test_hosts_exact_before_wildcard_before_none_and_fallbacks() -> None:
    old = ingress("old", default="d", created="2026-01-01T00:00:00Z",
                  rules=[{"host": "*.ex.com", "http": {"paths": [path("/", "b")]}}])
    new = ingress("new", created="2026-02-01T00:00:00Z", default="c", rules=[
        {"host": "www.ex.com", "http": {"paths": [path("/w", "a")]}},
        {"http": {"paths": [path("/any", "a")]}}])
    cfg = Builder(world(new, old)).build()
    svc = {n: b.service for n, b in cfg.backends.items()}
    assert svc[select(cfg, "www.ex.com:443", "/w") or ""] == "a"
    assert svc[select(cfg, "www.ex.com", "/other") or ""] == "c", "the host's own Ingress's defaultBackend"
    assert svc[select(cfg, "x.ex.com", "/") or ""] == "b"
    assert svc[select(cfg, "a.b.ex.com", "/any") or ""] == "a", "a wildcard matches one label only"
    assert svc[select(cfg, "ex.com", "/zzz") or ""] == "d", "the oldest defaultBackend is the cluster's"
    assert host_matches("*.ex.com", "x.ex.com") and not host_matches("*.ex.com", "ex.com")


def test_backends_by_port_name_or_number_and_problems() -> None:
    ing = ingress("x", rules=[{"host": "h", "http": {"paths": [
        path("/n", "num", port=8000), path("/m", "missing"), path("/p", "a", port=81)]}}],
        tls=[{"hosts": ["h"], "secretName": "gone"}])
    cfg = Builder(world(ing)).build()
    by_svc = {b.service: b for b in cfg.backends.values()}
    assert by_svc["num"].servers == [("10.244.1.9", 9000)]
    assert by_svc["missing"].servers == [] and by_svc["a"].servers == []
    assert {p.reason for p in cfg.problems} == {"ServiceNotFound", "ServicePortNotFound", "SecretNotFound"}
    assert cfg.groups[0].tls  # still redirected, served with the default certificate


def test_tls_secret_checked() -> None:
    good = tls_secret("s", "h")
    bad = tls_secret("t", "h")
    bad["data"]["tls.key"] = tls_secret("u", "other")["data"]["tls.key"]
    cfg = Builder(world(ingress("x", rules=[{"host": "h", "http": {"paths": [path("/", "a")]}}],
                                tls=[{"hosts": ["h"], "secretName": "s"}, {"hosts": ["h"], "secretName": "t"}]),
                        secrets={"default/s": good, "default/t": bad})).build()
    assert [c.name for c in cfg.certificates] == ["default_s"]
    assert [p.reason for p in cfg.problems] == ["InvalidSecret"]


def test_fingerprint_ignores_endpoints_and_slots_grow_in_steps() -> None:
    listen = Listen(run_dir=Path("/r"))
    w = world(ingress("x", rules=[{"host": "h", "http": {"paths": [path("/", "a")]}}]))
    cfg = Builder(w).build()
    slots = {n: slot_count(len(b.servers)) for n, b in cfg.backends.items()}
    fp = fingerprint(cfg, listen, slots)
    next(iter(cfg.backends.values())).servers.append(("10.244.0.99", 8080))
    assert fingerprint(cfg, listen, slots) == fp
    assert "10.244.0.99:8080" in render(cfg, listen, slots)
    assert slot_count(3) == 8 and slot_count(9) == 16 and slot_count(9, 16) == 16 and slot_count(5, 16) == 16
    assert slot_count(3, 16) == 8  # below a quarter: shrink


def test_server_commands_keep_what_stays() -> None:
    cmds, slots = server_commands("be", [("10.0.0.1", 80), ("10.0.0.2", 80), None, None],
                                  [("10.0.0.2", 80), ("10.0.0.3", 80), ("10.0.0.4", 80)])
    assert slots == [("10.0.0.3", 80), ("10.0.0.2", 80), ("10.0.0.4", 80), None]
    assert cmds[0] == "set server be/s1 state maint"
    assert "set server be/s1 addr 10.0.0.3 port 80" in cmds and "set server be/s3 state ready" in cmds
    with pytest.raises(ValueError):
        server_commands("be", [None], [("10.0.0.1", 80), ("10.0.0.2", 80)])


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed (make setup)")
def test_rendered_configs_pass_haproxys_check(tmp_path: Path) -> None:
    listen = Listen(run_dir=tmp_path)
    ing = ingress("x", annotations={"nodeagent.io/use-regex": "true"}, default="d", rules=[
        {"host": "h.ex.com", "http": {"paths": [path("/a b", "a"), path("/re/[0-9]+", "b", "ImplementationSpecific"),
                                                 path("/x#y", "c", "Exact")]}},
        {"host": "*.ex.com", "http": {"paths": [path("/", "a")]}}], tls=[{"hosts": ["h.ex.com"], "secretName": "s"}])
    cfg = Builder(world(ing, secrets={"default/s": tls_secret("s", "h.ex.com")})).build()
    certs.write_for(cfg, tmp_path)
    text = render(cfg, listen, {n: 8 for n in cfg.backends})
    res = asyncio.run(HAProxy(tmp_path).check(text))
    assert res.ok, res.output
    bad = Builder(world(ingress("y", annotations={"nodeagent.io/use-regex": "true"}, rules=[
        {"host": "h", "http": {"paths": [path("/(", "a", "ImplementationSpecific")]}}]))).build()
    assert not asyncio.run(HAProxy(tmp_path).check(render(bad, listen, {n: 8 for n in bad.backends}))).ok
