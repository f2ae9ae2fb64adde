"""kill -9 during a stream of writes: every acknowledged write survives, and a watcher resuming from
its last resourceVersion sees every later event exactly once (issue 2, durability)."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.request

from tests.helpers.api_kubectl import admin_token, request
from tests.helpers.apiserver import ApiServerProcess


def _watch_lines(server: ApiServerProcess, rv: str, out: list[dict[str, object]], stop: threading.Event,
                 timeout: int = 30) -> None:
    ctx = ssl.create_default_context(cafile=str(server.data_dir / "pki" / "ca.crt"))
    req = urllib.request.Request(
        f"{server.url}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds={timeout}")
    req.add_header("Authorization", f"Bearer {admin_token(server)}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=timeout + 5) as r:
            for line in r:
                out.append(json.loads(line))
                if stop.is_set():
                    return
    except OSError:
        return  # the server died under us: that is the point of the test


def test_kill9_keeps_acknowledged_writes_and_watch_resumes(apiserver: ApiServerProcess) -> None:
    code, listing = request(apiserver, "GET", "/api/v1/namespaces/default/configmaps")
    assert code == 200
    start_rv = listing["metadata"]["resourceVersion"]
    before: list[dict[str, object]] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_lines, args=(apiserver, start_rv, before, stop), daemon=True)
    watcher.start()

    acked: dict[str, str] = {}
    errors: list[str] = []

    def writer(prefix: str) -> None:
        i = 0
        while not stop.is_set():
            body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{prefix}-{i}"},
                               "data": {"i": str(i)}}).encode()
            try:
                code, obj = request(apiserver, "POST", "/api/v1/namespaces/default/configmaps", body, timeout=5)
            except OSError:
                return
            if code == 201:
                acked[obj["metadata"]["name"]] = obj["metadata"]["resourceVersion"]
            elif code != 0:
                errors.append(f"{code}: {obj}")
            i += 1

    writers = [threading.Thread(target=writer, args=(f"w{n}",), daemon=True) for n in range(3)]
    for w in writers:
        w.start()
    deadline = time.monotonic() + 30
    while len(acked) < 150 and time.monotonic() < deadline:
        time.sleep(0.05)
    apiserver.kill9()
    stop.set()
    for w in writers:
        w.join(timeout=10)
    watcher.join(timeout=10)
    assert len(acked) >= 150, f"only {len(acked)} writes acknowledged before the deadline; errors: {errors[:3]}"
    assert not errors, errors[:3]

    apiserver.restart()
    code, listing = request(apiserver, "GET", "/api/v1/namespaces/default/configmaps")
    assert code == 200
    stored = {i["metadata"]["name"]: i["metadata"]["resourceVersion"] for i in listing["items"]}
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{len(missing)} acknowledged writes lost after kill -9, e.g. {missing[:5]}"
    assert all(stored[n] == rv for n, rv in acked.items())

    # Resume the watch from the last revision the first watcher saw.
    seen_before = [e for e in before if e["type"] == "ADDED"]
    last_rv = seen_before[-1]["object"]["metadata"]["resourceVersion"] if seen_before else start_rv  # type: ignore[index]
    after: list[dict[str, object]] = []
    stop2 = threading.Event()
    t = threading.Thread(target=_watch_lines, args=(apiserver, last_rv, after, stop2, 3), daemon=True)
    t.start()
    t.join(timeout=20)
    names_before = [e["object"]["metadata"]["name"] for e in seen_before]  # type: ignore[index]
    names_after = [e["object"]["metadata"]["name"] for e in after if e["type"] == "ADDED"]  # type: ignore[index]
    assert len(names_after) == len(set(names_after)), "an event was delivered twice after resuming"
    assert not set(names_before) & set(names_after), "the resumed watch repeated events before its revision"
    assert set(stored) <= set(names_before) | set(names_after), "the resumed watch missed events"
    revs = [int(e["object"]["metadata"]["resourceVersion"]) for e in after]  # type: ignore[index]
    assert revs == sorted(revs)
