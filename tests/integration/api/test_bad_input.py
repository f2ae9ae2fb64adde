"""Bad input gets a 4xx Kubernetes Status, never a 500 or a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.helpers.api_kubectl import request
from tests.helpers.apiserver import ApiServerProcess, start_apiserver


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    """One server for all cases: each case is a single request that changes nothing."""
    s = start_apiserver(tmp_path_factory.mktemp("apiserver-bad-input"))
    try:
        yield s
    finally:
        s.stop()

PODS = "/api/v1/namespaces/default/pods"
CASES: list[tuple[str, str, str, bytes, str, int]] = [
    ("malformed json", "POST", PODS, b'{"apiVersion": "v1", "kind": "Pod", ', "application/json", 400),
    ("malformed yaml", "POST", PODS, b"apiVersion: v1\nkind: [Pod\n", "application/yaml", 400),
    ("not an object", "POST", PODS, b"[1, 2, 3]", "application/json", 400),
    ("wrong kind", "POST", PODS, b'{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}',
     "application/json", 400),
    ("wrong apiVersion", "POST", PODS, b'{"apiVersion": "apps/v1", "kind": "Pod", "metadata": {"name": "x"}}',
     "application/json", 400),
    ("invalid name", "POST", PODS, json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Not_Valid"},
                                               "spec": {"containers": [{"name": "c", "image": "i"}]}}).encode(),
     "application/json", 422),
    ("no containers", "POST", PODS, b'{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}',
     "application/json", 422),
    ("metadata is a string", "POST", PODS, b'{"apiVersion": "v1", "kind": "Pod", "metadata": "x"}',
     "application/json", 400),
    ("containers is a string", "POST", PODS,
     b'{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": "c"}}',
     "application/json", 422),
    ("labels not strings", "POST", PODS,
     b'{"metadata": {"name": "x", "labels": {"a": 1}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}',
     "application/json", 422),
    ("protobuf body", "POST", PODS, b"k8s\x00\x0a\x0b", "application/vnd.kubernetes.protobuf", 415),
    ("oversized body", "POST", "/api/v1/namespaces/default/configmaps",
     json.dumps({"metadata": {"name": "big"}, "data": {"a": "x" * (4 * 1024 * 1024)}}).encode(),
     "application/json", 413),
    ("bad label selector", "GET", PODS + "?labelSelector=a%20in%20(b", b"", "", 400),
    ("unknown field selector", "GET", PODS + "?fieldSelector=spec.bogus%3Dx", b"", "", 400),
    ("bad patch type", "PATCH", PODS + "/x", b"{}", "text/plain", 415),
    ("unknown resource", "GET", "/api/v1/widgets", b"", "", 404),
    ("bad json patch", "PATCH", "/api/v1/namespaces/default", b'{"op": "add"}', "application/json-patch+json", 400),
    ("bad resourceVersion", "GET", PODS + "?watch=1&resourceVersion=abc", b"", "", 400),
    ("bad limit", "GET", PODS + "?limit=ten", b"", "", 400),
    ("bad continue", "GET", PODS + "?limit=1&continue=%%%", b"", "", 400),
    ("bad grace period", "DELETE", PODS + "/x?gracePeriodSeconds=soon", b"", "", 400),
    ("deeply nested json", "POST", PODS, b"[" * 100000 + b"]" * 100000, "application/json", 400),
    ("deeply nested yaml", "POST", PODS, b"[" * 5000 + b"]" * 5000, "application/yaml", 400),
    ("bad quantity", "POST", PODS, json.dumps({"metadata": {"name": "q"}, "spec": {"containers": [
        {"name": "c", "image": "i", "resources": {"limits": {"cpu": True}}}]}}).encode(), "application/json", 422),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_4xx_status(server: ApiServerProcess, case: tuple[str, str, str, bytes, str, int]) -> None:
    _, method, path, body, ctype, want = case
    code, resp = request(server, method, path, body or None, content_type=ctype or "application/json")
    assert code == want, resp
    assert isinstance(resp, dict) and resp["kind"] == "Status" and resp["code"] == want and resp["status"] == "Failure"
    assert "Traceback" not in json.dumps(resp)
    assert "Traceback" not in server.log.read_text(), "the server logged an exception for bad input"
