"""What a back end (iptables, nftables, IPVS) gets from the shared sync loop, and must provide.

Back ends only render and apply (ARCHITECTURE.md practice 5): they receive the applied service and
endpoint maps plus the set of Services that changed since their last successful sync, and decide
themselves whether they can do a partial sync or must redo everything.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Protocol

from nodeagent.proxy.model import Endpoint, NodeInfo, ServicePort, ServicePortName


@dataclass
class ProxyState:
    services: dict[ServicePortName, ServicePort]
    endpoints: dict[ServicePortName, tuple[Endpoint, ...]]
    node: NodeInfo
    cluster_cidr: str | None = None
    # --nodeport-addresses: CIDRs whose local addresses accept NodePorts (empty: every local address)
    nodeport_addresses: tuple[str, ...] = ()
    _by_service: dict[str, list[ServicePortName]] | None = field(default=None, repr=False)

    def ports_of(self, svc: str) -> list[ServicePortName]:
        """The service ports of ns/name (the ServiceMap's index, or one built here)."""
        if self._by_service is None:
            idx: dict[str, list[ServicePortName]] = defaultdict(list)
            for spn in self.services:
                idx[spn.service].append(spn)
            self._by_service = dict(idx)
        return self._by_service.get(svc, [])


@dataclass
class SyncResult:
    full: bool  # True when the whole rule set was rewritten


class Backend(Protocol):
    name: str

    def sync(self, state: ProxyState, changed: set[str] | None) -> SyncResult:
        """Bring the kernel to `state`. `changed` holds ns/name of Services changed since the last
        successful sync, or None to force a full sync. Raises on failure; the caller then passes
        None next time."""
        ...

    def cleanup(self) -> None:
        """Remove everything this back end ever created (idempotent)."""
        ...
