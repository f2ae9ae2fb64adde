"""Leader election through a coordination.k8s.io/v1 Lease (client-go tools/leaderelection).

Seed 002: only one scheduler / controller manager acts at a time, the others stand by. A candidate
takes the Lease when it is free or when its holder has not renewed it for leaseDurationSeconds,
judged by when *we* last saw the Lease change (never the holder's clock); the leader renews every
`retry_period` and gives up when it could not renew for `renew_deadline`. Writes carry the
resourceVersion, so two candidates cannot both win. On a clean stop the leader empties
holderIdentity so a standby takes over at once (ReleaseOnCancel).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from nodeagent.client.errors import AlreadyExists, ApiError, Conflict, NotFound
from nodeagent.client.interface import ClientProtocol
from nodeagent.clock import Clock, RealClock
from nodeagent.controllers.objects import deep, micro_time
from nodeagent.machinery.kinds import LEASES

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass
class LeaderElectionConfig:
    namespace: str = "kube-system"
    name: str = "kube-controller-manager"
    identity: str = ""
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


class LeaderElector:
    def __init__(self, client: ClientProtocol, config: LeaderElectionConfig, clock: Clock | None = None) -> None:
        if not config.identity:
            raise ValueError("leader election needs an --identity (unique per instance)")
        self.client = client
        self.cfg = config
        self.clock = clock or RealClock()
        self._observed: tuple[str, str, float] | None = None  # (holder, renewTime, when we saw it)
        self._last_renew = 0.0
        self.is_leader = False

    def _lease_body(self, existing: Obj | None, now: float) -> Obj:
        spec = dict((existing or {}).get("spec") or {})
        transitions = int(spec.get("leaseTransitions") or 0)
        if spec.get("holderIdentity") != self.cfg.identity:
            if spec.get("holderIdentity"):
                transitions += 1
            spec["acquireTime"] = micro_time(now)
        spec.update({"holderIdentity": self.cfg.identity, "leaseDurationSeconds": int(self.cfg.lease_duration),
                     "renewTime": micro_time(now), "leaseTransitions": transitions})
        if existing is not None:
            body = deep(existing)
            body["spec"] = spec
            return body
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.cfg.name, "namespace": self.cfg.namespace}, "spec": spec}

    async def try_acquire_or_renew(self) -> bool:
        now = self.clock.now()
        try:
            lease = await self.client.get(LEASES, self.cfg.name, self.cfg.namespace)
        except NotFound:
            try:
                await self.client.create(LEASES, self._lease_body(None, now))
            except AlreadyExists:
                return False
            self._observed = (self.cfg.identity, micro_time(now), now)
            self._last_renew = now
            return True
        spec = lease.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        renew = str(spec.get("renewTime") or "")
        if self._observed is None or self._observed[:2] != (holder, renew):
            self._observed = (holder, renew, now)
        duration = float(spec.get("leaseDurationSeconds") or self.cfg.lease_duration)
        if holder and holder != self.cfg.identity and now < self._observed[2] + duration:
            return False  # held by someone alive
        try:
            updated = await self.client.update(LEASES, self._lease_body(lease, now))
        except Conflict:
            return False
        self._observed = (self.cfg.identity, str((updated.get("spec") or {}).get("renewTime") or ""), now)
        self._last_renew = now
        return True

    async def acquire(self) -> None:
        """Block until we hold the Lease."""
        log.info("attempting to acquire leader lease lease=%s/%s identity=%s", self.cfg.namespace, self.cfg.name,
                 self.cfg.identity)
        while True:
            try:
                if await self.try_acquire_or_renew():
                    self.is_leader = True
                    log.info("successfully acquired lease lease=%s/%s identity=%s", self.cfg.namespace,
                             self.cfg.name, self.cfg.identity)
                    return
            except ApiError as e:
                log.warning("error acquiring lease error=%s", e)
            await asyncio.sleep(self.cfg.retry_period)

    async def renew_until_lost(self) -> None:
        """Renew every retry_period; return when renewing failed for longer than renew_deadline."""
        while True:
            await asyncio.sleep(self.cfg.retry_period)
            try:
                if await self.try_acquire_or_renew():
                    continue
                log.error("lease taken by another candidate lease=%s/%s", self.cfg.namespace, self.cfg.name)
                self.is_leader = False
                return
            except ApiError as e:
                log.warning("error renewing lease error=%s", e)
            if self.clock.now() - self._last_renew > self.cfg.renew_deadline:
                log.error("failed to renew lease within the renew deadline lease=%s/%s", self.cfg.namespace,
                          self.cfg.name)
                self.is_leader = False
                return

    async def release(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        try:
            lease = await self.client.get(LEASES, self.cfg.name, self.cfg.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.cfg.identity:
                return
            body = deep(lease)
            body["spec"].update({"holderIdentity": "", "leaseDurationSeconds": 1,
                                 "renewTime": micro_time(self.clock.now())})
            await self.client.update(LEASES, body)
            log.info("released lease lease=%s/%s", self.cfg.namespace, self.cfg.name)
        except ApiError as e:
            log.warning("could not release lease error=%s", e)
