"""spec.healthCheckNodePort through a real `nodeagent apiserver`, with kubectl and raw HTTP: allocated
from the nodePort range for LoadBalancer/Local, kept, wiped and released as upstream does, and
still reserved after a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.helpers.api_kubectl import kubectl, request
from tests.helpers.apiserver import ApiServerProcess

SVCS = "/api/v1/namespaces/default/services"
LO, HI = 30000, 32767  # the apiserver's default --service-node-port-range

MANIFEST = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]
"""


def service(name: str, type_: str = "LoadBalancer", policy: str | None = "Local", **spec: Any) -> bytes:
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                            "spec": {"type": type_, "selector": {"app": name}, "ports": [{"port": 80}], **spec}}
    if policy:
        body["spec"]["externalTrafficPolicy"] = policy
    return json.dumps(body).encode()


def get(server: ApiServerProcess, name: str) -> dict[str, Any]:
    svc: dict[str, Any] = json.loads(kubectl(server, "get", "svc", name, "-o", "json").stdout)
    return svc


def patch(server: ApiServerProcess, name: str, body: dict[str, Any]) -> tuple[int, Any]:
    return request(server, "PATCH", f"{SVCS}/{name}", json.dumps(body).encode(),
                   content_type="application/merge-patch+json")


def taken_as_node_port(server: ApiServerProcess, port: int) -> bool:
    """Ask for `port` as a nodePort: 422 "already allocated" while anything holds it (the probe
    Service is deleted again when it was created)."""
    code, body = request(server, "POST", SVCS, service("probe", "NodePort", None, ports=[{"port": 1, "nodePort": port}]))
    if code == 201:
        assert request(server, "DELETE", f"{SVCS}/probe")[0] == 200
        return False
    assert code == 422 and "provided port is already allocated" in body["message"], body
    return True


def test_allocated_on_create_kept_on_update_released_on_delete(apiserver: ApiServerProcess, tmp_path: Path) -> None:
    f = tmp_path / "web.yaml"
    f.write_text(MANIFEST)
    assert "service/web created" in kubectl(apiserver, "apply", "-f", str(f)).stdout
    spec = get(apiserver, "web")["spec"]
    hc = spec["healthCheckNodePort"]
    node_ports = {p["nodePort"] for p in spec["ports"]}
    assert LO <= hc <= HI and len(node_ports) == 2 and hc not in node_ports
    assert taken_as_node_port(apiserver, hc)
    # kept by kubectl apply (the manifest never names it), by label, and by a PUT that leaves it out
    f.write_text(MANIFEST.replace("selector: {app: web}", "selector: {app: web2}"))
    assert "service/web configured" in kubectl(apiserver, "apply", "-f", str(f)).stdout
    kubectl(apiserver, "label", "svc", "web", "tier=front")
    svc = get(apiserver, "web")
    assert svc["spec"]["healthCheckNodePort"] == hc and svc["spec"]["selector"] == {"app": "web2"}
    del svc["spec"]["healthCheckNodePort"]
    code, put = request(apiserver, "PUT", f"{SVCS}/web", json.dumps(svc).encode())
    assert code == 200 and put["spec"]["healthCheckNodePort"] == hc
    # immutable while needed: a 422 Status naming the field
    other = LO if hc != LO else LO + 1
    code, status = patch(apiserver, "web", {"spec": {"healthCheckNodePort": other}})
    assert code == 422 and status["kind"] == "Status" and status["reason"] == "Invalid"
    assert status["details"]["causes"] == [{"reason": "FieldValueForbidden", "message": "Forbidden: field is immutable",
                                            "field": "spec.healthCheckNodePort"}]
    assert status["message"] == 'Service "web" is invalid: spec.healthCheckNodePort: Forbidden: field is immutable'
    assert get(apiserver, "web")["spec"]["healthCheckNodePort"] == hc
    # released on delete: the port is free for someone else
    kubectl(apiserver, "delete", "svc", "web")
    assert not taken_as_node_port(apiserver, hc)
    assert all(not taken_as_node_port(apiserver, p) for p in node_ports)


def test_specific_value_honoured_and_conflict_refused(apiserver: ApiServerProcess) -> None:
    # nodePorts are allocated first, at random when not given: name them so none can be 31500 or 31501
    code, a = request(apiserver, "POST", SVCS, service("a", healthCheckNodePort=31500,
                                                        ports=[{"port": 80, "nodePort": 31502}]))
    assert code == 201 and a["spec"]["healthCheckNodePort"] == 31500
    assert a["spec"]["ports"][0]["nodePort"] != 31500
    # taken: upstream answers this with an InternalError Status (alloc.go), not 422 as for a nodePort
    code, status = request(apiserver, "POST", SVCS, service("b", healthCheckNodePort=31500,
                                                            ports=[{"port": 80, "nodePort": 31501}]))
    why = "failed to allocate requested HealthCheck NodePort 31500: provided port is already allocated"
    assert code == 500 and status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                      "message": f"Internal error occurred: {why}", "reason": "InternalError",
                                      "details": {"causes": [{"message": why}]}, "code": 500}
    # the nodePort "b" got before the failure went back, and "b" does not exist
    assert not taken_as_node_port(apiserver, 31501)
    assert request(apiserver, "GET", f"{SVCS}/b")[0] == 404
    # out of the range
    code, status = request(apiserver, "POST", SVCS, service("c", healthCheckNodePort=8080))
    assert code == 500 and status["message"] == (
        "Internal error occurred: failed to allocate requested HealthCheck NodePort 8080: provided port is not in "
        f"the valid range. The range of valid ports is {LO}-{HI}")
    # kubectl shows the same
    out = kubectl(apiserver, "create", "-f", "-", check=False, stdin=service("d", healthCheckNodePort=31500).decode())
    assert out.returncode != 0 and "failed to allocate requested HealthCheck NodePort 31500" in out.stderr
    assert get(apiserver, "a")["spec"]["healthCheckNodePort"] == 31500


