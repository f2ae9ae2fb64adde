"""Ingress and IngressClass in the registry: upstream's validation messages, the default class by
admission (newest wins), status reset on create and kept by the main resource, status validation,
kubectl's columns, and kubectl create ingress's protobuf body."""

from __future__ import annotations

import pytest

from nodeagent.api.registry.strategies.ingresses import IngressClassStrategy, IngressStrategy, format_hosts
from nodeagent.client import Invalid
from nodeagent.machinery.kinds import INGRESSCLASSES, INGRESSES
from tests.helpers.fake_client import FakeClient
from tests.helpers.ingress_objects import ingress, path

DEFAULT = {"ingressclass.kubernetes.io/is-default-class": "true"}


def cls(name: str, created: str, default: bool = True) -> dict:
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": DEFAULT if default else {}},
            "spec": {"controller": "example.com/" + name}}


async def test_default_class_newest_and_not_when_named() -> None:
    c = FakeClient()
    c.seed(INGRESSCLASSES, cls("old", "2026-01-01T00:00:00Z"))
    c.seed(INGRESSCLASSES, cls("new", "2026-02-01T00:00:00Z"))
    c.seed(INGRESSCLASSES, cls("plain", "2026-03-01T00:00:00Z", default=False))
    got = await c.create(INGRESSES, ingress("a", rules=[{"host": "h", "http": {"paths": [path("/", "s")]}}]))
    assert got["spec"]["ingressClassName"] == "new"
    named = await c.create(INGRESSES, ingress("b", cls="plain", rules=[{"http": {"paths": [path("/", "s")]}}]))
    assert named["spec"]["ingressClassName"] == "plain"
    legacy = ingress("c", annotations={"kubernetes.io/ingress.class": "x"}, default="s")
    assert "ingressClassName" not in (await c.create(INGRESSES, legacy))["spec"]
    assert got["status"] == {"loadBalancer": {}} and got["metadata"]["generation"] == 1


@pytest.mark.parametrize(("spec", "message"), [
    ({}, "spec: Invalid value: null: either `defaultBackend` or `rules` must be specified"),
    ({"rules": [{"host": "1.2.3.4", "http": {"paths": [path("/", "s")]}}]},
     'spec.rules[0].host: Invalid value: "1.2.3.4": must be a DNS name, not an IP address'),
    ({"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "s", "port": {"number": 1}}}}]}}]},
     "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"),
    ({"rules": [{"http": {"paths": [path("a", "s")]}}]},
     'spec.rules[0].http.paths[0].path: Invalid value: "a": must be an absolute path'),
    ({"rules": [{"http": {"paths": [path("/a//b", "s", "Exact")]}}]},
     "spec.rules[0].http.paths[0].path: Invalid value: \"/a//b\": must not contain '//'"),
    ({"defaultBackend": {"service": {"name": "s", "port": {"name": "http", "number": 80}}}},
     'spec.defaultBackend: Invalid value: "": cannot set both port name & port number'),
    ({"defaultBackend": {}}, 'spec.defaultBackend: Invalid value: "": resource or service backend is required'),
])
async def test_validation_messages(spec: dict, message: str) -> None:
    c = FakeClient()
    with pytest.raises(Invalid) as e:
        await c.create(INGRESSES, {"metadata": {"name": "x", "namespace": "default"}, "spec": spec})
    assert message in str(e.value)


async def test_status_kept_by_spec_writes_and_validated() -> None:
    c = FakeClient()
    await c.create(INGRESSES, ingress("a", default="s"))
    await c.patch(INGRESSES, "a", {"status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.11"}]}}},
                  namespace="default", subresource="status")
    got = await c.patch(INGRESSES, "a", {"status": {"loadBalancer": {}}, "metadata": {"labels": {"x": "y"}}},
                        namespace="default")
    assert got["status"]["loadBalancer"]["ingress"] == [{"ip": "192.168.56.11"}]
    with pytest.raises(Invalid):
        await c.patch(INGRESSES, "a", {"status": {"loadBalancer": {"ingress": [{"ip": "nope"}]}}},
                      namespace="default", subresource="status")


async def test_ingress_class_rules() -> None:
    c = FakeClient()
    with pytest.raises(Invalid, match="must be a domain-prefixed path"):
        await c.create(INGRESSCLASSES, {"metadata": {"name": "x"}, "spec": {"controller": "nodomain"}})
    await c.create(INGRESSCLASSES, {"metadata": {"name": "x"}, "spec": {"controller": "a.io/x"}})
    with pytest.raises(Invalid, match="field is immutable"):
        await c.patch(INGRESSCLASSES, "x", {"spec": {"controller": "a.io/y"}})


def test_columns() -> None:
    ing = {"metadata": {"name": "web"}, "spec": {"ingressClassName": "nodeagent", "tls": [{}], "rules": [
        {"host": "a"}, {"host": "b"}, {"host": "c"}, {"host": "d"}, {}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.168.56.12"}, {"ip": "192.168.56.11"}]}}}
    row = IngressStrategy.printer.row(ing)
    assert row[:5] == ["web", "nodeagent", "a,b,c + 2 more...", "192.168.56.11,192.168.56.12", "80, 443"]
    assert format_hosts([{}]) == "*"
    ic = {"metadata": {"name": "n"}, "spec": {"controller": "a.io/x", "parameters": {
        "apiGroup": "k8s.example.com", "kind": "Params", "name": "p"}}}
    assert IngressClassStrategy.printer.row(ic)[:3] == ["n", "a.io/x", "Params.k8s.example.com/p"]


def test_kubectl_create_ingress_protobuf() -> None:
    from nodeagent.api.protobuf import MAGIC, decode

    def field(n: int, payload: bytes) -> bytes:
        return bytes([(n << 3) | 2, len(payload)]) + payload

    def s(n: int, v: str) -> bytes:
        return field(n, v.encode())

    port = field(2, s(1, "http"))
    backend = field(2, field(4, s(1, "svc") + port))
    http = field(2, field(1, field(1, s(1, "/a") + s(3, "Prefix") + backend)))
    spec = s(4, "nodeagent") + field(3, s(1, "web.test") + http)
    obj = field(1, s(1, "web")) + field(2, spec)
    body = MAGIC + field(1, s(1, "networking.k8s.io/v1") + s(2, "Ingress")) + field(2, obj)
    got = decode(body)
    assert got["spec"] == {"ingressClassName": "nodeagent", "rules": [{"host": "web.test", "http": {"paths": [
        {"path": "/a", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"name": "http"}}}}]}}]}
