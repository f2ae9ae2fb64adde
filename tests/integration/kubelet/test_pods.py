"""The kubelet on real containerd with the real apiserver: pods start, restart, probe, share
volumes, log, exec and terminate as upstream's do."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from typing import Any

import pytest

from nodeagent.client import Client, NotFound
from nodeagent.machinery.kinds import NODES, PODS
from tests.helpers.kubelet_node import KubeletNode, wait_until

pytestmark = pytest.mark.root  # containerd, network namespaces

TOOLBOX = "nodeagent.local/toolbox:1"


def pod(kn: KubeletNode, name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"{name}-{secrets.token_hex(3)}", "namespace": "default"},
            "spec": {"nodeName": kn.name, "terminationGracePeriodSeconds": 2, "containers": containers, **spec}}


def sleeper(name: str = "c", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": TOOLBOX, "command": ["sleep", "3600"], **extra}


def cond(p: dict[str, Any], ctype: str) -> str:
    for c in (p.get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return str(c["status"])
    return ""


def cstatus(p: dict[str, Any], name: str = "c") -> dict[str, Any]:
    for s in (p.get("status") or {}).get("containerStatuses") or []:
        if s["name"] == name:
            return dict(s)
    return {}


async def get(client: Client, name: str) -> dict[str, Any]:
    return await client.get(PODS, name, namespace="default")


async def test_node_registers_ready_with_lease_and_capacity(kn: KubeletNode, client: Client) -> None:
    async def ready() -> bool:
        n = await client.get(NODES, kn.name)
        return any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    await wait_until(ready, what="node Ready", kn=kn)
    node = await client.get(NODES, kn.name)
    st = node["status"]
    assert st["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    assert int(st["capacity"]["cpu"]) >= 1 and st["capacity"]["pods"] == "110"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in st["addresses"]
    assert st["daemonEndpoints"]["kubeletEndpoint"]["Port"] == kn.port
    types = {c["type"] for c in st["conditions"]}
    assert types == {"Ready", "MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable"}
    assert node["spec"]["podCIDR"] == "10.199.0.0/24"
    from nodeagent.machinery.kinds import LEASES
    lease = await wait_until(lambda: client.get(LEASES, kn.name, namespace="kube-node-lease"), what="lease", kn=kn)
    assert lease["spec"]["holderIdentity"] == kn.name and lease["spec"]["leaseDurationSeconds"] == 40
    first = lease["spec"]["renewTime"]
    await wait_until(lambda: _renewed(client, kn.name, first), what="lease renewed", kn=kn)


async def _renewed(client: Client, name: str, first: str) -> bool:
    from nodeagent.machinery.kinds import LEASES
    lease = await client.get(LEASES, name, namespace="kube-node-lease")
    return bool(lease["spec"]["renewTime"] != first)


async def test_pod_goes_pending_to_running_with_ip(kn: KubeletNode, client: Client) -> None:
    p = await client.create(PODS, pod(kn, "run", [sleeper()]))
    name = p["metadata"]["name"]
    running = await wait_until(lambda: _ready(client, name), what="pod Ready", kn=kn)
    st = running["status"]
    assert st["phase"] == "Running"
    assert st["podIP"].startswith("10.199.0.") and st["podIPs"] == [{"ip": st["podIP"]}]
    cs = cstatus(running)
    assert cs["containerID"].startswith("containerd://") and cs["imageID"] and cs["ready"]
    assert cs["image"] == TOOLBOX and "running" in cs["state"]
    # the pod's environment and DNS, as the kubelet configured them
    code, out = await _exec(kn, name, "c", ["sh", "-c", "echo $KUBERNETES_SERVICE_HOST; cat /etc/resolv.conf; hostname"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("10.96.")
    assert "nameserver 10.96.0.10" in lines and "options ndots:5" in lines
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in " ".join(lines)
    assert lines[-1] == name
    await client.delete(PODS, name, namespace="default")


async def _ready(client: Client, name: str) -> dict[str, Any] | None:
    p = await get(client, name)
    return p if cond(p, "Ready") == "True" else None


async def _events(client: Client, pod_name: str) -> list[str]:
    from nodeagent.machinery.kinds import EVENTS
    evs = await client.list(EVENTS, namespace="default")
    return [e["reason"] for e in evs["items"] if e["involvedObject"]["name"] == pod_name]


async def test_failing_liveness_restarts_and_bumps_restart_count(kn: KubeletNode, client: Client) -> None:
    c = {"name": "c", "image": TOOLBOX, "command": ["sh", "-c", "echo run-$(date +%s%N); sleep 3600"],
         "livenessProbe": {"exec": {"command": ["test", "-e", "/tmp/never"]}, "periodSeconds": 1,
                           "failureThreshold": 2}}
    p = await client.create(PODS, pod(kn, "live", [c]))
    name = p["metadata"]["name"]

    async def restarted() -> bool:
        return bool(cstatus(await get(client, name)).get("restartCount", 0) >= 1)
    await wait_until(restarted, what="restartCount >= 1", kn=kn)
    reasons = await _events(client, name)
    assert "Unhealthy" in reasons and "Killing" in reasons
    cs = cstatus(await get(client, name))
    assert cs["lastState"]["terminated"]["exitCode"] in (137, 143)
    # the first container's output survives its restart: logs --previous
    previous = kn.kubectl("logs", name, "--previous").stdout
    assert previous.startswith("run-")
    await wait_until(lambda: kn.kubectl("logs", name, check=False).stdout.startswith("run-"),
                     what="the restarted container's log", kn=kn)
    assert kn.kubectl("logs", name).stdout != previous
    await client.delete(PODS, name, namespace="default")


async def test_set_image_restarts_that_container_with_the_new_image(kn: KubeletNode, client: Client) -> None:
    """`kubectl set image pod/NAME c=IMG` on a running pod: the kubelet sees the container's hash
    annotation differ from the spec's, kills it ("definition changed") and starts it from IMG."""
    from nodeagent.kubelet.model import ANNOTATION_CONTAINER_HASH, hash_container
    from nodeagent.runtime.cri import RuntimeClient, pb
    from tests.helpers.runtime_node import tag_image

    assert kn.node is not None
    second = "nodeagent.local/toolbox:set-image"
    tag_image(kn.node, TOOLBOX, second)
    p = await client.create(PODS, pod(kn, "setimg", [sleeper(), sleeper("side")]))
    name = p["metadata"]["name"]
    first = cstatus(await wait_until(lambda: _ready(client, name), what="pod Ready", kn=kn))
    side = cstatus(await get(client, name), "side")

    kn.kubectl("set", "image", f"pod/{name}", f"c={second}")

    async def restarted() -> dict[str, Any] | None:
        cur = await get(client, name)
        cs = cstatus(cur)
        done = cs.get("restartCount") == 1 and cs["image"] == second and "running" in cs["state"]
        return cur if done and cond(cur, "Ready") == "True" else None
    cur = await wait_until(restarted, what="c restarted with the new image", kn=kn)
    cs = cstatus(cur)
    assert cs["containerID"] != first["containerID"] and cs["lastState"]["terminated"]["exitCode"] in (137, 143)
    assert cstatus(cur, "side")["containerID"] == side["containerID"] and cstatus(cur, "side")["restartCount"] == 0
    # containerd runs the new container from the new definition
    async with RuntimeClient(kn.node.endpoint) as rt:
        st = await rt.container_status(cs["containerID"].split("://", 1)[1])
    assert st.status.state == pb.CONTAINER_RUNNING and int(st.status.metadata.attempt) == 1
    assert dict(st.status.annotations)[ANNOTATION_CONTAINER_HASH] == hash_container({"name": "c", "image": second})
    from nodeagent.machinery.kinds import EVENTS
    evs = (await client.list(EVENTS, namespace="default"))["items"]
    assert [e["message"] for e in evs if e["involvedObject"]["name"] == name and e["reason"] == "Killing"] \
        == ["Container c definition changed, will be restarted"]
    await client.delete(PODS, name, namespace="default")


