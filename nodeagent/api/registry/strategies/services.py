"""Services (upstream pkg/registry/core/service/strategy.go and storage/alloc.go): defaults, the
ClusterIP, nodePorts and healthCheckNodePort allocated in one transaction per write, the values a
client leaves out kept, and everything the Service held released when it goes.

Allocation is interleaved with validation as upstream's: the ports are checked before anything is
allocated, the nodePorts are allocated before the health check port, and the external-traffic rules
are validated after allocation. Every reservation goes through the write's AllocationTxn, so the
generic store commits it with the write or reverts it when the write fails, is a dry run or a no-op.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from nodeagent.api import errors
from nodeagent.api import tables as t
from nodeagent.api.allocators import AllocationError, AllocationTxn
from nodeagent.api.registry.options import WriteContext
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import (
    LABEL1035,
    Cause,
    health_check_node_port,
    needs_health_check,
    validate_metadata,
    validate_service_external_traffic,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Row = list[Any]

_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")


def _service_row(o: Obj) -> Row:
    spec, status = o.get("spec") or {}, o.get("status") or {}
    stype = spec.get("type") or "ClusterIP"
    ext = [str(x) for x in spec.get("externalIPs") or []]
    ext += [str(i.get("ip") or i.get("hostname") or "") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
    ext_cell = ",".join(x for x in ext if x) or ("<pending>" if stype == "LoadBalancer" else
                                                 spec.get("externalName", "<none>") if stype == "ExternalName"
                                                 else "<none>")
    ports = []
    for p in spec.get("ports") or []:
        s = f"{p.get('port')}:{p['nodePort']}" if p.get("nodePort") else f"{p.get('port')}"
        ports.append(f"{s}/{p.get('protocol', 'TCP')}")
    sel = spec.get("selector") or {}
    return [t.meta(o).get("name", ""), stype, spec.get("clusterIP") or "<none>", ext_cell,
            ",".join(ports) or "<none>", t.created(o),
            ",".join(f"{k}={v}" for k, v in sorted(sel.items())) or "<none>"]


_SERVICE_COLS: list[t.Column] = [("Name", "string", 0), ("Type", "string", 0), ("Cluster-IP", "string", 0),
                               ("External-IP", "string", 0), ("Port(s)", "string", 0), ("Age", "string", 0),
                               ("Selector", "string", 1)]


def held_ips(spec: Obj) -> set[str]:
    """The ClusterIPs a stored Service holds."""
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return {ip for ip in ips if isinstance(ip, str) and ip and ip != "None"}


def held_node_ports(spec: Obj) -> set[int]:
    """The ports a stored Service holds in the nodePort allocator: its nodePorts and, when it needs
    one, its healthCheckNodePort (upstream releaseAllocatedResources)."""
    held: set[int] = set()
    for p in spec.get("ports") or []:
        if isinstance(p, dict) and p.get("nodePort"):
            try:
                held.add(int(p["nodePort"]))
            except (TypeError, ValueError):
                pass
    if needs_health_check(spec) and health_check_node_port(spec):
        held.add(health_check_node_port(spec))
    return held


def _old_ports_has(old_spec: Obj, node_port: Any) -> bool:
    return any(isinstance(p, dict) and p.get("nodePort") == node_port for p in old_spec.get("ports") or [])


class ServiceStrategy(Strategy):
    name_rule = LABEL1035
    printer = t.Printer(tuple(_SERVICE_COLS), _service_row)

    def _txn(self, ctx: WriteContext) -> AllocationTxn:
        txn = AllocationTxn(self.shared.cluster_ips, self.shared.node_ports)
        ctx.add(txn)
        return txn

    async def check_create(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        causes = validate_metadata(obj.get("metadata"), self.name_rule)
        if causes:
            return causes  # nothing is allocated for an object that is invalid anyway
        obj["status"] = {"loadBalancer": {}}
        return await self._prepare(obj, None, self._txn(ctx), ctx.allow_reserved)

    async def check_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        self.prepare_for_update(new, old, ctx)
        raw = new.get("metadata")
        meta: Obj = raw if isinstance(raw, dict) else {}
        causes = validate_metadata({**meta, "name": (old.get("metadata") or {}).get("name", "")}, self.name_rule)
        txn = self._txn(ctx)
        causes += await self._prepare(new, old, txn, False)
        if not causes:
            old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
            txn.free_on_commit(held_ips(old_spec) - held_ips(new_spec),
                               held_node_ports(old_spec) - held_node_ports(new_spec))
        return causes

    async def _prepare(self, svc: Obj, old: Obj | None, txn: AllocationTxn, allow_reserved: bool) -> list[Cause]:
        """Default, validate and allocate."""
        spec = svc.get("spec")
        if not isinstance(spec, dict):
            spec = svc["spec"] = {}
        causes: list[Cause] = []
        stype = spec.setdefault("type", "ClusterIP")
        if stype not in _TYPES:
            return [("spec.type", "FieldValueNotSupported",
                     f'Unsupported value: "{stype}": supported values: "ClusterIP", "ExternalName", '
                     '"LoadBalancer", "NodePort"')]
        spec.setdefault("sessionAffinity", "None")
        old_spec = (old or {}).get("spec") or {}
        ports = spec.get("ports")
        if ports is None:
            ports = spec["ports"] = []
        if not isinstance(ports, list):
            return [("spec.ports", "FieldValueInvalid", "Invalid value: must be a list")]
        causes += self._port_causes(stype, spec, ports)
        if causes:
            return causes
        if stype == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
            causes += self._drop_node_ports(stype, spec, ports, old_spec)
            if not spec.get("externalName"):
                causes.append(("spec.externalName", "FieldValueRequired", "Required value"))
            return causes + await self._health_check_node_port(spec, old, txn)
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        # Keep allocated values the client left out (upstream patchAllocatedValues).
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
            spec["clusterIPs"] = old_spec.get("clusterIPs") or [old_spec["clusterIP"]]
        ip = spec.get("clusterIP")
        if old is not None and old_spec.get("clusterIP") and ip != old_spec.get("clusterIP"):
            return [("spec.clusterIPs[0]", "FieldValueInvalid",
                     f'Invalid value: "{ip}": may not change once set')]
        if ip == "None":
            spec["clusterIPs"] = ["None"]
        elif old is None or ip != old_spec.get("clusterIP"):
            try:
                ip = await txn.ip(ip, allow_reserved=allow_reserved)
            except AllocationError as e:
                return [("spec.clusterIPs", "FieldValueInvalid", f"Invalid value: {json.dumps([ip or ''])}: {e}")]
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        if stype in ("NodePort", "LoadBalancer"):
            causes += await self._node_ports(spec, ports, old_spec, txn)
        else:
            causes += self._drop_node_ports(stype, spec, ports, old_spec)
        if causes:
            return causes  # upstream fails on the nodePorts before it allocates the health check port
        return await self._health_check_node_port(spec, old, txn)

    @staticmethod
    def _port_causes(stype: str, spec: Obj, ports: list[Any]) -> list[Cause]:
        causes: list[Cause] = []
        if stype != "ExternalName" and not ports and spec.get("clusterIP") != "None":
            causes.append(("spec.ports", "FieldValueRequired", "Required value"))
        names: set[str] = set()
        for i, p in enumerate(ports):
            if not isinstance(p, dict):
                causes.append((f"spec.ports[{i}]", "FieldValueInvalid", "Invalid value: must be an object"))
                continue
            p.setdefault("protocol", "TCP")
            port = p.get("port")
            if not isinstance(port, int) or not 0 < port < 65536:
                causes.append((f"spec.ports[{i}].port", "FieldValueInvalid",
                               f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
                continue
            p.setdefault("targetPort", port)
            if len(ports) > 1 and not p.get("name"):
                causes.append((f"spec.ports[{i}].name", "FieldValueRequired", "Required value"))
            if p.get("name"):
                if p["name"] in names:
                    causes.append((f"spec.ports[{i}].name", "FieldValueDuplicate", f'Duplicate value: "{p["name"]}"'))
                names.add(p["name"])
        return causes

    @staticmethod
    def _drop_node_ports(stype: str, spec: Obj, ports: list[Obj], old_spec: Obj) -> list[Cause]:
        """A type without node ports keeps none (upstream dropTypeDependentFields); the ones the old
        object held are released when the write commits."""
        causes: list[Cause] = []
        spec.pop("externalTrafficPolicy", None)
        for p in ports:
            if p.get("nodePort") and not _old_ports_has(old_spec, p.get("nodePort")):
                causes.append(("spec.ports[].nodePort", "FieldValueForbidden",
                               f"Forbidden: may not be used when `type` is '{stype}'"))
            p.pop("nodePort", None)
        return causes

    @staticmethod
    async def _node_ports(spec: Obj, ports: list[Obj], old_spec: Obj, txn: AllocationTxn) -> list[Cause]:
        causes: list[Cause] = []
        if spec.get("externalTrafficPolicy") in (None, ""):
            spec["externalTrafficPolicy"] = "Cluster"  # upstream SetDefaults_Service
        old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort")
                     for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        for i, p in enumerate(ports):
            want = p.get("nodePort") or old_ports.get((p["port"], p["protocol"]))
            if want and want == old_ports.get((p["port"], p["protocol"])):
                p["nodePort"] = want
                continue
            try:
                p["nodePort"] = await txn.port(int(want) if want else None)
            except (AllocationError, ValueError) as e:
                causes.append((f"spec.ports[{i}].nodePort", "FieldValueInvalid", f"Invalid value: {want}: {e}"))
        return causes

    @staticmethod
    async def _health_check_node_port(spec: Obj, old: Obj | None, txn: AllocationTxn) -> list[Cause]:
        """Allocate, keep, or wipe spec.healthCheckNodePort, then validate it (upstream alloc.go
        txnAllocNodePorts/updateHealthCheckNodePort, storage.go patchAllocatedValues, strategy.go
        dropTypeDependentFields). It comes from the nodePort range and allocator; the old port is
        released when the write commits, a new one reverted when it fails."""
        old_spec = (old or {}).get("spec") or {}
        old_port = health_check_node_port(old_spec) if needs_health_check(old_spec) else 0
        raw = spec.get("healthCheckNodePort")
        if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool)):
            return validate_service_external_traffic(spec, old_spec if old is not None else None)
        port = health_check_node_port(spec)
        if needs_health_check(spec):
            if old_port:
                if port == 0:
                    spec["healthCheckNodePort"] = old_port  # the client left the allocated value out
            else:
                try:
                    spec["healthCheckNodePort"] = await txn.port(port or None)
                except AllocationError as e:
                    # Upstream answers an allocation failure here with an InternalError (500), unlike
                    # a taken nodePort (422): alloc.go wraps allocHealthCheckNodePort's error so.
                    why = (f"failed to allocate requested HealthCheck NodePort {port}: {e}" if port
                           else f"failed to allocate a HealthCheck NodePort 0: {e}")
                    raise errors.ApiError(500, "InternalError", f"Internal error occurred: {why}",
                                          causes=[{"message": why}]) from None
        elif old_port and port == old_port:
            # No longer needed and the client did not change it: wipe it (released on commit).
            spec.pop("healthCheckNodePort", None)
        elif port == 0:
            spec.pop("healthCheckNodePort", None)  # a Go int32 zero: JSON omits it
        return validate_service_external_traffic(spec, old_spec if old is not None else None)

    async def after_delete(self, obj: Obj) -> None:
        spec = obj.get("spec") or {}
        ips = self.shared.cluster_ips
        for ip in held_ips(spec):
            if ip != ips.first:
                await ips.release(ip)
        for port in held_node_ports(spec):
            await self.shared.node_ports.release(port)

    async def restore(self, objs: Iterable[Obj]) -> None:
        """Reserve what the stored Services hold (the memory bitmaps start empty)."""
        for svc in objs:
            await self._reserve(svc)

    async def _reserve(self, svc: Obj) -> None:
        spec = svc.get("spec") or {}
        meta = svc.get("metadata") or {}
        ips = self.shared.cluster_ips
        for ip in held_ips(spec):
            if ips.contains(ip):
                try:
                    await ips.allocate(ip)
                except AllocationError:
                    if ip != ips.first:
                        log.warning("msg=\"duplicate ClusterIP in store\" ip=%s service=%s", ip, meta.get("name"))
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and p.get("nodePort"):
                try:
                    await self.shared.node_ports.allocate(int(p["nodePort"]))
                except (AllocationError, ValueError):
                    pass
        # The healthCheckNodePort comes from the same range: without it here, a restart would hand
        # the port out again as somebody's nodePort.
        hc = health_check_node_port(spec) if needs_health_check(spec) else 0
        if hc:
            try:
                await self.shared.node_ports.allocate(hc)
            except AllocationError as e:
                log.warning("msg=\"healthCheckNodePort in store not reserved\" port=%d service=%s/%s error=\"%s\"",
                            hc, meta.get("namespace"), meta.get("name"), e)
