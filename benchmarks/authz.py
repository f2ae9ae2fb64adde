"""Authorization cost per request with 1,000 RoleBindings, beside the path without RBAC.

Two figures, both from one run:
  decision: the authorizer chain alone (system:masters, Node, RBAC) deciding a request of a user
            bound by one of 1,000 RoleBindings (in 100 namespaces, 10 users each, plus upstream's
            bootstrap policy), allowed, and of a user bound by none, denied after RBAC looked;
            peer: the same requests decided with no RBAC objects at all (the no-RBAC path).
  http:     GET of one ConfigMap over HTTPS from an in-process apiserver holding those bindings, as
            such a user (RBAC decides) and as admin (system:masters, RBAC never consulted).
Added latency = p99(RBAC) - p99(peer); the issue asks for at most 1 ms.

    .venv/bin/python benchmarks/authz.py [--bindings 1000] [--requests 20000]

Last line: one JSON object with the figures (microseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from nodeagent.api.auth import policy  # noqa: E402
from nodeagent.api.auth.attributes import Attributes  # noqa: E402
from nodeagent.api.auth.authorizer import Authorizer  # noqa: E402
from nodeagent.api.auth.user import UserInfo  # noqa: E402
from tests.helpers.api_inproc import inproc_api  # noqa: E402

RB = "rolebindings.rbac.authorization.k8s.io"


def binding(ns: str, name: str, user: str, role: str = "edit") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}


def loaded(n: int) -> Authorizer:
    a = Authorizer()
    roles = policy.cluster_roles()
    from nodeagent.machinery.rbac import aggregated_rules, is_aggregated

    for _ in range(3):
        for r in roles:
            if is_aggregated(r):
                r["rules"] = aggregated_rules(r, roles)
    for r in roles:
        a.rbac.on_event("clusterroles.rbac.authorization.k8s.io", "ADDED", r)
    for b in policy.cluster_role_bindings():
        a.rbac.on_event("clusterrolebindings.rbac.authorization.k8s.io", "ADDED", b)
    for i in range(n):
        a.rbac.on_event(RB, "ADDED", binding(f"ns-{i % 100}", f"b-{i}", f"user-{i}"))
    return a


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def time_decisions(a: Authorizer, attrs: list[Attributes], want: bool) -> list[float]:
    out = []
    for at in attrs:
        t = time.perf_counter_ns()
        d = a.authorize(at)
        out.append((time.perf_counter_ns() - t) / 1000)
        assert d.allowed is want or not want
    return out


async def http_figures(n: int, requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        async with inproc_api(Path(d) / "api") as api:
            admin = api.session()
            await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": "ns-0"}})
            await admin.call("POST", "/api/v1/namespaces/ns-0/configmaps", {"metadata": {"name": "cm"}})
            for i in range(n):
                ns = f"ns-{i % 100}"
                if i < 100 and ns != "ns-0":
                    await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
                b = binding(ns, f"b-{i}", f"user-{i}")
                b["metadata"] = {"name": f"b-{i}"}
                code, out = await admin.call("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
                                             b)
                assert code == 201, out
            user = api.session("user-0", ())
            res: dict[str, list[float]] = {"rbac": [], "masters": []}
            for s in (user, admin):
                for _ in range(100):  # warm up
                    await s.call("GET", "/api/v1/namespaces/ns-0/configmaps/cm")
            for _ in range(requests):
                for who, s in (("rbac", user), ("masters", admin)):
                    t = time.perf_counter()
                    code, _ = await s.call("GET", "/api/v1/namespaces/ns-0/configmaps/cm")
                    res[who].append((time.perf_counter() - t) * 1e6)
                    assert code == 200
    return {f"http_{k}_p{q}": round(pct(v, q / 100), 1) for k, v in res.items() for q in (50, 99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bindings", type=int, default=1000)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--http-requests", type=int, default=2000)
    args = ap.parse_args()
    full, empty = loaded(args.bindings), Authorizer()
    allow = [Attributes(user=UserInfo(f"user-{i % args.bindings}", groups=("system:authenticated",)), verb="create",
                        api_group="apps", resource="deployments", namespace=f"ns-{(i % args.bindings) % 100}")
             for i in range(args.requests)]
    deny = [Attributes(user=UserInfo(f"stranger-{i}", groups=("system:authenticated",)), verb="get",
                       resource="secrets", namespace=f"ns-{i % 100}", name="s") for i in range(args.requests)]
    figures: dict[str, float] = {}
    for label, attrs, want in (("allowed", allow, True), ("denied", deny, False)):
        ours = time_decisions(full, attrs, want)
        peer = time_decisions(empty, attrs, False)
        figures[f"{label}_p50"] = round(statistics.median(ours), 2)
        figures[f"{label}_p99"] = round(pct(ours, 0.99), 2)
        figures[f"{label}_peer_p99"] = round(pct(peer, 0.99), 2)
        figures[f"{label}_added_p99"] = round(pct(ours, 0.99) - pct(peer, 0.99), 2)
        print(f"decision {label:7s} with {args.bindings} RoleBindings: p50 {figures[f'{label}_p50']:.1f} us, "
              f"p99 {figures[f'{label}_p99']:.1f} us; no-RBAC peer p99 {figures[f'{label}_peer_p99']:.1f} us; "
              f"added p99 {figures[f'{label}_added_p99']:.1f} us")
    http = asyncio.run(http_figures(args.bindings, args.http_requests))
    figures.update(http)
    figures["http_added_p99"] = round(http["http_rbac_p99"] - http["http_masters_p99"], 1)
    print(f"http GET configmap as an RBAC user: p50 {http['http_rbac_p50']:.0f} us, p99 {http['http_rbac_p99']:.0f} us; "
          f"as system:masters (no RBAC): p50 {http['http_masters_p50']:.0f} us, p99 {http['http_masters_p99']:.0f} us; "
          f"added p99 {figures['http_added_p99']:.0f} us")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