async def test_readiness_flips_ready(kn: KubeletNode, client: Client) -> None:
    web = {"name": "web", "image": TOOLBOX, "command": ["/bin/web", "8080"],
           "ports": [{"name": "http", "containerPort": 8080}],
           "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}
    flag = sleeper("flag", readinessProbe={"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1},
                   startupProbe={"tcpSocket": {"port": 8080}, "periodSeconds": 1})
    p = await client.create(PODS, pod(kn, "ready", [web, flag]))
    name = p["metadata"]["name"]

    async def web_ready_flag_not() -> bool:
        q = await get(client, name)
        return bool(cstatus(q, "web").get("ready") and cstatus(q, "flag").get("started")
                    and not cstatus(q, "flag").get("ready"))
    await wait_until(web_ready_flag_not, what="web ready (httpGet in the pod netns), flag started not ready", kn=kn)
    assert cond(await get(client, name), "Ready") == "False"

    await _exec(kn, name, "flag", ["touch", "/tmp/ready"])
    await wait_until(lambda: _ready(client, name), what="pod Ready after touch", kn=kn)
    await _exec(kn, name, "flag", ["rm", "/tmp/ready"])

    async def unready() -> bool:
        return cond(await get(client, name), "Ready") == "False"
    await wait_until(unready, what="pod not Ready after rm", kn=kn)
    assert cstatus(await get(client, name), "flag")["restartCount"] == 0  # readiness never restarts
    await client.delete(PODS, name, namespace="default")


async def _exec(kn: KubeletNode, name: str, container: str, cmd: list[str]) -> tuple[int, str]:
    """One-shot exec through the kubelet's endpoint (CRI ExecSync)."""
    import ssl
    import urllib.parse

    import aiohttp

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    q = urllib.parse.urlencode([("command", c) for c in cmd])
    url = f"https://127.0.0.1:{kn.port}/exec/default/{name}/{container}?{q}"
    async with aiohttp.ClientSession() as s, s.post(
            url, ssl=ctx, headers={"Authorization": f"Bearer {kn.admin_token()}"}) as r:
        body = await r.text()
        assert r.status == 200, body
        return int(r.headers["X-Exit-Code"]), body


async def test_restart_policies_never_and_onfailure(kn: KubeletNode, client: Client) -> None:
    never = await client.create(PODS, pod(kn, "never", [
        {"name": "c", "image": TOOLBOX, "command": ["sh", "-c", "echo boom > /dev/termination-log; exit 3"]},
        {"name": "logs", "image": TOOLBOX, "command": ["sh", "-c", "echo from-the-log; exit 2"],
         "terminationMessagePolicy": "FallbackToLogsOnError"}], restartPolicy="Never"))
    onf = await client.create(PODS, pod(kn, "onf", [{"name": "c", "image": TOOLBOX,
                                                      "command": ["sh", "-c", "exit 0"]}], restartPolicy="OnFailure"))

    async def phase(name: str, want: str) -> bool:
        return bool((await get(client, name)).get("status", {}).get("phase") == want)
    await wait_until(lambda: phase(never["metadata"]["name"], "Failed"), what="Never pod Failed", kn=kn)
    await wait_until(lambda: phase(onf["metadata"]["name"], "Succeeded"), what="OnFailure pod Succeeded", kn=kn)
    n = cstatus(await get(client, never["metadata"]["name"]))
    assert n["state"]["terminated"]["exitCode"] == 3 and n["restartCount"] == 0
    assert n["state"]["terminated"]["message"] == "boom\n"  # the termination-log file
    fallback = cstatus(await get(client, never["metadata"]["name"]), "logs")["state"]["terminated"]
    assert fallback["exitCode"] == 2 and fallback["message"] == "from-the-log\n"
    o = cstatus(await get(client, onf["metadata"]["name"]))
    assert o["state"]["terminated"]["exitCode"] == 0 and o["state"]["terminated"]["reason"] == "Completed"
    for p in (never, onf):
        await client.delete(PODS, p["metadata"]["name"], namespace="default")


async def _logs(kn: KubeletNode, name: str, container: str, query: str = "") -> str:
    import ssl

    import aiohttp

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    url = f"https://127.0.0.1:{kn.port}/containerLogs/default/{name}/{container}?{query}"
    async with aiohttp.ClientSession() as s, s.get(
            url, ssl=ctx, headers={"Authorization": f"Bearer {kn.admin_token()}"}) as r:
        body = await r.text()
        assert r.status == 200, body
        return body


async def test_empty_dir_shared_and_logs_and_exec(kn: KubeletNode, client: Client) -> None:
    writer = {"name": "writer", "image": TOOLBOX, "volumeMounts": [{"name": "data", "mountPath": "/data"}],
              "command": ["sh", "-c", "echo hello-from-writer > /data/x; echo line1; echo line2; echo line3; sleep 3600"]}
    reader = {"name": "reader", "image": TOOLBOX, "volumeMounts": [{"name": "data", "mountPath": "/data"}],
              "command": ["sh", "-c", "while [ ! -f /data/x ]; do sleep 0.1; done; cat /data/x; sleep 3600"]}
    p = await client.create(PODS, pod(kn, "share", [writer, reader], volumes=[{"name": "data", "emptyDir": {}}]))
    name = p["metadata"]["name"]
    await wait_until(lambda: _ready(client, name), what="pod Ready", kn=kn)

    async def reader_saw() -> bool:
        return "hello-from-writer" in await _logs(kn, name, "reader")
    await wait_until(reader_saw, what="reader logs the writer's file", kn=kn)
    await wait_until(lambda: _logs_has(kn, name, "writer", "line3"), what="writer logs", kn=kn)
    assert await _logs(kn, name, "writer", "tailLines=2") == "line2\nline3\n"
    stamped = await _logs(kn, name, "writer", "tailLines=1&timestamps=true")
    assert stamped.endswith(" line3\n") and stamped[:4].isdigit()
    code, out = await _exec(kn, name, "reader", ["cat", "/data/x"])
    assert code == 0 and out == "hello-from-writer\n"
    code, _ = await _exec(kn, name, "reader", ["sh", "-c", "exit 4"])
    assert code == 4
    assert "hello-from-writer" in await _ws_exec(kn, name, "reader", ["cat", "/data/x"])
    # kubectl, through the apiserver's pods/log and pods/exec proxy to this kubelet
    assert kn.kubectl("logs", name, "-c", "writer", "--tail=1").stdout == "line3\n"
    out = kn.kubectl("exec", name, "-c", "reader", "--", "cat", "/data/x").stdout
    assert out == "hello-from-writer\n"
    failed = kn.kubectl("exec", name, "-c", "reader", "--", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    piped = _run(["kubectl", "--kubeconfig", str(kn.api.kubeconfig), "exec", "-i", name, "-c", "reader",
                  "--", "sh", "-c", "tr a-z A-Z"], "stdin works\n")
    assert piped.returncode == 0 and piped.stdout == "STDIN WORKS\n", piped.stderr
    # -it: a terminal on our side (script(1) gives kubectl a pty) and a tty in the container
    kcmd = f"kubectl --kubeconfig {kn.api.kubeconfig} exec -it {name} -c reader -- tty"
    tty = _run(["script", "-qec", kcmd, "/dev/null"], "")
    assert tty.returncode == 0 and "/dev/pts/" in tty.stdout, (tty.stdout, tty.stderr)
    await client.delete(PODS, name, namespace="default")


def _run(argv: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


async def _logs_has(kn: KubeletNode, name: str, container: str, text: str) -> bool:
    return text in await _logs(kn, name, container)


async def _ws_exec(kn: KubeletNode, name: str, container: str, cmd: list[str]) -> str:
    """A streaming exec (WebSocket, v4.channel.k8s.io) through the kubelet to containerd's stream server."""
    import ssl
    import urllib.parse

    import aiohttp

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    q = urllib.parse.urlencode([("command", c) for c in cmd] + [("output", "1"), ("error", "1")])
    url = f"https://127.0.0.1:{kn.port}/exec/default/{name}/{container}?{q}"
    out = b""
    async with aiohttp.ClientSession() as s, s.ws_connect(
            url, ssl=ctx, protocols=["v4.channel.k8s.io"],
            headers={"Authorization": f"Bearer {kn.admin_token()}"}) as ws:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY and msg.data[:1] == b"\x01":
                out += msg.data[1:]
    return out.decode()


async def test_unauthenticated_requests_are_refused(kn: KubeletNode) -> None:
    import ssl

    import aiohttp

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    async with aiohttp.ClientSession() as s:
        async with s.get(f"https://127.0.0.1:{kn.port}/metrics", ssl=ctx) as r:
            assert r.status == 401
        async with s.get(f"https://127.0.0.1:{kn.port}/metrics", ssl=ctx,
                         headers={"Authorization": "Bearer not-a-token"}) as r:
            assert r.status in (401, 403)
        async with s.get(f"https://127.0.0.1:{kn.port}/metrics", ssl=ctx,
                         headers={"Authorization": f"Bearer {kn.admin_token()}"}) as r:
            text = await r.text()
            assert r.status == 200
            for m in ("kubelet_pod_start_duration_seconds", "kubelet_running_pods", "kubelet_running_containers",
                      "kubelet_pleg_relist_duration_seconds", "kubelet_pleg_last_seen_seconds",
                      "kubelet_runtime_operations_duration_seconds"):
                assert m in text, m
        async with s.get(f"https://127.0.0.1:{kn.port}/healthz", ssl=ctx) as r:
            assert r.status == 200 and await r.text() == "ok"


GRACEFUL = ("trap 'echo got-TERM; exit 0' TERM; while true; do sleep 0.2; done")


def _read_logs(kn: KubeletNode, p: dict[str, Any], container: str = "c") -> str:
    md = p["metadata"]
    d = kn.data_dir / "logs" / "pods" / f"default_{md['name']}_{md['uid']}" / container
    return "".join(f.read_text() for f in sorted(d.glob("*.log")))


async def test_graceful_delete_respects_grace_period(kn: KubeletNode, client: Client) -> None:
    """Deletion sends SIGTERM first (a container that handles it logs so and exits), and a
    container that ignores it is killed only once its grace period is over; then the kubelet
    confirms the delete."""
    import asyncio
    import time

    nice = await client.create(PODS, pod(kn, "nice", [{"name": "c", "image": TOOLBOX, "command": ["sh", "-c", GRACEFUL]}],
                                         terminationGracePeriodSeconds=30))
    stubborn = await client.create(PODS, pod(kn, "stubborn", [sleeper()], terminationGracePeriodSeconds=4))
    names = [nice["metadata"]["name"], stubborn["metadata"]["name"]]
    for n in names:
        await wait_until(lambda n=n: _ready(client, n), what=f"{n} Ready", kn=kn)
    rv = (await client.list(PODS, namespace="default"))["metadata"]["resourceVersion"]
    deleted_at: dict[str, float] = {}

    async def watch() -> None:
        async for ev in client.watch(PODS, namespace="default", resource_version=rv, timeout_seconds=60):
            nm = ev.object.get("metadata", {}).get("name")
            if nm in names and ev.type == "DELETED":
                deleted_at[nm] = time.monotonic()
            if len(deleted_at) == len(names):
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    t0 = time.monotonic()
    for n in names:
        await client.delete(PODS, n, namespace="default")
    await asyncio.wait_for(task, 60)
    assert "got-TERM" in _read_logs(kn, nice)
    # sleep as PID 1 ignores SIGTERM: the pod can only be gone after the SIGKILL at the grace's end
    assert deleted_at[names[1]] - t0 >= 4.0
    for n in names:
        try:
            await get(client, n)
            raise AssertionError(f"{n} still exists")
        except NotFound:
            pass


async def test_init_container_configmap_volume_and_secret_env(kn: KubeletNode, client: Client) -> None:
    import base64

    from nodeagent.machinery.kinds import CONFIGMAPS, SECRETS

    tag = secrets.token_hex(3)
    await client.create(CONFIGMAPS, {"metadata": {"name": f"cfg-{tag}", "namespace": "default"},
                                     "data": {"greeting": "hi-from-configmap"}})
    await client.create(SECRETS, {"metadata": {"name": f"sec-{tag}", "namespace": "default"},
                                  "data": {"pw": base64.b64encode(b"s3cret").decode()}})
    init = {"name": "init", "image": TOOLBOX, "command": ["sh", "-c", "echo initialized > /work/state"],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}]}
    app = sleeper(volumeMounts=[{"name": "work", "mountPath": "/work"},
                                {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": True}],
                  env=[{"name": "PW", "valueFrom": {"secretKeyRef": {"name": f"sec-{tag}", "key": "pw"}}},
                       {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}])
    p = await client.create(PODS, pod(kn, "init", [app], initContainers=[init],
                                      volumes=[{"name": "work", "emptyDir": {}},
                                               {"name": "cfg", "configMap": {"name": f"cfg-{tag}"}}]))
    name = p["metadata"]["name"]
    ready = await wait_until(lambda: _ready(client, name), what="pod Ready after its init container", kn=kn)
    (ist,) = ready["status"]["initContainerStatuses"]
    assert ist["state"]["terminated"]["exitCode"] == 0 and ist["state"]["terminated"]["reason"] == "Completed"
    assert cond(ready, "Initialized") == "True"
    code, out = await _exec(kn, name, "c", ["sh", "-c", "cat /work/state /etc/cfg/greeting; echo; echo $PW $POD_IP"])
    assert code == 0
    assert out.split() == ["initialized", "hi-from-configmap", "s3cret", ready["status"]["podIP"]]
    code, _ = await _exec(kn, name, "c", ["sh", "-c", "echo x > /etc/cfg/new"])
    assert code != 0  # the configMap volume is mounted read-only
    await client.delete(PODS, name, namespace="default")


async def test_host_network_pod(kn: KubeletNode, client: Client) -> None:
    import random

    port = random.randint(20000, 30000)
    web = {"name": "c", "image": TOOLBOX, "command": ["/bin/web", str(port)],
           "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}
    p = await client.create(PODS, pod(kn, "hostnet", [web], hostNetwork=True))
    name = p["metadata"]["name"]
    ready = await wait_until(lambda: _ready(client, name), what="hostNetwork pod Ready", kn=kn)
    assert ready["status"]["podIP"] == ready["status"]["hostIP"] == "127.0.0.1"
    # the container lives in the node's network namespace
    import os
    code, out = await _exec(kn, name, "c", ["readlink", "/proc/self/ns/net"])
    assert code == 0 and out.strip() == f"net:[{os.stat(f'/var/run/netns/{kn.netns}').st_ino}]"
    await client.delete(PODS, name, namespace="default")



async def test_kubectl_logs_follow_ends_with_the_container(kn: KubeletNode, client: Client) -> None:
    counter = {"name": "c", "image": TOOLBOX, "command": ["sh", "-c", "for i in 1 2 3 4 5 6; do echo n$i; sleep 0.5; done"]}
    p = await client.create(PODS, pod(kn, "follow", [counter], restartPolicy="Never"))
    name = p["metadata"]["name"]

    async def started() -> bool:
        return "running" in cstatus(await get(client, name)).get("state", {}) or \
            (await get(client, name)).get("status", {}).get("phase") == "Succeeded"
    await wait_until(started, what="container running", kn=kn)
    import asyncio
    followed = await asyncio.to_thread(kn.kubectl, "logs", "-f", name)
    assert followed.stdout.split() == ["n1", "n2", "n3", "n4", "n5", "n6"]
    await client.delete(PODS, name, namespace="default")


# Last: it restarts the module's kubelet.
async def test_kill9_kubelet_adopts_pods_without_restarting(kn: KubeletNode, client: Client) -> None:
    from nodeagent.runtime.cri import RuntimeClient

    keep = await client.create(PODS, pod(kn, "keep", [sleeper("a"), sleeper("b")]))
    gone = await client.create(PODS, pod(kn, "gone", [sleeper()]))
    dying = await client.create(PODS, pod(kn, "dying", [sleeper()]))
    kname, gname, dname = (p["metadata"]["name"] for p in (keep, gone, dying))
    for n in (kname, gname, dname):
        await wait_until(lambda n=n: _ready(client, n), what=f"{n} Ready", kn=kn)
    before = await get(client, kname)
    ids = {s["name"]: s["containerID"] for s in before["status"]["containerStatuses"]}
    ip = before["status"]["podIP"]
    gone_uid = gone["metadata"]["uid"]

    kn.kill9()
    # While the kubelet is down: one pod is force-deleted, one gracefully (it waits for the kubelet).
    await client.delete(PODS, gname, namespace="default", grace_period_seconds=0)
    await client.delete(PODS, dname, namespace="default")
    kn.start_kubelet()

    async with RuntimeClient(kn.endpoint) as rt:
        async def orphan_removed() -> bool:
            sbs = await rt.list_pod_sandbox(label_selector={"io.kubernetes.pod.uid": gone_uid})
            return not sbs
        await wait_until(orphan_removed, what="sandbox of the force-deleted pod removed", kn=kn)

        async def dying_gone() -> bool:
            try:
                await get(client, dname)
            except NotFound:
                return True
            return False
        await wait_until(dying_gone, what="gracefully deleted pod confirmed by the restarted kubelet", kn=kn)

        sbs = await rt.list_pod_sandbox(label_selector={"io.kubernetes.pod.uid": keep["metadata"]["uid"]})
        assert len(sbs) == 1, "the restarted kubelet must not create a second sandbox"
    after = await get(client, kname)
    assert after["status"]["podIP"] == ip and cond(after, "Ready") == "True"
    assert {s["name"]: s["containerID"] for s in after["status"]["containerStatuses"]} == ids
    assert all(s["restartCount"] == 0 for s in after["status"]["containerStatuses"])
    await client.delete(PODS, kname, namespace="default")


async def test_runtime_class_crun_runs_the_pod_with_crun(kn: KubeletNode, client: Client) -> None:
    """spec.runtimeClassName -> RuntimeClass.handler -> RunPodSandbox(runtime_handler): containerd
    runs the pod with crun, its state under the managed containerd's crun root; the start's steps
    are in the kubelet's metrics."""
    import shutil

    from nodeagent.machinery.kinds import RUNTIME_CLASSES
    from nodeagent.runtime.containerd import crun_blocked
    from nodeagent.runtime.cri import RuntimeClient

    if shutil.which("crun") is None or crun_blocked():
        pytest.skip(f"crun cannot run here ({crun_blocked() or 'not installed'}): `make setup` installs it")
    name = f"crun-{secrets.token_hex(2)}"
    await client.create(RUNTIME_CLASSES, {"metadata": {"name": name}, "handler": "crun"})
    try:
        p = await client.create(PODS, pod(kn, "crun", [sleeper()], runtimeClassName=name))
        pname = p["metadata"]["name"]
        await wait_until(lambda: _ready(client, pname), what="crun pod Ready", kn=kn)
        async with RuntimeClient(kn.endpoint) as rt:
            sandboxes = [s for s in await rt.list_pod_sandbox() if s.metadata.name == pname]
            assert [s.runtime_handler for s in sandboxes] == ["crun"]
        assert kn.node is not None
        crun_root = kn.node.data_dir / "containerd" / "crun" / "k8s.io"
        assert (crun_root / sandboxes[0].id).is_dir()  # crun holds the pause container's state
        code, out = await _exec(kn, pname, "c", ["cat", "/proc/1/cmdline"])
        assert code == 0 and out.startswith("sleep")
        text = await _metrics(kn)
        assert 'kubelet_run_podsandbox_duration_seconds_count{runtime_handler="crun"}' in text
        for phase in ("queued", "sandbox", "image", "create", "start", "status", "watch"):
            assert f'nodeagent_kubelet_pod_start_phase_duration_seconds_count{{phase="{phase}"}}' in text, phase
        assert "kubelet_pod_start_sli_duration_seconds_count" in text
        await client.delete(PODS, pname, namespace="default")
    finally:
        await client.delete(RUNTIME_CLASSES, name)


async def _metrics(kn: KubeletNode) -> str:
    from tests.helpers import prom

    return await asyncio.to_thread(prom.scrape, f"https://127.0.0.1:{kn.port}/metrics", kn.admin_token())
