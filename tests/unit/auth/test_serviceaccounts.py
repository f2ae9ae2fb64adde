"""ServiceAccount tokens end to end over HTTP: TokenRequest, the JWTs' claims, authentication with
them (and their revocation with the bound pod), bad JWTs refused with 401, OIDC discovery, and the
ServiceAccount admission plugin's projected volume."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeagent.api.auth.serviceaccount import b64url, unb64url
from tests.helpers.api_inproc import InProcApi, Session, inproc_api

TOKEN = "/api/v1/namespaces/team/serviceaccounts/builder/token"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcApi]:
    async with inproc_api(tmp_path / "api", service_accounts=True) as a:
        admin = a.session()
        assert (await admin.call("POST", "/api/v1/namespaces", {"metadata": {"name": "team"}}))[0] == 201
        for name in ("default", "builder"):
            code, body = await admin.call("POST", "/api/v1/namespaces/team/serviceaccounts", {"metadata": {"name": name}})
            assert code == 201, body
        yield a


def _claims(token: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(unb64url(token.split(".")[1]))
    return out


def _bearer(api: InProcApi, token: str) -> Session:
    s = Session(api.server, token=token)
    api._sessions.append(s)
    return s


async def _whoami(s: Session) -> tuple[int, Any]:
    return await s.call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", {})


async def _pod(admin: Session, name: str, node: str = "", **spec: Any) -> dict[str, Any]:
    body = {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}
    if node:
        body["spec"]["nodeName"] = node
    code, pod = await admin.call("POST", "/api/v1/namespaces/team/pods", body)
    assert code == 201, pod
    return dict(pod)


async def test_token_request_issues_a_jwt_that_authenticates(api: InProcApi) -> None:
    admin = api.session()
    code, tr = await admin.call("POST", TOKEN, {"spec": {"expirationSeconds": 600}})
    assert code == 201, tr
    token = tr["status"]["token"]
    c = _claims(token)
    assert c["sub"] == "system:serviceaccount:team:builder" and c["iss"] == "https://kubernetes.default.svc.cluster.local"
    assert c["aud"] == ["https://kubernetes.default.svc.cluster.local"] and c["exp"] - c["iat"] == 600
    assert c["kubernetes.io"]["serviceaccount"]["name"] == "builder"
    header = json.loads(unb64url(token.split(".")[0]))
    assert header["alg"] == "RS256" and header["kid"]
    code, me = await _whoami(_bearer(api, token))
    assert code == 201
    info = me["status"]["userInfo"]
    assert info["username"] == "system:serviceaccount:team:builder"
    assert info["groups"] == ["system:serviceaccounts", "system:serviceaccounts:team", "system:authenticated"]
    code, review = await admin.call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {"spec": {"token": token}})
    assert review["status"]["authenticated"] is True
    # a service account holds nothing until bound
    code, _ = await _bearer(api, token).call("GET", "/api/v1/namespaces/team/pods")
    assert code == 403


async def test_a_token_bound_to_a_pod_dies_with_it(api: InProcApi) -> None:
    admin = api.session()
    pod = await _pod(admin, "p", serviceAccountName="builder")
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod["metadata"]["uid"]}
    code, tr = await admin.call("POST", TOKEN, {"spec": {"boundObjectRef": ref}})
    assert code == 201, tr
    token = tr["status"]["token"]
    assert _claims(token)["kubernetes.io"]["pod"] == {"name": "p", "uid": pod["metadata"]["uid"]}
    code, me = await _whoami(_bearer(api, token))
    assert me["status"]["userInfo"]["extra"]["authentication.kubernetes.io/pod-name"] == ["p"]
    assert (await admin.call("DELETE", "/api/v1/namespaces/team/pods/p"))[0] == 200
    code, _ = await _whoami(_bearer(api, token))
    assert code == 401
    code, out = await admin.call("POST", TOKEN, {"spec": {"boundObjectRef": ref}})
    assert code == 404


async def test_bad_jwts_are_401(api: InProcApi) -> None:
    admin = api.session()
    code, tr = await admin.call("POST", TOKEN, {"spec": {"audiences": ["vault"]}})
    wrong_aud = tr["status"]["token"]
    code, tr = await admin.call("POST", TOKEN, {})
    good = tr["status"]["token"]
    h, p, sig = good.split(".")
    claims = _claims(good)
    expired = f"{h}.{b64url(json.dumps({**claims, 'exp': int(time.time()) - 3600}).encode())}.{sig}"
    forged_sig = f"{h}.{p}.{b64url(b'x' * 256)}"
    none_alg = f"{b64url(json.dumps({'alg': 'none'}).encode())}.{p}."
    hs256 = f"{b64url(json.dumps({'alg': 'HS256', 'kid': json.loads(unb64url(h))['kid']}).encode())}.{p}.{sig}"
    for bad in (wrong_aud, expired, forged_sig, none_alg, hs256, "a.b.c", "not-a-jwt", good + "x",
                base64.b64encode(b"{}").decode() + ".e30.", good.replace(".", "..", 1)):
        code, out = await _whoami(_bearer(api, bad))
        assert code == 401, bad
        assert out["kind"] == "Status" and out["reason"] == "Unauthorized"
    code, review = await admin.call("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {"spec": {"token": expired}})
    assert code == 201 and review["status"]["authenticated"] is False


async def test_token_request_bad_input_is_4xx(api: InProcApi) -> None:
    admin = api.session()
    for body, want in (({"spec": {"expirationSeconds": 10}}, 422), ({"spec": {"expirationSeconds": "1h"}}, 422),
                       ({"spec": {"audiences": "x"}}, 422), ({"spec": {"boundObjectRef": {"kind": "Deployment",
                                                                                          "name": "x"}}}, 400),
                       ({"spec": {"boundObjectRef": {"kind": "Pod", "name": "nope"}}}, 404), ([1], 400)):
        code, out = await admin.call("POST", TOKEN, body)
        assert code == want, (body, out)
    code, _ = await admin.call("POST", "/api/v1/namespaces/team/serviceaccounts/nope/token", {})
    assert code == 404


async def test_oidc_discovery(api: InProcApi) -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    admin = api.session()
    token = (await admin.call("POST", TOKEN, {}))[1]["status"]["token"]
    sa = _bearer(api, token)  # system:serviceaccounts may read them (service-account-issuer-discovery)
    code, conf = await sa.call("GET", "/.well-known/openid-configuration")
    assert code == 200 and conf["issuer"] == "https://kubernetes.default.svc.cluster.local"
    assert conf["jwks_uri"].endswith("/openid/v1/jwks") and conf["id_token_signing_alg_values_supported"] == ["RS256"]
    code, jwks = await sa.call("GET", "/openid/v1/jwks")
    (key,) = jwks["keys"]
    assert key["kid"] == json.loads(unb64url(token.split(".")[0]))["kid"]
    pub = rsa.RSAPublicNumbers(int.from_bytes(unb64url(key["e"]), "big"),
                               int.from_bytes(unb64url(key["n"]), "big")).public_key()
    h, p, s = token.split(".")
    pub.verify(unb64url(s), f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())  # raises if wrong
    code, _ = await api.session("carol", ()).call("GET", "/openid/v1/jwks")
    assert code == 403


async def test_pods_get_the_api_access_volume(api: InProcApi) -> None:
    admin = api.session()
    pod = await _pod(admin, "a")
    assert pod["spec"]["serviceAccountName"] == "default"
    (vol,) = [v for v in pod["spec"]["volumes"] if v["name"].startswith("kube-api-access-")]
    sources = vol["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert pod["spec"]["containers"][0]["volumeMounts"] == [
        {"name": vol["name"], "readOnly": True, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]
    off = await _pod(admin, "b", automountServiceAccountToken=False)
    assert not off["spec"].get("volumes")
    code, out = await admin.call("POST", "/api/v1/namespaces/team/pods", {
        "metadata": {"name": "c"}, "spec": {"serviceAccountName": "ghost", "containers": [{"name": "c", "image": "x"}]}})
    assert code == 403 and 'serviceaccount "ghost" not found' in out["message"]


async def test_a_node_gets_tokens_only_for_its_own_pods(api: InProcApi) -> None:
    admin, n1 = api.session(), api.node("n1")
    assert (await n1.call("POST", "/api/v1/nodes", {"metadata": {"name": "n1"}}))[0] == 201
    mine = await _pod(admin, "mine", node="n1", serviceAccountName="builder")
    theirs = await _pod(admin, "theirs", node="n2", serviceAccountName="builder")
    ref = {"kind": "Pod", "apiVersion": "v1", "name": "mine", "uid": mine["metadata"]["uid"]}
    code, tr = await n1.call("POST", TOKEN, {"spec": {"boundObjectRef": ref}})
    assert code == 201, tr
    assert _claims(tr["status"]["token"])["kubernetes.io"]["node"]["name"] == "n1"
    code, _ = await n1.call("POST", TOKEN, {"spec": {}})  # unbound
    assert code == 403
    ref2 = {"kind": "Pod", "apiVersion": "v1", "name": "theirs", "uid": theirs["metadata"]["uid"]}
    code, _ = await n1.call("POST", TOKEN, {"spec": {"boundObjectRef": ref2}})
    assert code == 403
    code, _ = await n1.call("POST", "/api/v1/namespaces/team/serviceaccounts/default/token",
                            {"spec": {"boundObjectRef": ref}})
    assert code == 403  # not the pod's account