def test_switch_to_cluster_or_away_from_load_balancer_releases(apiserver: ApiServerProcess) -> None:
    code, a = request(apiserver, "POST", SVCS, service("a"))
    assert code == 201
    hc = a["spec"]["healthCheckNodePort"]
    kubectl(apiserver, "patch", "svc", "a", "-p", '{"spec":{"externalTrafficPolicy":"Cluster"}}')
    spec = get(apiserver, "a")["spec"]
    assert "healthCheckNodePort" not in spec and spec["externalTrafficPolicy"] == "Cluster"
    # released: reusable, here as another Service's healthCheckNodePort
    np = next(p for p in (31990, 31991, 31992) if p not in (hc, a["spec"]["ports"][0]["nodePort"]))
    code, b = request(apiserver, "POST", SVCS, service("b", healthCheckNodePort=hc, ports=[{"port": 80, "nodePort": np}]))
    assert code == 201 and b["spec"]["healthCheckNodePort"] == hc
    # back to Local: a fresh one; then type NodePort wipes and releases it again
    code, a = patch(apiserver, "a", {"spec": {"externalTrafficPolicy": "Local"}})
    hc2 = a["spec"]["healthCheckNodePort"]
    assert code == 200 and LO <= hc2 <= HI and hc2 != hc and taken_as_node_port(apiserver, hc2)
    code, a = patch(apiserver, "a", {"spec": {"type": "NodePort"}})
    assert code == 200 and "healthCheckNodePort" not in a["spec"] and not taken_as_node_port(apiserver, hc2)
    # changing it in the same update that makes it unneeded is refused, as upstream's strategy does
    code, status = patch(apiserver, "b", {"spec": {"type": "ClusterIP", "healthCheckNodePort": hc2}})
    assert code == 422 and status["details"]["causes"][0]["field"] == "spec.healthCheckNodePort"
    assert get(apiserver, "b")["spec"]["healthCheckNodePort"] == hc
    code, b = patch(apiserver, "b", {"spec": {"type": "ClusterIP"}})
    assert code == 200 and "healthCheckNodePort" not in b["spec"] and not taken_as_node_port(apiserver, hc)


def test_forbidden_on_a_service_that_does_not_need_it(apiserver: ApiServerProcess) -> None:
    for name, body in (("cip", service("cip", "ClusterIP", None, healthCheckNodePort=31000)),
                       ("lbc", service("lbc", policy="Cluster", healthCheckNodePort=31000)),
                       ("npl", service("npl", "NodePort", healthCheckNodePort=31000))):
        code, status = request(apiserver, "POST", SVCS, body)
        assert code == 422 and status["kind"] == "Status" and status["reason"] == "Invalid", (name, status)
        assert status["details"]["causes"] == [{
            "reason": "FieldValueInvalid", "field": "spec.healthCheckNodePort",
            "message": "Invalid value: 31000: may only be set when `type` is 'LoadBalancer' and "
                       "`externalTrafficPolicy` is 'Local'"}]
    assert not taken_as_node_port(apiserver, 31000)
    out = kubectl(apiserver, "create", "-f", "-", check=False,
                  stdin=service("cip", "ClusterIP", None, healthCheckNodePort=31000).decode())
    assert out.returncode != 0 and "spec.healthCheckNodePort: Invalid value: 31000" in out.stderr


def test_survives_a_restart(apiserver: ApiServerProcess) -> None:
    code, a = request(apiserver, "POST", SVCS, service("a"))
    assert code == 201
    hc = a["spec"]["healthCheckNodePort"]
    apiserver.restart()
    # rebuilt from the stored Services: not handed out again, neither as a nodePort nor as a health check port
    assert taken_as_node_port(apiserver, hc)
    code, status = request(apiserver, "POST", SVCS, service("b", healthCheckNodePort=hc))
    assert code == 500 and "provided port is already allocated" in status["message"]
    kubectl(apiserver, "label", "svc", "a", "after=restart")
    assert get(apiserver, "a")["spec"]["healthCheckNodePort"] == hc
    kubectl(apiserver, "delete", "svc", "a")
    assert not taken_as_node_port(apiserver, hc)
