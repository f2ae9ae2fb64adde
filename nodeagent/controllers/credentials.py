"""Per-controller identities (upstream kube-controller-manager --use-service-account-credentials,
clientbuilder.NewDynamicClientBuilder): the manager itself runs as system:kube-controller-manager,
which may read everything but write almost nothing; each loop writes through a client of its own
service account in kube-system (system:serviceaccount:kube-system:deployment-controller, ...),
bound by the bootstrap policy to its system:controller:* role. Tokens come from TokenRequest and
are renewed at 80% of their life."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from nodeagent.client import Client, ClientConfig
from nodeagent.client.errors import AlreadyExists, NotFound
from nodeagent.machinery.kinds import SERVICEACCOUNTS

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
TOKEN_SECONDS = 3600
# our loop -> the service account upstream's controller of the same job runs as
SERVICE_ACCOUNTS = {
    "replicaset": "replicaset-controller", "deployment": "deployment-controller",
    "daemonset": "daemon-set-controller", "job": "job-controller", "endpoint": "endpoint-controller",
    "endpointslice": "endpointslice-controller", "nodeipam": "node-controller", "nodelifecycle": "node-controller",
    "garbagecollector": "generic-garbage-collector", "podgc": "pod-garbage-collector",
    "serviceaccount": "service-account-controller", "root-ca-cert-publisher": "root-ca-cert-publisher",
    "clusterrole-aggregation": "clusterrole-aggregation-controller",
    "ttl-after-finished": "ttl-after-finished-controller",  # the job loop's deletion of finished Jobs
    "servicelb": "service-controller",  # the cloud-controller-manager's service (load balancer) loop
}


class ServiceAccountClients:
    def __init__(self, root: Client, config: ClientConfig, user_agent: str = "nodeagent-controllers") -> None:
        self.root = root
        self.config = config
        self.user_agent = user_agent
        self._clients: dict[str, Client] = {}
        self._tokens: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def _ensure_account(self, name: str) -> None:
        try:
            await self.root.get(SERVICEACCOUNTS, name, namespace=NAMESPACE)
        except NotFound:
            try:
                await self.root.create(SERVICEACCOUNTS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                                         "metadata": {"name": name, "namespace": NAMESPACE}},
                                       namespace=NAMESPACE)
            except AlreadyExists:
                pass

    async def _request_token(self, name: str) -> float:
        """A fresh token for the account; returns its lifetime in seconds."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": TOKEN_SECONDS}}
        out = await self.root.request("POST", SERVICEACCOUNTS.path(name, NAMESPACE, "token"), body=body)
        self._tokens[name] = str(out["status"]["token"])
        return float(out.get("spec", {}).get("expirationSeconds") or TOKEN_SECONDS)

    async def _renew(self, name: str, lifetime: float) -> None:
        while True:
            await asyncio.sleep(lifetime * 0.8)
            started = time.monotonic()
            try:
                lifetime = await self._request_token(name)
            except Exception as e:  # keep the old token (still valid for 20% of its life) and retry soon
                log.warning("token renewal failed serviceaccount=%s/%s error=%s", NAMESPACE, name, e)
                lifetime = max(10.0, (lifetime * 0.2 - (time.monotonic() - started)) / 0.8)

    async def client_for(self, controller: str) -> Client:
        name = SERVICE_ACCOUNTS.get(controller)
        if name is None:
            return self.root
        if name not in self._clients:
            await self._ensure_account(name)
            lifetime = await self._request_token(name)
            tokens = self._tokens
            cfg = dataclasses.replace(self.config, token=None, token_file=None, client_cert_file=None,
                                      client_key_file=None, client_cert_data=None, client_key_data=None,
                                      token_source=lambda: tokens.get(name))
            self._clients[name] = Client(cfg, user_agent=f"{self.user_agent}/{name}")
            self._tasks.append(asyncio.create_task(self._renew(name, lifetime), name=f"token-{name}"))
            log.info("controller credentials controller=%s serviceaccount=%s/%s", controller, NAMESPACE, name)
        return self._clients[name]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for c in self._clients.values():
            await c.close()


__all__ = ["SERVICE_ACCOUNTS", "ServiceAccountClients"]
