"""apiserver -> `nodeagent proxy` process (in the node's namespace) -> rules -> traffic; and --cleanup."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from nodeagent.client import Client, ClientConfig
from nodeagent.machinery.kinds import ENDPOINTSLICES, SERVICES
from nodeagent.netns import nsenter_argv, run_in_netns
from tests.helpers import proxy_topology as topo_mod
from tests.helpers.apiserver import ApiServerProcess
from tests.helpers.netns import NetnsForwarder
from tests.helpers.proxy_objects import endpoint, endpoint_slice, service
from tests.helpers.proxy_topology import Topology, connect_many, wait_for

pytestmark = pytest.mark.root
CLUSTER_IP = "10.96.0.50"
METRICS_PORT = 10249


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def _proxy_argv(ns: str, *args: str) -> list[str]:
    return [*nsenter_argv(ns), sys.executable, "-m", "nodeagent", "-v", "proxy", *args]


def _state(ns: str, mode: str) -> str:
    return topo_mod.iptables_save(ns) if mode == "iptables" else topo_mod.nft_ruleset(ns)


def _api(apiserver: ApiServerProcess, fn: Callable[[Client], Awaitable[object]]) -> None:
    async def go() -> None:
        async with Client(ClientConfig.from_kubeconfig(str(apiserver.kubeconfig))) as c:
            await fn(c)

    asyncio.run(go())


async def _create_web(c: Client, pod_ips: list[str]) -> None:
    await c.create(SERVICES, service("web", CLUSTER_IP))
    await c.create(ENDPOINTSLICES, endpoint_slice("web", [endpoint(ip, "node-a") for ip in pod_ips]))


async def _drop_endpoint(c: Client, pod_ip: str) -> None:
    # what the endpoints controller does when a pod goes
    es = await c.get(ENDPOINTSLICES, "web-abc12", namespace="default")
    es["endpoints"] = [e for e in es["endpoints"] if e["addresses"] != [pod_ip]]
    await c.update(ENDPOINTSLICES, es)


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_apiserver_to_proxy_process_to_traffic(apiserver: ApiServerProcess, topo: Topology, mode: str,
                                               tmp_path: Path) -> None:
    fwd = NetnsForwarder(topo.node, apiserver.port).start()
    log = tmp_path / "proxy.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        _api(apiserver, lambda c: _create_web(c, topo.pod_ips))
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                _proxy_argv(topo.node, "--kubeconfig", str(apiserver.kubeconfig_for_user("system:kube-proxy")),
                            "--node-name", "node-a", "--mode", mode, "--metrics-port", str(METRICS_PORT),
                            "--healthz-port", "10256", "--min-sync-period", "0.1"),
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: proc.poll() is None and "10.244.1.12" in _state(topo.node, mode), 30,
                 lambda: f"rules from the proxy process (log: {log.read_text()[-2000:]})")
        counts = connect_many(topo.client, CLUSTER_IP, 80, 90)
        assert set(counts) == set(topo.pods), counts

        # the endpoints controller drops a pod: the proxy follows through the watch
        _api(apiserver, lambda c: _drop_endpoint(c, topo.pod_ips[2]))
        wait_for(lambda: "10.244.1.12" not in _state(topo.node, mode), 20, "the removed endpoint's rules to go")
        counts = connect_many(topo.client, CLUSTER_IP, 80, 60)
        assert set(counts) == set(topo.pods[:2]), counts

        status, body = run_in_netns(topo.node, _get, f"http://127.0.0.1:{METRICS_PORT}/metrics")
        assert status == 200 and "kubeproxy_sync_proxy_rules_last_timestamp_seconds" in body
        last = [ln for ln in body.splitlines() if ln.startswith("kubeproxy_sync_proxy_rules_last_timestamp_seconds ")]
        assert float(last[0].split()[1]) > 0
        status, body = run_in_netns(topo.node, _get, "http://127.0.0.1:10256/healthz")
        assert status == 200 and "lastUpdated" in json.loads(body)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]
        # stopping leaves the rules (traffic keeps flowing); --cleanup removes them all
        assert "10.244.1.11" in _state(topo.node, mode)
        subprocess.run(_proxy_argv(topo.node, "--cleanup"), check=True, capture_output=True, timeout=60)
        assert "KUBE-" not in topo_mod.iptables_save(topo.node)
        assert "KUBE-" not in topo_mod.iptables_save(topo.node, "nft")
        assert "kube-proxy" not in topo_mod.nft_ruleset(topo.node)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        fwd.stop()


def _sync_count(ns: str) -> float:
    status, body = run_in_netns(ns, _get, f"http://127.0.0.1:{METRICS_PORT}/metrics")
    assert status == 200, body
    line = next(ln for ln in body.splitlines() if ln.startswith("kubeproxy_sync_proxy_rules_duration_seconds_count"))
    return float(line.split()[1])


def test_config_file_sets_mode_and_sync_period(apiserver: ApiServerProcess, topo: Topology, tmp_path: Path) -> None:
    """`--config FILE` as upstream: the file's mode and its own section's syncPeriod apply, and the
    flags it covers (here --mode) are ignored with a warning."""
    fwd = NetnsForwarder(topo.node, apiserver.port).start()
    log = tmp_path / "proxy.log"
    config = tmp_path / "kube-proxy.yaml"
    config.write_text(f"""\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {apiserver.kubeconfig_for_user("system:kube-proxy")}
hostnameOverride: node-a
mode: nftables
iptables: {{syncPeriod: 1h0m0s}}
nftables: {{syncPeriod: 1s, minSyncPeriod: 100ms}}
clusterCIDR: 10.244.0.0/16
metricsBindAddress: 127.0.0.1:{METRICS_PORT}
healthzBindAddress: 127.0.0.1:10256
""")
    proc: subprocess.Popen[bytes] | None = None
    try:
        _api(apiserver, lambda c: _create_web(c, topo.pod_ips))
        with open(log, "wb") as out:
            proc = subprocess.Popen(_proxy_argv(topo.node, "--config", str(config), "--mode", "iptables"),
                                    stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(lambda: proc.poll() is None and "10.244.1.12" in topo_mod.nft_ruleset(topo.node), 30,
                 lambda: f"nftables rules from the config file's mode (log: {log.read_text()[-2000:]})")
        assert "KUBE-SVC" not in topo_mod.iptables_save(topo.node)  # --mode iptables was ignored
        counts = connect_many(topo.client, CLUSTER_IP, 80, 30)
        assert set(counts) <= set(topo.pods) and counts, counts

        # nothing changes from here on: only the file's 1s syncPeriod makes syncs happen (the
        # iptables section's 1h, or the default 30s, would not in this window)
        first = _sync_count(topo.node)
        wait_for(lambda: _sync_count(topo.node) >= first + 3, 10, "three periodic syncs at the file's 1s syncPeriod")
        text = log.read_text()
        assert "mode=nftables" in text and "sync_period=1 " in text and "min_sync_period=0.1 " in text, text[-2000:]
        assert "--mode is ignored" in text, text[-2000:]

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, log.read_text()[-2000:]
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(_proxy_argv(topo.node, "--cleanup"), capture_output=True, timeout=60)
        fwd.stop()


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "kube-proxy.yaml"
    config.write_text("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"
                      "nftables: {syncPeriod: 1s, minSyncPeriood: 1s}\n")
    res = subprocess.run([sys.executable, "-m", "nodeagent", "proxy", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert "unknown field 'nftables.minSyncPeriood'" in res.stderr
