"""The kubelet's projected service account tokens: asked for bound to the pod, cached, renewed past
80% of their life, and written into the projected volume with the CA and namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeagent.api.admission.serviceaccount import api_access_volume
from nodeagent.kubelet.tokens import TokenManager
from nodeagent.kubelet.volumes import setup_volumes


class _Client:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []

    async def request(self, method: str, path: str, body: Any = None, **_: Any) -> dict[str, Any]:
        self.requests.append((path, body))
        return {"spec": body["spec"], "status": {"token": f"token-{len(self.requests)}"}}


POD = {"metadata": {"name": "p", "namespace": "team", "uid": "u1"},
       "spec": {"serviceAccountName": "builder", "volumes": [api_access_volume("kube-api-access-x")]}}


async def test_tokens_are_bound_cached_and_renewed() -> None:
    now = [1000.0]
    client = _Client()
    tm = TokenManager(client, now=lambda: now[0])
    src = {"expirationSeconds": 600, "path": "token"}
    assert await tm.token(POD, src) == b"token-1"
    path, body = client.requests[0]
    assert path == "/api/v1/namespaces/team/serviceaccounts/builder/token"
    assert body["spec"]["boundObjectRef"] == {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "u1"}
    now[0] += 479
    assert await tm.token(POD, src) == b"token-1" and not tm.refresh_due(
        {**POD, "spec": {**POD["spec"], "volumes": [{"name": "v", "projected": {"sources": [
            {"serviceAccountToken": src}]}}]}})
    now[0] += 2  # past 80% of 600 s
    assert await tm.token(POD, src) == b"token-2"
    tm.forget("u1")
    assert await tm.token(POD, src) == b"token-3"


def _read(p: Path) -> str:
    return p.read_text()


async def test_the_projected_volume_holds_token_ca_and_namespace(tmp_path: Any) -> None:
    async def get(kind: str, ns: str, name: str) -> dict[str, Any] | None:
        assert (kind, ns, name) == ("configmap", "team", "kube-root-ca.crt")
        return {"data": {"ca.crt": "PEM"}}

    tm = TokenManager(_Client())
    paths = await setup_volumes(POD, str(tmp_path), get, tm.token)
    d = paths["kube-api-access-x"]
    files = {n: _read(Path(d, n)) for n in ("token", "ca.crt", "namespace")}
    assert files == {"token": "token-1", "ca.crt": "PEM", "namespace": "team"}
