"""The pods subresources proxied to the kubelet as streams (exec, attach, portforward): listed in
discovery with upstream's verbs and kinds, and for admins only (a node identity may not use them)."""

from __future__ import annotations

import pytest

from nodeagent.api import discovery
from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.authorizer import Authorizer
from nodeagent.api.tokens import MASTERS_GROUP, NODE_USER_PREFIX, NODES_GROUP, UserInfo

UPSTREAM = {"pods/exec": "PodExecOptions", "pods/attach": "PodAttachOptions",
            "pods/portforward": "PodPortForwardOptions"}


def test_discovery_lists_them_with_upstreams_verbs_and_kinds() -> None:
    body = discovery.resource_list("", "v1")
    assert body is not None
    got = {r["name"]: (r["kind"], r["verbs"]) for r in body["resources"] if r["name"] in UPSTREAM}
    assert got == {name: (kind, ["create", "get"]) for name, kind in UPSTREAM.items()}
    agg = discovery.aggregated(legacy=True)
    pods = [r for g in agg["items"] for v in g["versions"] for r in v["resources"] if r["resource"] == "pods"]
    subs = {s["subresource"]: s["responseKind"]["kind"] for s in pods[0]["subresources"]}
    assert subs["attach"] == "PodAttachOptions"


@pytest.mark.parametrize("sub", ["exec", "attach", "portforward"])
@pytest.mark.parametrize("verb", ["create", "get"])
def test_admins_only(sub: str, verb: str) -> None:
    admin = UserInfo("admin", "1", (MASTERS_GROUP,))
    node = UserInfo(f"{NODE_USER_PREFIX}n1", "2", (NODES_GROUP,))
    authz = Authorizer()
    attrs = {"verb": verb, "resource": "pods", "subresource": sub, "namespace": "default", "name": "p"}
    assert authz.authorize(Attributes(user=admin, **attrs)).allowed
    assert not authz.authorize(Attributes(user=node, **attrs)).allowed
