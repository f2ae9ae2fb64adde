"""kubectl attach and kubectl run -i --rm through the apiserver's pods/attach and the kubelet's /attach
to containerd's streaming server (CRI Attach), as upstream: the real kubectl, apiserver, kubelet and
containerd, the node in its own network namespace."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import time
from typing import Any

import pytest

from nodeagent.client import Client, NotFound
from nodeagent.machinery.kinds import PODS
from tests.helpers.api_kubectl import request
from tests.helpers.kubelet_node import KubeletNode, delete_pod_now, node_token, wait_until

pytestmark = pytest.mark.root  # containerd, network namespaces

TOOLBOX = "nodeagent.local/toolbox:1"


def _pod(kn: KubeletNode, prefix: str, script: str, **container: Any) -> dict[str, Any]:
    return {"metadata": {"name": f"{prefix}-{secrets.token_hex(3)}", "namespace": "default"},
            "spec": {"nodeName": kn.name, "terminationGracePeriodSeconds": 1, "restartPolicy": "Never",
                     "containers": [{"name": "c", "image": TOOLBOX, "command": ["sh", "-c", script], **container}]}}


async def _running(client: Client, name: str) -> bool:
    p = await client.get(PODS, name, namespace="default")
    return (p.get("status") or {}).get("phase") == "Running"


async def _gone(client: Client, name: str) -> bool:
    try:
        await client.get(PODS, name, namespace="default")
    except NotFound:
        return True
    return False


async def _delete(client: Client, name: str) -> None:
    with contextlib.suppress(NotFound):
        await client.delete(PODS, name, namespace="default", grace_period_seconds=0)


def _kubectl(kn: KubeletNode, *args: str, stdin: str | None = None,
             timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["kubectl", "--kubeconfig", str(kn.api.kubeconfig), *args], input=stdin,
                          capture_output=True, text=True, timeout=timeout)


async def test_kubectl_attach_streams_the_containers_output(kn: KubeletNode, client: Client) -> None:
    p = await client.create(PODS, _pod(kn, "tick", "while true; do echo tick; sleep 0.2; done"))
    name = p["metadata"]["name"]
    proc: asyncio.subprocess.Process | None = None
    try:
        await wait_until(lambda: _running(client, name), what="tick pod Running", kn=kn)
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(kn.api.kubeconfig), "attach", name,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        lines = []
        deadline = time.monotonic() + 30
        while len(lines) < 3:
            line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            if not line:
                err = (await proc.stderr.read()).decode(errors="replace")
                raise AssertionError(f"kubectl attach ended after {lines}: rc={await proc.wait()} {err}")
            lines.append(line.decode())
        assert lines == ["tick\n"] * 3
        # still streaming: the container keeps printing and kubectl stays attached until stopped
        assert proc.returncode is None
        assert f"attach pod=default/{name} container=c" in kn.log.read_text(errors="replace")
        assert "tty=False stdin=False" in kn.log.read_text(errors="replace")
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await _delete(client, name)
    # detaching did not stop the container: it ran until the pod was deleted
    await wait_until(lambda: _gone(client, name), what="tick pod deleted", kn=kn)


async def test_kubectl_attach_i_feeds_the_containers_stdin(kn: KubeletNode, client: Client) -> None:
    p = await client.create(PODS, _pod(kn, "rd", "read line; echo got:$line", stdin=True))
    name = p["metadata"]["name"]
    try:
        await wait_until(lambda: _running(client, name), what="reader pod Running", kn=kn)
        # Keep kubectl's stdin open until the answer came: the container was not created with
        # stdinOnce, so (as upstream's runtimes, docker-like) our closing stdin would detach at once
        # and could cut the output short.
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(kn.api.kubeconfig), "attach", "-i", name,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            proc.stdin.write(b"hello\n")
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            # the container exits after its one line: the runtime ends the session and kubectl exits
            rc = await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        err = (await proc.stderr.read()).decode(errors="replace")
        assert line == b"got:hello\n" and rc == 0, (line, rc, err)
        assert "tty=False stdin=True" in kn.log.read_text(errors="replace")

        async def succeeded() -> bool:
            got = await client.get(PODS, name, namespace="default")
            return (got.get("status") or {}).get("phase") == "Succeeded"
        # the line reached the process: it exited on its own
        await wait_until(succeeded, what="reader pod Succeeded", kn=kn)
        # a completed pod cannot be attached to (kubectl checks the phase itself)
        r = await asyncio.to_thread(_kubectl, kn, "attach", "-i", name, stdin="again\n")
        assert r.returncode != 0 and "completed pod" in r.stderr, (r.returncode, r.stdout, r.stderr)
    finally:
        await _delete(client, name)


async def _kubectl_run(kn: KubeletNode, name: str, script: str, stdin: str) -> subprocess.CompletedProcess[str]:
    """`kubectl run -i --rm --restart=Never NAME -- sh -c SCRIPT` with `stdin` piped in."""
    # no scheduler in this fixture: bind the pod to our node through the overrides
    overrides = json.dumps({"apiVersion": "v1", "spec": {"nodeName": kn.name, "terminationGracePeriodSeconds": 1}})
    return await asyncio.to_thread(
        _kubectl, kn, "run", "-i", "--rm", "--restart=Never", name, f"--image={TOOLBOX}",
        f"--overrides={overrides}", "--", "sh", "-c", script, stdin=stdin)


async def test_kubectl_run_i_rm_prints_the_output_and_deletes_the_pod(kn: KubeletNode, client: Client) -> None:
    name = f"run-{secrets.token_hex(3)}"
    try:
        r = await _kubectl_run(kn, name, "tr a-z A-Z; echo done; echo to-stderr >&2", "one\ntwo\n")
        # tr ends only because the runtime closed its stdin when kubectl's input ended: the container
        # was created with stdin and stdin_once, as kubectl run asks (spec stdin/stdinOnce). Without
        # stdin_once the runtime would only detach and the pod would never complete.
        assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
        assert r.stdout.splitlines()[:3] == ["ONE", "TWO", "done"], r.stdout
        assert "to-stderr" in r.stderr, r.stderr
        assert f'pod "{name}" deleted' in r.stdout, r.stdout
        assert "falling back to streaming logs" not in r.stderr, r.stderr  # the attach itself carried it
        log = kn.log.read_text(errors="replace")
        assert f"attach pod=default/{name} container={name}" in log and "tty=False stdin=True" in log
        await wait_until(lambda: _gone(client, name), what="kubectl run's pod deleted", kn=kn)
    finally:
        await _delete(client, name)


async def test_kubectl_run_i_exit_code_is_the_containers(kn: KubeletNode, client: Client) -> None:
    name = f"runx-{secrets.token_hex(3)}"
    try:
        r = await _kubectl_run(kn, name, "read a; echo bad:$a; exit 3", "x\n")
        assert r.returncode == 3 and "bad:x" in r.stdout, (r.returncode, r.stdout, r.stderr)
        await wait_until(lambda: _gone(client, name), what="kubectl run's pod deleted", kn=kn)
    finally:
        await _delete(client, name)


def test_attach_subresource_discovery_authz_and_refusals(kn: KubeletNode) -> None:
    api = kn.api
    code, body = request(api, "GET", "/api/v1")
    assert code == 200
    at = [r for r in body["resources"] if r["name"] == "pods/attach"]
    assert at == [{**at[0], "verbs": ["create", "get"], "kind": "PodAttachOptions"}], at

    pod = _pod(kn, "atr", "sleep 3600")
    pod.update(apiVersion="v1", kind="Pod")
    name = pod["metadata"]["name"]
    code, _ = request(api, "POST", "/api/v1/namespaces/default/pods", json.dumps(pod).encode())
    assert code == 201
    path = f"/api/v1/namespaces/default/pods/{name}/attach"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            code, got = request(api, "GET", f"/api/v1/namespaces/default/pods/{name}")
            if (got.get("status") or {}).get("phase") == "Running":
                break
            time.sleep(0.3)
        # not an upgrade: the apiserver forwards it and the kubelet refuses it
        code, body = request(api, "POST", path + "?container=c&stdout=true")
        assert code == 400 and "upgrade" in body["message"], body
        # an unknown container is refused by the apiserver
        code, body = request(api, "POST", path + "?container=nope&stdout=true", headers={"Upgrade": "SPDY/3.1"})
        assert code == 400 and "container nope is not valid" in body["message"], body
        # a node identity may not attach (create on pods/attach is for admins)
        code, body = request(api, "POST", path, token=node_token(kn), headers={"Upgrade": "SPDY/3.1"})
        assert code == 403 and body["reason"] == "Forbidden", body
    finally:
        delete_pod_now(kn, name)
