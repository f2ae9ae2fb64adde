"""The controller manager: builds every loop over one set of shared informers and runs them while
this instance leads (seed 002: one active instance, the others on standby)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from nodeagent.client.interface import ClientProtocol
from nodeagent.clock import Clock, RealClock
from nodeagent.controllers.base import Context, Controller, Options, SharedInformers
from nodeagent.controllers.metrics import Metrics

log = logging.getLogger(__name__)


def controller_factories() -> dict[str, Callable[[Context], Controller]]:
    from nodeagent.controllers.clusterroleaggregation import ClusterRoleAggregationController
    from nodeagent.controllers.daemonset import DaemonSetController
    from nodeagent.controllers.deployment import DeploymentController
    from nodeagent.controllers.endpoints import EndpointsController
    from nodeagent.controllers.endpointslice import EndpointSliceController
    from nodeagent.controllers.garbagecollector import GarbageCollector
    from nodeagent.controllers.job import JobController
    from nodeagent.controllers.nodeipam import NodeIpamController
    from nodeagent.controllers.nodelifecycle import NodeLifecycleController
    from nodeagent.controllers.podgc import PodGCController
    from nodeagent.controllers.replicaset import ReplicaSetController
    from nodeagent.controllers.rootcacert import RootCACertPublisher
    from nodeagent.controllers.scheduler import Scheduler
    from nodeagent.controllers.serviceaccounts import ServiceAccountsController
    from nodeagent.controllers.servicelb import ServiceLBController

    return {
        "scheduler": Scheduler, "replicaset": ReplicaSetController, "deployment": DeploymentController,
        "daemonset": DaemonSetController, "job": JobController, "endpoint": EndpointsController,
        "endpointslice": EndpointSliceController, "nodeipam": NodeIpamController,
        "nodelifecycle": NodeLifecycleController, "garbagecollector": GarbageCollector,
        "podgc": PodGCController, "serviceaccount": ServiceAccountsController,
        "root-ca-cert-publisher": RootCACertPublisher, "clusterrole-aggregation": ClusterRoleAggregationController,
        "servicelb": ServiceLBController,
    }


class ControllerManager:
    def __init__(self, client: ClientProtocol, options: Options | None = None, clock: Clock | None = None,
                 metrics: Metrics | None = None, enabled: list[str] | None = None,
                 clients: dict[str, Any] | None = None) -> None:
        """clients: a controller's own client (its identity) by name; the others write with `client`."""
        self.options = options or Options()
        self.informers = SharedInformers(client, resync_period=self.options.resync_period)
        self.ctx = Context(client=client, informers=self.informers, options=self.options,
                           clock=clock or RealClock(), metrics=metrics or Metrics())
        factories = controller_factories()
        names = enabled or list(factories)
        unknown = [n for n in names if n not in factories]
        if unknown:
            raise ValueError(f"unknown controllers {unknown}: known are {sorted(factories)}")
        own = clients or {}
        self.ctx.extra_clients.update(own)
        self.controllers: dict[str, Controller] = {
            n: factories[n](dataclasses.replace(self.ctx, client=own[n], recorders={}) if n in own else self.ctx)
            for n in names}
        self.running = False

    async def start(self, sync_timeout: float = 60.0) -> None:
        self.informers.start()
        await self.informers.wait_synced(sync_timeout)
        for name, c in self.controllers.items():
            c.start()
            log.info("started controller name=%s", name)
        self.running = True

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*(c.stop() for c in self.controllers.values()), return_exceptions=True)
        await self.informers.stop()
        recorders = {id(r): r for c in self.controllers.values() for r in c.ctx.recorders.values()}
        recorders.update({id(r): r for r in self.ctx.recorders.values()})
        for rec in recorders.values():
            try:
                await asyncio.wait_for(rec.flush(), 2.0)
            except TimeoutError:
                pass
