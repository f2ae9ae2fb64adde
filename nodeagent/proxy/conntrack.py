"""Stale UDP conntrack entries, deleted after a sync (upstream pkg/proxy/conntrack/cleanup.go).

UDP has no connection teardown: a client that keeps sending to a Service IP keeps hitting the
conntrack entry that DNATs to an endpoint that is gone, and DNS black-holes until the entry times
out. So when a UDP endpoint goes away we delete the entries NATed to it, and when a UDP service
goes from no endpoints to some we delete the entries made while it rejected traffic.
Uses the `conntrack` tool (conntrack-tools) in the caller's network namespace.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterable

from nodeagent.proxy.model import Endpoint, ServicePort, ServicePortName

log = logging.getLogger(__name__)

Runner = Callable[[list[str]], int]


def _run(argv: list[str]) -> int:
    proc = subprocess.run(argv, capture_output=True, text=True)
    # exit 1 with "0 flow entries have been deleted" only means there was nothing to delete
    if proc.returncode not in (0, 1):
        log.warning("conntrack failed argv=%s rc=%d stderr=%s", argv, proc.returncode, proc.stderr.strip())
    return proc.returncode


class ConntrackCleaner:
    def __init__(self, runner: Runner = _run) -> None:
        self.runner = runner

    def clear_service_ip(self, ip: str) -> None:
        self.runner(["conntrack", "-D", "-p", "udp", "--orig-dst", ip])

    def clear_nat(self, orig_dst: str, endpoint_ip: str) -> None:
        self.runner(["conntrack", "-D", "-p", "udp", "--orig-dst", orig_dst, "--dst-nat", endpoint_ip])

    def clear_nodeport_nat(self, node_port: int, endpoint_ip: str) -> None:
        self.runner(["conntrack", "-D", "-p", "udp", "--orig-port-dst", str(node_port), "--dst-nat", endpoint_ip])

    def cleanup(self, services: dict[ServicePortName, ServicePort],
                deleted_service_ips: Iterable[str],
                deleted_endpoints: Iterable[tuple[ServicePortName, Endpoint]],
                newly_served: Iterable[ServicePortName],
                old_services: dict[ServicePortName, ServicePort] | None = None) -> None:
        for ip in sorted(set(deleted_service_ips)):
            self.clear_service_ip(ip)
        for spn, ep in sorted(deleted_endpoints):
            if spn.protocol != "UDP":
                continue
            sp = services.get(spn) or (old_services or {}).get(spn)
            if sp is None:
                continue  # the service IP went too; cleared above
            for ip in (sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips):
                self.clear_nat(ip, ep.ip)
            if sp.node_port:
                self.clear_nodeport_nat(sp.node_port, ep.ip)
        for spn in sorted(newly_served):
            sp = services.get(spn)
            if sp is not None and sp.protocol == "UDP":
                self.clear_service_ip(sp.cluster_ip)
