"""Pure helpers: pod status and phase, DNS config from dnsPolicy, CRI log parsing, back-off."""

from __future__ import annotations

from typing import Any

from nodeagent.clock import FakeClock
from nodeagent.kubelet.backoff import Backoff
from nodeagent.kubelet.dns import DNSConfig, parse_resolv_conf, pod_dns_config
from nodeagent.kubelet.logs import _tail_start, parse_cri_line, render
from nodeagent.kubelet.model import Container, ContainerState, PodRuntimeStatus, Sandbox, SandboxState
from nodeagent.kubelet.status import StatusInputs, generate_pod_status, pod_phase, qos_class

UID = "u"


def _pod(policy: str = "Always", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns1", "uid": UID},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": "img"}], **spec}}


def _rs(*containers: Container, ready: bool = True) -> PodRuntimeStatus:
    sb = Sandbox("sb", UID, "p", "ns1", 0, SandboxState.READY if ready else SandboxState.NOTREADY, 1.0, ip="10.1.0.2")
    return PodRuntimeStatus(UID, sandboxes=[sb], containers=list(containers))


def _c(state: ContainerState, attempt: int = 0, code: int = 0) -> Container:
    return Container(f"id{attempt}", UID, "sb", "c", attempt, state, 1.0 + attempt, image_ref="sha256:x",
                     started_at=2.0, finished_at=3.0 if state == ContainerState.EXITED else 0.0, exit_code=code)


def test_running_pod_status_shape() -> None:
    st = generate_pod_status(_pod(), _rs(_c(ContainerState.RUNNING)), StatusInputs(host_ip="192.168.56.11", now=10))
    assert st["phase"] == "Running" and st["podIP"] == "10.1.0.2" and st["hostIP"] == "192.168.56.11"
    (cs,) = st["containerStatuses"]
    assert cs["containerID"] == "containerd://id0" and cs["imageID"] == "sha256:x" and cs["ready"]
    assert cs["state"] == {"running": {"startedAt": "1970-01-01T00:00:02Z"}}
    conds = {c["type"]: c["status"] for c in st["conditions"]}
    assert conds == {"PodScheduled": "True", "Initialized": "True", "ContainersReady": "True", "Ready": "True"}
    assert st["qosClass"] == "BestEffort"


