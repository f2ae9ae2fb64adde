"""Pod garbage collection (pkg/controller/podgc): pods bound to a Node that no longer exists are
force-deleted, since no kubelet will ever finish them. A node missing from our cache is confirmed
missing with a live GET, and only after a quarantine (upstream: 40 s) so a Node that is just being
created is not mistaken for a deleted one."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nodeagent.client.errors import ApiError, NotFound
from nodeagent.controllers.base import Context, Controller
from nodeagent.controllers.objects import name_of, namespace_of
from nodeagent.machinery.kinds import NODES, PODS

log = logging.getLogger(__name__)

Obj = dict[str, Any]
QUARANTINE = 40.0
GC_PERIOD = 20.0


class PodGCController(Controller):
    name = "podgc"

    def __init__(self, ctx: Context, quarantine: float = QUARANTINE) -> None:
        super().__init__(ctx)
        self.recorder = ctx.recorder("pod-garbage-collector")
        self.pods = ctx.informers.get(PODS)
        self.nodes = ctx.informers.get(NODES)
        self.quarantine = quarantine
        self.missing_since: dict[str, float] = {}

    def background(self) -> list[Any]:
        return [self._loop()]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(GC_PERIOD)
            try:
                await self.gc_once()
            except ApiError as e:
                log.warning("pod gc pass failed error=%s", e)

    async def reconcile(self, key: str) -> None:  # periodic only; nothing is queued
        return None

    async def gc_once(self) -> int:
        """One pass; returns how many pods were deleted."""
        now = self.clock.now()
        known = {name_of(n) for n in self.nodes.list()}
        by_node: dict[str, list[Obj]] = {}
        for p in self.pods.list():
            node = (p.get("spec") or {}).get("nodeName")
            if node and node not in known:
                by_node.setdefault(str(node), []).append(p)
        for node in list(self.missing_since):
            if node not in by_node:
                del self.missing_since[node]
        deleted = 0
        for node, pods in by_node.items():
            since = self.missing_since.setdefault(node, now)
            if now - since < self.quarantine:
                continue
            try:
                await self.client.get(NODES, node)
                continue  # it exists after all: our cache is behind
            except NotFound:
                pass
            for p in pods:
                try:
                    await self.client.delete(PODS, name_of(p), namespace=namespace_of(p), grace_period_seconds=0)
                    deleted += 1
                    log.info("deleted orphaned pod pod=%s/%s node=%s", namespace_of(p), name_of(p), node)
                except NotFound:
                    pass
        return deleted
