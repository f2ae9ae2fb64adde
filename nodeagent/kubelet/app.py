"""Run a whole kubelet process: runtime, node registration and lease, pod workers, HTTPS server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from nodeagent.clock import RealClock
from nodeagent.kubelet.config import KubeletConfig
from nodeagent.kubelet.instrumented import InstrumentedRuntime
from nodeagent.kubelet.kubelet import Kubelet
from nodeagent.kubelet.metrics import KubeletMetrics
from nodeagent.kubelet.node import NodeStatusManager
from nodeagent.kubelet.node_startup import fast_status_update_once
from nodeagent.kubelet.server import KubeletServer, ensure_serving_cert

log = logging.getLogger(__name__)


def client_ca(config: KubeletConfig, kubeconfig: str) -> str | None:
    """The CA whose client certificates authenticate callers: --client-ca-file, else the kubeconfig's
    cluster CA written next to the kubelet's PKI (the apiserver's kubelet client cert is signed by it)."""
    import os

    from nodeagent.client import ClientConfig

    if config.client_ca_file:
        return config.client_ca_file
    cfg = ClientConfig.from_kubeconfig(kubeconfig)
    if cfg.ca_file:
        return cfg.ca_file
    if not cfg.ca_data:
        return None
    os.makedirs(config.pki_dir, mode=0o700, exist_ok=True)
    path = os.path.join(config.pki_dir, "client-ca.crt")
    with open(path, "wb") as f:
        f.write(cfg.ca_data)
    return path


def _socket_exists(endpoint: str) -> bool:
    import os

    return os.path.exists(endpoint[len("unix://"):])


async def _answers(endpoint: str) -> bool:
    from nodeagent.runtime.cri import RuntimeClient

    if not _socket_exists(endpoint):
        return False
    client = RuntimeClient(endpoint, timeout=2.0, retries=0)
    try:
        await client.version()
        return True
    except Exception:
        return False
    finally:
        await client.close()


async def run_kubelet(config: KubeletConfig, kubeconfig: str, runtime_endpoint: str | None,
                      cni_bin_dir: str | None, cni_conf_dir: str | None,
                      stop: asyncio.Event | None = None) -> int:
    from nodeagent.client import Client, ClientConfig
    from nodeagent.kubelet.cri_runtime import CRIRuntime

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    managed: Any = None
    if not runtime_endpoint:
        from nodeagent.runtime.containerd import ManagedContainerd

        managed = ManagedContainerd(config.data_dir, cni_bin_dir=cni_bin_dir, cni_conf_dir=cni_conf_dir)
        if await _answers(managed.endpoint):
            # A kubelet killed with -9 leaves its containerd (and the pods) running: adopt it rather
            # than start a second containerd on the same root.
            log.info("adopting the running managed containerd endpoint=%s", managed.endpoint)
            runtime_endpoint, managed = managed.endpoint, None
        else:
            await managed.start()
            runtime_endpoint = managed.endpoint

    metrics = KubeletMetrics()
    runtime = InstrumentedRuntime(CRIRuntime(runtime_endpoint, config.logs_dir, timeout=config.runtime_request_timeout), metrics)
    clock = RealClock()
    client = Client(ClientConfig.from_kubeconfig(kubeconfig), user_agent=f"kubelet/{config.node_name}")
    kubelet = Kubelet(client, runtime, config, clock=clock, metrics=metrics)
    runtime_version = ""
    runtime_state: list[tuple[bool, str]] = [(False, "container runtime status check may not have completed yet")]

    def readiness() -> tuple[bool, str]:
        ok, why = kubelet.pleg.healthy()
        if not ok:
            return False, f"PLEG is not healthy: {why}"
        return runtime_state[0]

    nodes = NodeStatusManager(client, config, clock, lambda: runtime_version, readiness)
    kubelet.host_ip = nodes.node_ip
    server = KubeletServer(kubelet)
    tasks: list[asyncio.Task[Any]] = []
    try:
        name, version = await runtime.version()
        runtime_version = f"{name}://{version}"
        runtime_state[0] = await runtime.runtime_ready()
        if config.tls_cert_file:
            crt, key = config.tls_cert_file, config.tls_private_key_file or config.tls_cert_file
        else:
            crt, key = ensure_serving_cert(config.pki_dir, config.node_name, [nodes.node_ip])
        await server.start(config.bind_address, config.port, crt, key, client_ca(config, kubeconfig))
        await nodes.register()
        tasks.append(asyncio.create_task(nodes.run_lease_loop(), name="kubelet-lease"))

        async def refresh_runtime_state() -> None:
            try:
                runtime_state[0] = await runtime.runtime_ready()
            except Exception as e:
                runtime_state[0] = (False, f"container runtime is down: {e}")

        async def runtime_status_loop() -> None:
            while True:
                await refresh_runtime_state()
                await asyncio.sleep(5)

        # Ready as soon as runtime, network and podCIDR allow, not at the next 10 s status tick.
        tasks.append(asyncio.create_task(fast_status_update_once(nodes, refresh_runtime_state),
                                         name="kubelet-fast-node-status"))
        await kubelet.start()
        tasks += [asyncio.create_task(nodes.run_status_loop(), name="kubelet-node-status"),
                  asyncio.create_task(runtime_status_loop(), name="kubelet-runtime-status")]
        log.info("kubelet running node=%s runtime=%s node_ip=%s", config.node_name, runtime_version, nodes.node_ip)
        await stop.wait()
        log.info("kubelet stopping node=%s", config.node_name)
        return 0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await kubelet.stop()
        await server.stop()
        await runtime.close()
        await client.close()
        if managed is not None:
            # Pods keep running in their shims; a restarted kubelet adopts them.
            await managed.stop(cleanup=False)