def test_readiness_result_and_transition_time_kept() -> None:
    pod = _pod()
    pod["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}}
    rs = _rs(_c(ContainerState.RUNNING))
    st1 = generate_pod_status(pod, rs, StatusInputs(host_ip="h", ready={"c": False}, now=10))
    ready1 = next(c for c in st1["conditions"] if c["type"] == "Ready")
    assert ready1["status"] == "False" and ready1["reason"] == "ContainersNotReady"
    pod["status"] = st1
    st2 = generate_pod_status(pod, rs, StatusInputs(host_ip="h", ready={"c": False}, now=20))
    assert next(c for c in st2["conditions"] if c["type"] == "Ready")["lastTransitionTime"] == ready1["lastTransitionTime"]
    st3 = generate_pod_status(pod, rs, StatusInputs(host_ip="h", ready={"c": True}, now=30))
    assert next(c for c in st3["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_crashloop_shows_waiting_with_last_state() -> None:
    rs = _rs(_c(ContainerState.EXITED, attempt=0, code=1), _c(ContainerState.EXITED, attempt=1, code=2))
    st = generate_pod_status(_pod(), rs, StatusInputs(host_ip="h", waiting={"c": ("CrashLoopBackOff", "back-off 10s")}))
    (cs,) = st["containerStatuses"]
    assert cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert cs["lastState"]["terminated"]["exitCode"] == 2 and cs["restartCount"] == 1
    assert st["phase"] == "Running"  # Always: a crashing container keeps the pod Running (upstream getPhase)


def test_phases_by_restart_policy() -> None:
    done_ok = _rs(_c(ContainerState.EXITED, code=0), ready=False)
    done_bad = _rs(_c(ContainerState.EXITED, code=5), ready=False)
    h = StatusInputs(host_ip="h")
    assert generate_pod_status(_pod("Never"), done_ok, h)["phase"] == "Succeeded"
    assert generate_pod_status(_pod("Never"), done_bad, h)["phase"] == "Failed"
    assert generate_pod_status(_pod("OnFailure"), done_ok, h)["phase"] == "Succeeded"
    assert generate_pod_status(_pod("OnFailure"), done_bad, h)["phase"] == "Running"
    assert generate_pod_status(_pod("Always"), done_ok, h)["phase"] == "Running"
    pending = generate_pod_status(_pod(), PodRuntimeStatus(UID), h)
    assert pending["phase"] == "Pending"
    assert pending["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
    # a terminal phase never changes again
    p = _pod("Never")
    p["status"] = {"phase": "Failed"}
    assert generate_pod_status(p, _rs(_c(ContainerState.RUNNING)), h)["phase"] == "Failed"


def test_failed_init_container_under_never_fails_pod() -> None:
    init = [{"name": "c", "image": "img"}]
    p = _pod("Never", initContainers=init, containers=[{"name": "app", "image": "img"}])
    st = generate_pod_status(p, _rs(_c(ContainerState.EXITED, code=1)), StatusInputs(host_ip="h"))
    assert st["phase"] == "Failed"
    assert pod_phase(p, [{"state": {"running": {}}}], [{"state": {"waiting": {}}}]) == "Pending"


def test_qos_classes() -> None:
    g = {"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}
    b = {"spec": {"containers": [{"resources": {"requests": {"cpu": "100m"}}}]}}
    assert qos_class(g) == "Guaranteed" and qos_class(b) == "Burstable" and qos_class(_pod()) == "BestEffort"


def test_dns_policies() -> None:
    host = parse_resolv_conf("nameserver 1.1.1.1\nsearch corp.example\noptions edns0\n")
    cf = pod_dns_config(_pod(), ["10.96.0.10"], "cluster.local", host)
    assert cf.servers == ["10.96.0.10"]
    assert cf.searches == ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
    assert cf.options == ["ndots:5"]
    default = pod_dns_config(_pod(dnsPolicy="Default"), ["10.96.0.10"], "cluster.local", host)
    assert default == DNSConfig(["1.1.1.1"], ["corp.example"], ["edns0"])
    hn = pod_dns_config(_pod(hostNetwork=True), ["10.96.0.10"], "cluster.local", host)
    assert hn.servers == ["1.1.1.1"]
    hn_cf = pod_dns_config(_pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet"), ["10.96.0.10"],
                           "cluster.local", host)
    assert hn_cf.servers == ["10.96.0.10"]
    none = pod_dns_config(_pod(dnsPolicy="None", dnsConfig={"nameservers": ["9.9.9.9"], "searches": ["a.b"],
                                                            "options": [{"name": "ndots", "value": "2"}]}),
                          ["10.96.0.10"], "cluster.local", host)
    assert none == DNSConfig(["9.9.9.9"], ["a.b"], ["ndots:2"])
    merged = pod_dns_config(_pod(dnsConfig={"options": [{"name": "ndots", "value": "1"}, {"name": "rotate"}]}),
                            ["10.96.0.10"], "cluster.local", host)
    assert merged.options == ["ndots:1", "rotate"]


def test_cri_log_lines() -> None:
    full = parse_cri_line(b"2026-01-01T00:00:00.123456789Z stdout F hello world")
    assert full is not None and full.stream == "stdout" and not full.partial and full.content == b"hello world"
    part = parse_cri_line(b"2026-01-01T00:00:00.1Z stderr P abc")
    assert part is not None and part.partial
    assert render(part, False) == b"abc" and render(full, False) == b"hello world\n"
    assert render(full, True) == b"2026-01-01T00:00:00.123456789Z hello world\n"
    assert parse_cri_line(b"garbage") is None
    data = (b"t stdout F one\nt stdout P tw\nt stdout F o\nt stdout F three\n")
    assert data[_tail_start(data, 2):] == b"t stdout P tw\nt stdout F o\nt stdout F three\n"
    assert data[_tail_start(data, 10):] == data
    assert data[_tail_start(data, 0):] == b""


def test_backoff_doubles_to_cap_and_resets() -> None:
    clock = FakeClock()
    b = Backoff(clock, initial=10, maximum=300)
    assert b.remaining("k", clock.now()) == 0
    delays = [b.next("k", clock.now()) for _ in range(7)]
    assert delays == [10, 20, 40, 80, 160, 300, 300]
    t = clock.now()
    clock.advance(100)
    assert b.remaining("k", t) == 200
    clock.advance(1000)
    assert b.next("k", clock.now()) == 10  # untouched for more than twice the cap: start over
