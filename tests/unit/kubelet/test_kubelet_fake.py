"""The kubelet's pod lifecycle over FakeClient and the fake CRI: start, restart, back-off,
restart policies, init containers, env, deletion, adoption after a restart, orphans, a new image."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import pytest

from nodeagent.kubelet.model import ContainerState
from nodeagent.machinery.kinds import CONFIGMAPS, EVENTS, PODS, SECRETS
from tests.helpers.kubelet_env import Harness, make_harness, make_pod, wait_for, with_image

TOOLBOX_1, TOOLBOX_2 = "nodeagent.local/toolbox:1", "nodeagent.local/toolbox:2"


def _isdir(p: str) -> bool:
    return os.path.isdir(p)


def _islink(p: str) -> bool:
    return os.path.islink(p)


def _exists(p: str) -> bool:
    return os.path.exists(p)


def _read(p: str) -> str:
    with open(p) as f:
        return f.read()


@pytest.fixture
async def h(tmp_path: object) -> AsyncIterator[Harness]:
    harness = make_harness(str(tmp_path))
    await harness.kubelet.start()
    try:
        yield harness
    finally:
        await harness.kubelet.stop()


async def test_pod_runs_and_reports_status(h: Harness) -> None:
    await h.create(make_pod("web"))
    await wait_for(lambda: h.condition("web", "Ready") == "True", what="web Ready")
    st = h.status("web")
    assert st["phase"] == "Running"
    assert st["podIP"].startswith("10.244.0.") and st["podIPs"] == [{"ip": st["podIP"]}]
    assert st["hostIP"] == "192.168.56.10" and st["startTime"]
    cs = h.cstatus("web")
    assert "running" in cs["state"] and cs["ready"] and cs["started"] and cs["restartCount"] == 0
    assert cs["containerID"].startswith("fake://")
    assert {c["type"] for c in st["conditions"]} == {"PodScheduled", "Initialized", "ContainersReady", "Ready"}
    await h.kubelet.recorder.flush()
    reasons = h.event_reasons("web")
    assert {"Pulling", "Pulled", "Created", "Started"} <= set(reasons)
    # metrics: the start was observed, one pod and one running container counted
    from prometheus_client import generate_latest
    await wait_for(lambda: h.kubelet.pleg.cached(h.pod("web")["metadata"]["uid"]), what="pleg cache")  # type: ignore[index]
    h.kubelet._count_running()
    text = generate_latest(h.kubelet.metrics.registry).decode()
    assert "kubelet_pod_start_duration_seconds_count 1.0" in text
    assert "kubelet_running_pods 1.0" in text
    assert 'kubelet_running_containers{container_state="running"} 1.0' in text
    assert 'kubelet_running_containers{container_state="exited"} 0.0' in text
    # one sandbox with DNS from dnsPolicy ClusterFirst
    (opts,) = h.runtime.sandbox_opts.values()
    assert opts.dns_servers == ["10.96.0.10"] and opts.dns_options == ["ndots:5"]
    assert opts.dns_searches[:3] == ["default.svc.cluster.local", "svc.cluster.local", "cluster.local"]


async def test_crashing_container_restarts_with_backoff(h: Harness) -> None:
    await h.create(make_pod("crash"))
    await wait_for(lambda: h.runtime.running(h.pod("crash")["metadata"]["uid"], "c"), what="first start")  # type: ignore[index]
    uid = h.pod("crash")["metadata"]["uid"]  # type: ignore[index]
    first = h.runtime.running(uid, "c")
    assert first is not None
    h.runtime.exit(first.id, 1)
    # first restart is immediate (no back-off entry yet)
    second = await wait_for(lambda: (c := h.runtime.running(uid, "c")) and c.attempt == 1 and c, what="restart 1")
    await wait_for(lambda: h.cstatus("crash").get("restartCount") == 1, what="restartCount 1")
    h.runtime.exit(second.id, 2)
    await wait_for(lambda: h.cstatus("crash").get("state", {}).get("waiting", {}).get("reason") == "CrashLoopBackOff",
                   what="CrashLoopBackOff")
    cs = h.cstatus("crash")
    assert cs["lastState"]["terminated"]["exitCode"] == 2
    assert "back-off 10s" in cs["state"]["waiting"]["message"]
    assert h.runtime.running(uid, "c") is None
    h.clock.advance(11)
    third = await wait_for(lambda: h.runtime.running(uid, "c"), what="restart after back-off")
    assert third.attempt == 2
    await wait_for(lambda: h.cstatus("crash").get("restartCount") == 2, what="restartCount 2")
    # the back-off doubled for the next crash
    assert h.kubelet.backoff.get(f"{uid}/c") == 20
    await h.kubelet.recorder.flush()
    assert "BackOff" in h.event_reasons("crash")
    # only the latest dead container is kept (for logs --previous)
    assert len([c for c in h.runtime.containers.values() if c.pod_uid == uid]) == 2


async def test_restart_policy_never_fails_pod_and_stops_sandbox(h: Harness) -> None:
    await h.create(make_pod("never", restartPolicy="Never"))
    await wait_for(lambda: h.pod("never") and h.runtime.running(h.pod("never")["metadata"]["uid"], "c"))  # type: ignore[index]
    uid = h.pod("never")["metadata"]["uid"]  # type: ignore[index]
    h.runtime.exit(h.runtime.running(uid, "c").id, 3)  # type: ignore[union-attr]
    await wait_for(lambda: h.status("never").get("phase") == "Failed", what="Failed")
    assert h.cstatus("never")["state"]["terminated"]["exitCode"] == 3
    await wait_for(lambda: all(s.state.value == "SANDBOX_NOTREADY" for s in h.runtime.sandboxes.values()),
                   what="sandbox stopped")
    assert len(h.runtime.calls_of("CreateContainer")) == 1


async def test_restart_policy_onfailure(h: Harness) -> None:
    await h.create(make_pod("onf", restartPolicy="OnFailure"))
    await wait_for(lambda: h.pod("onf") and h.runtime.running(h.pod("onf")["metadata"]["uid"], "c"))  # type: ignore[index]
    uid = h.pod("onf")["metadata"]["uid"]  # type: ignore[index]
    h.runtime.exit(h.runtime.running(uid, "c").id, 1)  # type: ignore[union-attr]
    again = await wait_for(lambda: (c := h.runtime.running(uid, "c")) and c.attempt == 1 and c, what="restart")
    h.runtime.exit(again.id, 0)
    await wait_for(lambda: h.status("onf").get("phase") == "Succeeded", what="Succeeded")
    assert h.cstatus("onf")["restartCount"] == 1
    assert h.condition("onf", "Ready") == "False"


async def test_init_containers_then_app(h: Harness) -> None:
    pod = make_pod("init", initContainers=[{"name": "i1", "image": "img"}, {"name": "i2", "image": "img"}])
    await h.create(pod)
    await wait_for(lambda: h.pod("init") and h.runtime.running(h.pod("init")["metadata"]["uid"], "i1"))  # type: ignore[index]
    uid = h.pod("init")["metadata"]["uid"]  # type: ignore[index]
    await wait_for(lambda: h.status("init").get("initContainerStatuses"), what="init status")
    assert h.status("init")["phase"] == "Pending" and h.condition("init", "Initialized") == "False"
    assert h.runtime.running(uid, "c") is None and h.runtime.running(uid, "i2") is None
    h.runtime.exit(h.runtime.running(uid, "i1").id, 0)  # type: ignore[union-attr]
    await wait_for(lambda: h.runtime.running(uid, "i2"), what="i2 started")
    h.runtime.exit(h.runtime.running(uid, "i2").id, 0)  # type: ignore[union-attr]
    await wait_for(lambda: h.condition("init", "Ready") == "True", what="Ready")
    assert h.condition("init", "Initialized") == "True"
    names = [h.runtime.containers[c].name for c in h.runtime.calls_of("StartContainer")]
    assert names == ["i1", "i2", "c"]


async def test_env_from_field_configmap_and_secret(h: Harness) -> None:
    await h.client.create(CONFIGMAPS, {"metadata": {"name": "cfg", "namespace": "default"}, "data": {"k": "v1"}})
    await h.client.create(SECRETS, {"metadata": {"name": "sec", "namespace": "default"},
                                    "data": {"pw": base64.b64encode(b"hunter2").decode()}})
    c = {"name": "c", "image": "img", "env": [
        {"name": "A", "value": "plain"},
        {"name": "B", "value": "$(A)-x"},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
        {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
    ]}
    await h.create(make_pod("envp", [c]))
    await wait_for(lambda: h.runtime.container_opts, what="container created")
    (opts,) = h.runtime.container_opts.values()
    env = dict(opts.env)
    assert env["A"] == "plain" and env["B"] == "plain-x"
    assert env["NAME"] == "envp" and env["NS"] == "default" and env["NODE"] == "node-a"
    assert env["IP"].startswith("10.244.0.") and env["HOST"] == "192.168.56.10"
    assert env["CM"] == "v1" and env["PW"] == "hunter2"


async def test_service_link_variables(h: Harness) -> None:
    from nodeagent.machinery.kinds import NAMESPACES, SERVICES
    await h.client.create(NAMESPACES, {"metadata": {"name": "other"}})
    h.client.seed(SERVICES, {"metadata": {"name": "kubernetes", "namespace": "default"},  # the apiserver's own
                             "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}})
    await h.client.create(SERVICES, {"metadata": {"name": "my-db", "namespace": "default"},
                                     "spec": {"clusterIP": "10.96.5.5", "ports": [{"port": 5432, "protocol": "TCP"}]}})
    await h.client.create(SERVICES, {"metadata": {"name": "elsewhere", "namespace": "other"},
                                     "spec": {"clusterIP": "10.96.7.7", "ports": [{"port": 80}]}})
    await wait_for(lambda: len(h.kubelet.services.list()) == 3, what="services seen")
    await h.create(make_pod("links", [{"name": "c", "image": "img", "env": [{"name": "MY_DB_SERVICE_PORT",
                                                                              "value": "override"}]}]))
    await h.create(make_pod("nolinks", enableServiceLinks=False))
    await wait_for(lambda: len(h.runtime.container_opts) == 2, what="containers created")
    by_pod = {h.runtime.containers[c].pod_uid: dict(o.env) for c, o in h.runtime.container_opts.items()}
    links = by_pod[h.pod("links")["metadata"]["uid"]]  # type: ignore[index]
    assert links["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and links["KUBERNETES_SERVICE_PORT"] == "443"
    assert links["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert links["MY_DB_SERVICE_HOST"] == "10.96.5.5" and links["MY_DB_PORT"] == "tcp://10.96.5.5:5432"
    assert links["MY_DB_PORT_5432_TCP_ADDR"] == "10.96.5.5"
    assert links["MY_DB_SERVICE_PORT"] == "override"  # explicit env wins
    assert "ELSEWHERE_SERVICE_HOST" not in links
    nolinks = by_pod[h.pod("nolinks")["metadata"]["uid"]]  # type: ignore[index]
    assert nolinks["KUBERNETES_SERVICE_HOST"] == "10.96.0.1" and "MY_DB_SERVICE_HOST" not in nolinks


async def test_missing_configmap_key_is_a_config_error(h: Harness) -> None:
    c = {"name": "c", "image": "img", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}]}
    await h.create(make_pod("cfgerr", [c]))
    await wait_for(lambda: h.cstatus("cfgerr").get("state", {}).get("waiting", {}).get("reason")
                   == "CreateContainerConfigError", what="CreateContainerConfigError")
    assert h.status("cfgerr")["phase"] == "Pending"
    assert not h.runtime.calls_of("CreateContainer")


async def test_volumes_are_mounted(h: Harness) -> None:
    await h.client.create(CONFIGMAPS, {"metadata": {"name": "files", "namespace": "default"},
                                       "data": {"a.txt": "hello"}})
    c = {"name": "c", "image": "img", "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                                                       {"name": "conf", "mountPath": "/etc/conf", "readOnly": True}]}
    await h.create(make_pod("vol", [c], volumes=[{"name": "scratch", "emptyDir": {}},
                                                 {"name": "conf", "configMap": {"name": "files"}}]))
    await wait_for(lambda: h.runtime.container_opts, what="container created")
    (opts,) = h.runtime.container_opts.values()
    mounts = {m.container_path: m for m in opts.mounts}
    assert _isdir(mounts["/scratch"].host_path) and "kubernetes.io~empty-dir" in mounts["/scratch"].host_path
    conf = mounts["/etc/conf"]
    assert conf.readonly
    assert _read(os.path.join(conf.host_path, "a.txt")) == "hello"
    assert _islink(os.path.join(conf.host_path, "..data"))


async def test_graceful_delete_stops_with_grace_and_confirms(h: Harness) -> None:
    await h.create(make_pod("del", terminationGracePeriodSeconds=7))
    await wait_for(lambda: h.condition("del", "Ready") == "True", what="Ready")
    uid = h.pod("del")["metadata"]["uid"]  # type: ignore[index]
    cid = h.runtime.running(uid, "c").id  # type: ignore[union-attr]
    await h.client.delete(PODS, "del", namespace="default")
    await wait_for(lambda: h.pod("del") is None, what="pod removed from the API")
    assert f"{cid}:7" in h.runtime.calls_of("StopContainer")
    assert not h.runtime.sandboxes and not h.runtime.containers
    assert not _exists(os.path.join(h.tmp, "kubelet", "pods", uid))
    deletes = [a for a in h.client.actions if a.verb == "delete" and a.kind == "pods"]
    assert deletes[-1].body["gracePeriodSeconds"] == 0
    # the final status, written before the delete, is terminal (upstream since 1.27)
    final = [a for a in h.client.actions if a.verb == "patch" and a.subresource == "status" and a.name == "del"][-1]
    assert final.body["status"]["phase"] == "Failed"
    assert final.body["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143


async def test_host_network_pod_uses_host_ip(h: Harness) -> None:
    await h.create(make_pod("hn", hostNetwork=True))
    await wait_for(lambda: h.condition("hn", "Ready") == "True", what="Ready")
    assert h.status("hn")["podIP"] == "192.168.56.10"
    (opts,) = h.runtime.sandbox_opts.values()
    assert opts.dns_servers == []  # ClusterFirst on hostNetwork falls back to Default (the node's)


async def test_restart_adopts_running_pods_and_removes_orphans(tmp_path: object) -> None:
    first = make_harness(str(tmp_path))
    await first.kubelet.start()
    try:
        await first.create(make_pod("keep"))
        await first.create(make_pod("gone"))
        await wait_for(lambda: first.condition("keep", "Ready") == "True" and first.condition("gone", "Ready") == "True")
        gone_uid = first.pod("gone")["metadata"]["uid"]  # type: ignore[index]
    finally:
        await first.kubelet.stop()  # as if killed: nothing is torn down
    # While the kubelet is down, "gone" is removed from the API outright.
    await first.client.delete(PODS, "gone", "default", grace_period_seconds=0)
    calls_before = len(first.runtime.calls_of("RunPodSandbox")), len(first.runtime.calls_of("CreateContainer"))

    from nodeagent.kubelet.kubelet import Kubelet
    second = Kubelet(first.client, first.runtime, first.kubelet.config, clock=first.clock)
    await second.start()
    try:
        await wait_for(lambda: not any(s.pod_uid == gone_uid for s in first.runtime.sandboxes.values()),
                       what="orphan sandbox removed")
        keep_uid = first.pod("keep")["metadata"]["uid"]  # type: ignore[index]
        await wait_for(lambda: keep_uid in second.last_status, what="status recomputed")
        assert (len(first.runtime.calls_of("RunPodSandbox")), len(first.runtime.calls_of("CreateContainer"))) \
            == calls_before
        assert [c.state for c in first.runtime.containers.values() if c.pod_uid == keep_uid] == [ContainerState.RUNNING]
        assert first.condition("keep", "Ready") == "True" and first.cstatus("keep")["restartCount"] == 0
    finally:
        await second.stop()


async def test_failed_sandbox_is_reported_and_retried(h: Harness) -> None:
    h.runtime.fail_next["RunPodSandbox"] = RuntimeError("plugin type=\"bridge\" failed (add): no IP addresses available")
    await h.create(make_pod("sbfail"))
    await wait_for(lambda: h.condition("sbfail", "Ready") == "True", what="Ready after the retry")
    assert len(h.runtime.calls_of("RunPodSandbox")) == 2
    await h.kubelet.recorder.flush()
    from nodeagent.machinery.kinds import EVENTS
    ev = next(e for e in h.client.objects(EVENTS) if e["reason"] == "FailedCreatePodSandBox")
    assert ev["type"] == "Warning" and "no IP addresses available" in ev["message"]
    assert ev["involvedObject"]["name"] == "sbfail" and ev["source"]["component"] == "kubelet"


async def test_dead_sandbox_is_recreated_and_containers_restarted(h: Harness) -> None:
    await h.create(make_pod("sbdead"))
    await wait_for(lambda: h.condition("sbdead", "Ready") == "True", what="Ready")
    uid = h.pod("sbdead")["metadata"]["uid"]  # type: ignore[index]
    (old,) = [s for s in h.runtime.sandboxes.values() if s.pod_uid == uid]
    await h.runtime.stop_sandbox(old.id)  # e.g. the pause process died
    new = await wait_for(lambda: next((s for s in h.runtime.sandboxes.values()
                                       if s.pod_uid == uid and s.attempt == 1 and s.state.value == "SANDBOX_READY"), None),
                         what="a new sandbox")
    await wait_for(lambda: (c := h.runtime.running(uid, "c")) and c.sandbox_id == new.id, what="container in the new sandbox")
    await wait_for(lambda: h.cstatus("sbdead").get("restartCount") == 1 and h.status("sbdead")["podIP"] == new.ip,
                   what="status with the new IP")


async def test_big_logs_are_rotated_and_reopened(tmp_path: object) -> None:
    h = make_harness(str(tmp_path))
    h.kubelet.config.container_log_max_size = 100
    h.kubelet.config.log_rotation_interval = 0.05
    await h.kubelet.start()
    try:
        await h.create(make_pod("chatty"))
        await wait_for(lambda: h.condition("chatty", "Ready") == "True", what="Ready")
        pod = h.pod("chatty")
        assert pod is not None
        md = pod["metadata"]
        live = os.path.join(h.tmp, "logs", "pods", f"default_chatty_{md['uid']}", "c", "0.log")
        os.makedirs(os.path.dirname(live), exist_ok=True)
        with open(live, "wb") as f:  # noqa: ASYNC230 - test set-up
            f.write(b"2026-01-01T00:00:00Z stdout F " + b"x" * 200 + b"\n")
        cid = h.runtime.running(md["uid"], "c").id  # type: ignore[union-attr]
        await wait_for(lambda: cid in h.runtime.calls_of("ReopenContainerLog"), what="ReopenContainerLog")
        assert not _exists(live)
        assert any(n.startswith("0.log.") for n in os.listdir(os.path.dirname(live)))
    finally:
        await h.kubelet.stop()


async def test_set_image_restarts_the_container_with_the_new_image(h: Harness) -> None:
    """`kubectl set image pod/x c=TOOLBOX_2`: the container is killed ("definition changed"), started
    again from TOOLBOX_2 at once (no back-off), its restartCount grows and the status shows TOOLBOX_2."""
    await h.create(make_pod("setimg", [{"name": "c", "image": TOOLBOX_1}, {"name": "side", "image": TOOLBOX_1}],
                            restartPolicy="Never"))
    await wait_for(lambda: h.condition("setimg", "Ready") == "True", what="Ready")
    pod = h.pod("setimg")
    assert pod is not None
    uid = pod["metadata"]["uid"]
    first = h.runtime.running(uid, "c")
    side = h.runtime.running(uid, "side")
    assert first is not None and side is not None
    # an earlier crash left a back-off entry: a new definition does not wait for it
    h.kubelet.backoff.next(f"{uid}/c", h.clock.now())

    await h.client.update(PODS, with_image(pod, "c", TOOLBOX_2), namespace="default")
    new = await wait_for(lambda: (c := h.runtime.running(uid, "c")) and c.image == TOOLBOX_2 and c, what="c restarted")
    assert new.attempt == 1 and h.runtime.containers[first.id].state == ContainerState.EXITED
    await wait_for(lambda: h.cstatus("setimg").get("restartCount") == 1 and h.cstatus("setimg")["image"] == TOOLBOX_2
                   and "running" in h.cstatus("setimg")["state"], what="status with the new image")
    assert h.cstatus("setimg", "side")["restartCount"] == 0 and h.runtime.running(uid, "side") == side
    await h.kubelet.recorder.flush()
    killing = [e["message"] for e in h.client.objects(EVENTS)
               if e["reason"] == "Killing" and e["involvedObject"]["name"] == "setimg"]
    assert killing == ["Container c definition changed, will be restarted"]
