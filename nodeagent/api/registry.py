"""Object semantics over the Store: what create, update, patch, delete, list and watch mean.

This is upstream's generic registry (k8s.io/apiserver/pkg/registry/generic/registry/store.go) cut
to what nodeagent serves: metadata bookkeeping (uid, creationTimestamp, generation on spec changes),
optimistic concurrency (409 on a stale resourceVersion, retried internally when the client gave
none), defaulting and validation per kind, the status/scale/binding subresources, graceful pod
deletion, finalizers, and list/watch with selectors. HTTP is elsewhere (server.py).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import datetime
import json
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from nodeagent.api import defaults, errors
from nodeagent.api.allocators import AllocationError, ClusterIPAllocator, NodePortAllocator
from nodeagent.api.store import (
    Entry,
    Event,
    Expired,
    KeyExists,
    KeyNotFound,
    RevisionConflict,
    Store,
    WatchStream,
)
from nodeagent.api.validation import (
    LABEL,
    LABEL1035,
    PATH_SEGMENT,
    SUBDOMAIN,
    Cause,
    health_check_node_port,
    needs_health_check,
    validate_metadata,
    validate_service_external_traffic,
)
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.patch import PatchError, json_patch, merge_patch, strategic_merge
from nodeagent.machinery.selectors import (
    FieldRequirement,
    Requirement,
    fields_match,
    labels_match,
    selector_from_match_labels,
)

log = logging.getLogger(__name__)
Obj = dict[str, Any]

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")

# Kinds whose metadata.generation counts spec changes (upstream strategies that bump it).
_GENERATION = {kinds.DEPLOYMENTS, kinds.REPLICASETS, kinds.DAEMONSETS, kinds.JOBS}
# Kinds a PUT may create (upstream AllowCreateOnUpdate).
_CREATE_ON_UPDATE = {kinds.ENDPOINTS, kinds.EVENTS, kinds.LEASES, kinds.ENDPOINTSLICES}
# Kinds whose status is only written through the status subresource.
_STATUS_SUBRESOURCE = {k for k in kinds.KINDS if "status" in k.subresources}
_NAME_RULES = {kinds.NAMESPACES: LABEL, kinds.SERVICES: LABEL1035, kinds.EVENTS: PATH_SEGMENT}


def resource_key(kind: Kind) -> str:
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def now_rfc3339(offset: float = 0.0) -> str:
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def copy_obj(e: Entry) -> Obj:
    """A private deep copy of a stored object (json round trip is the fastest deep copy here)."""
    return json.loads(e.raw)


@dataclass
class DeleteOptions:
    grace_period_seconds: int | None = None
    propagation_policy: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    dry_run: bool = False


@dataclass
class ListOptions:
    label_selector: list[Requirement] = field(default_factory=list)
    field_selector: list[FieldRequirement] = field(default_factory=list)
    limit: int = 0
    continue_token: str | None = None
    resource_version: str | None = None
    resource_version_match: str | None = None


@dataclass
class ListResult:
    items: list[Entry]
    rev: int
    continue_token: str | None = None
    remaining: int | None = None


@dataclass
class WatchEvent:
    type: str  # ADDED MODIFIED DELETED BOOKMARK ERROR
    obj: Obj
    raw: bytes | None = None  # pre-encoded obj when it came straight from the store
    line: bytes | None = None  # the whole encoded watch line, shared between watchers


def _meta(obj: Obj) -> Obj:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def _ns_name(e: Entry) -> str:
    return f"{e.namespace}/{e.name}"


class Registry:
    def __init__(self, store: Store, *, service_cidr: str = "10.96.0.0/12",
                 node_port_range: str = "30000-32767") -> None:
        self.store = store
        self.cluster_ips = ClusterIPAllocator(service_cidr)
        self.node_ports = NodePortAllocator(node_port_range)
        self._ns_task: asyncio.Task[None] | None = None
        self._ttl_task: asyncio.Task[None] | None = None
        self._ns_wakeup = asyncio.Event()
        self.event_ttl = 3600.0  # upstream --event-ttl 1h: events are not kept forever
        self.default_toleration_seconds: dict[str, int] = dict(defaults.DEFAULT_TOLERATION_SECONDS)

    # --- start-up --------------------------------------------------------------------------
    async def start(self, *, advertise: tuple[str, int] | None = None, secure_port: int = 6443) -> None:
        services, _ = await self.store.list(resource_key(kinds.SERVICES), None)
        for e in services:
            self._reserve_service(e.obj)
        for ns in DEFAULT_NAMESPACES:
            if await self.store.get("namespaces", "", ns) is None:
                await self.create(kinds.NAMESPACES, None, {"metadata": {"name": ns}})
        if await self.store.get("services", "default", "kubernetes") is None:
            await self.create(kinds.SERVICES, "default", {
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": self.cluster_ips.first,
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": secure_port}]},
            }, allow_reserved=True)
        if advertise:
            await self._reconcile_kubernetes_endpoints(*advertise)
        self._ns_task = asyncio.create_task(self._namespace_finalizer())
        if self.event_ttl > 0:
            self._ttl_task = asyncio.create_task(self._expire_events_loop())

    async def close(self) -> None:
        for task in (self._ns_task, self._ttl_task):
            if task:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass

    async def expire_events(self, now: datetime.datetime | None = None) -> int:
        """Delete events not updated for event_ttl seconds (etcd leases do this upstream)."""
        now = now or datetime.datetime.now(datetime.UTC)
        cutoff = (now - datetime.timedelta(seconds=self.event_ttl)).strftime("%Y-%m-%dT%H:%M:%SZ")
        events, _ = await self.store.list("events", None)
        n = 0
        for e in events:
            o = e.obj
            last = o.get("lastTimestamp") or o.get("eventTime") or (o.get("metadata") or {}).get("creationTimestamp")
            # RFC 3339 UTC timestamps compare as strings (second precision is enough here).
            if isinstance(last, str) and last[:19] < cutoff[:19]:
                try:
                    await self.store.delete("events", e.namespace, e.name, e.rev)
                    n += 1
                except (RevisionConflict, KeyNotFound):
                    pass
        return n

    async def _expire_events_loop(self) -> None:
        while True:
            await asyncio.sleep(min(60.0, self.event_ttl))
            try:
                n = await self.expire_events()
                if n:
                    log.info("msg=\"expired events\" count=%d ttl=%s", n, self.event_ttl)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("msg=\"event expiry failed\"")

    async def _reconcile_kubernetes_endpoints(self, ip: str, port: int) -> None:
        """The `kubernetes` Service's endpoints point at the advertise address (upstream's
        endpoint reconciler), so pods reach the apiserver at 10.96.0.1:443."""
        ep = {"metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
              "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
        es = {"metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes",
                                                            "endpointslice.kubernetes.io/managed-by":
                                                                "endpointslice-controller.k8s.io"}},
              "addressType": "IPv4",
              "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
              "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
        for kind, body in ((kinds.ENDPOINTS, ep), (kinds.ENDPOINTSLICES, es)):
            cur = await self.store.get(resource_key(kind), "default", "kubernetes")
            if cur is None:
                await self.create(kind, "default", body)
            else:
                new = copy_obj(cur)
                for k, v in body.items():
                    if k != "metadata":
                        new[k] = v
                if new != cur.obj:
                    await self.update(kind, "default", "kubernetes", new)

    # --- helpers ---------------------------------------------------------------------------
    def _ns_for(self, kind: Kind, namespace: str | None) -> str:
        return (namespace or "") if kind.namespaced else ""

    async def _get_entry(self, kind: Kind, namespace: str | None, name: str) -> Entry:
        e = await self.store.get(resource_key(kind), self._ns_for(kind, namespace), name)
        if e is None:
            raise errors.not_found(kind.plural, kind.group, name)
        return e

    async def _check_namespace(self, kind: Kind, namespace: str | None, creating: bool) -> None:
        if not kind.namespaced:
            return
        if not namespace:
            raise errors.bad_request(f"the namespace of the {kind.kind} is required: give it in metadata.namespace or "
                                     "in the URL")
        ns = await self.store.get("namespaces", "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if creating and (ns.obj.get("metadata") or {}).get("deletionTimestamp"):
            raise errors.ApiError(403, "Forbidden",
                                  f'{kind.plural} "{"?"}" is forbidden: unable to create new content in namespace '
                                  f"{namespace} because it is being terminated", kind=kind.plural)

    def _validate_common(self, kind: Kind, obj: Obj) -> list[Cause]:
        return validate_metadata(obj.get("metadata"), _NAME_RULES.get(kind, SUBDOMAIN))

    def _prepare_create(self, kind: Kind, obj: Obj) -> list[Cause]:
        uid = _meta(obj).get("uid", "")
        if kind is kinds.PODS:
            return defaults.prepare_pod_create(obj, self.default_toleration_seconds)
        if kind is kinds.DEPLOYMENTS:
            obj["status"] = {}
            return defaults.prepare_deployment(obj)
        if kind is kinds.REPLICASETS:
            obj["status"] = {"replicas": 0}
            return defaults.prepare_replicaset(obj)
        if kind is kinds.DAEMONSETS:
            obj["status"] = {"currentNumberScheduled": 0, "desiredNumberScheduled": 0,
                             "numberMisscheduled": 0, "numberReady": 0}
            return defaults.prepare_daemonset(obj)
        if kind is kinds.JOBS:
            obj["status"] = {}
            return defaults.prepare_job(obj, uid)
        if kind is kinds.NAMESPACES:
            return defaults.prepare_namespace(obj)
        if kind is kinds.SECRETS:
            return defaults.prepare_secret(obj) + defaults.prepare_secret_data(obj)
        if kind is kinds.CONFIGMAPS:
            return defaults.validate_data_maps(obj)
        if kind is kinds.SERVICES:
            obj["status"] = {"loadBalancer": {}}
            return self._prepare_service(obj, None)
        return []

    # --- services --------------------------------------------------------------------------
    def _reserve_service(self, svc: Obj) -> None:
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip and ip != "None" and self.cluster_ips.contains(ip):
                try:
                    self.cluster_ips.allocate_specific(ip)
                except AllocationError:
                    if ip != self.cluster_ips.first:
                        log.warning("msg=\"duplicate ClusterIP in store\" ip=%s service=%s", ip,
                                    (svc.get("metadata") or {}).get("name"))
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and p.get("nodePort"):
                try:
                    self.node_ports.allocate_specific(int(p["nodePort"]))
                except (AllocationError, ValueError):
                    pass
        # The healthCheckNodePort comes from the same range: without it here, a restart would hand
        # the port out again as somebody's nodePort.
        hc = health_check_node_port(spec) if needs_health_check(spec) else 0
        if hc:
            try:
                self.node_ports.allocate_specific(hc)
            except AllocationError as e:
                log.warning("msg=\"healthCheckNodePort in store not reserved\" port=%d service=%s/%s error=\"%s\"", hc,
                            (svc.get("metadata") or {}).get("namespace"), (svc.get("metadata") or {}).get("name"), e)

    def _release_service(self, svc: Obj) -> None:
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip and ip != "None" and ip != self.cluster_ips.first:
                self.cluster_ips.release(ip)
        for port in _held_node_ports(spec):
            self.node_ports.release(port)

    def _prepare_service(self, svc: Obj, old: Obj | None, allow_reserved: bool = False) -> list[Cause]:
        """Default and allocate. Allocations made here are recorded in svc["__allocated"] so a
        failed write can roll them back; the caller pops it."""
        spec = svc.get("spec")
        if not isinstance(spec, dict):
            spec = svc["spec"] = {}
        causes: list[Cause] = []
        allocated: dict[str, Any] = {"ips": [], "ports": []}
        svc["__allocated"] = allocated
        stype = spec.setdefault("type", "ClusterIP")
        if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
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
        if causes:
            return causes
        if stype == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
            if not spec.get("externalName"):
                causes.append(("spec.externalName", "FieldValueRequired", "Required value"))
            return causes + self._health_check_node_port(svc, spec, old)
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
                if ip:
                    if ip == self.cluster_ips.first and not allow_reserved:
                        raise AllocationError(f"failed to allocate IP {ip}: provided IP is already allocated")
                    self.cluster_ips.allocate_specific(ip)
                else:
                    ip = self.cluster_ips.allocate_next()
                allocated["ips"].append(ip)
            except AllocationError as e:
                return [("spec.clusterIPs", "FieldValueInvalid", f"Invalid value: {json.dumps([ip or ''])}: {e}")]
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        if stype in ("NodePort", "LoadBalancer"):
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
                    if want:
                        self.node_ports.allocate_specific(int(want))
                    else:
                        want = self.node_ports.allocate_next()
                    allocated["ports"].append(want)
                    p["nodePort"] = want
                except (AllocationError, ValueError) as e:
                    causes.append((f"spec.ports[{i}].nodePort", "FieldValueInvalid", f"Invalid value: {want}: {e}"))
        else:
            spec.pop("externalTrafficPolicy", None)
            for p in ports:
                if p.get("nodePort") and not old_ports_has(old_spec, p.get("nodePort")):
                    causes.append(("spec.ports[].nodePort", "FieldValueForbidden",
                                   f"Forbidden: may not be used when `type` is '{stype}'"))
                p.pop("nodePort", None)
        if causes:
            return causes  # upstream fails on the nodePorts before it allocates the health check port
        return self._health_check_node_port(svc, spec, old)

    def _health_check_node_port(self, svc: Obj, spec: Obj, old: Obj | None) -> list[Cause]:
        """Allocate, keep, or wipe spec.healthCheckNodePort, then validate it (upstream alloc.go
        txnAllocNodePorts/updateHealthCheckNodePort, storage.go patchAllocatedValues, strategy.go
        dropTypeDependentFields). It comes from the nodePort range and allocator; the old port is
        released only after the write (_after_service_update), a new one rolled back on failure."""
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
                    if port:
                        self.node_ports.allocate_specific(port)
                    else:
                        port = self.node_ports.allocate_next()
                except AllocationError as e:
                    # Upstream answers an allocation failure here with an InternalError (500), unlike
                    # a taken nodePort (422): alloc.go wraps allocHealthCheckNodePort's error so.
                    self._rollback_allocations(svc)
                    why = (f"failed to allocate requested HealthCheck NodePort {port}: {e}" if port
                           else f"failed to allocate a HealthCheck NodePort 0: {e}")
                    raise errors.ApiError(500, "InternalError", f"Internal error occurred: {why}",
                                          causes=[{"message": why}]) from None
                svc["__allocated"]["ports"].append(port)
                spec["healthCheckNodePort"] = port
        elif old_port and port == old_port:
            # No longer needed and the client did not change it: wipe it (released after the write).
            spec.pop("healthCheckNodePort", None)
        elif port == 0:
            spec.pop("healthCheckNodePort", None)  # a Go int32 zero: JSON omits it
        return validate_service_external_traffic(spec, old_spec if old is not None else None)

    def _rollback_allocations(self, svc: Obj) -> None:
        alloc = svc.pop("__allocated", None) or {}
        for ip in alloc.get("ips", []):
            self.cluster_ips.release(ip)
        for port in alloc.get("ports", []):
            self.node_ports.release(port)

    def _after_service_update(self, old: Obj, new: Obj) -> None:
        """Release what the old Service held and the new one no longer does."""
        keep = _held_node_ports(new.get("spec") or {})
        for port in _held_node_ports(old.get("spec") or {}) - keep:
            self.node_ports.release(port)

    # --- create ----------------------------------------------------------------------------
    async def create(self, kind: Kind, namespace: str | None, obj: Obj, *, dry_run: bool = False,
                     allow_reserved: bool = False) -> Obj:
        _check_shape(kind, obj)
        meta = _meta(obj)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        ns = self._ns_for(kind, namespace or meta.get("namespace"))
        if kind.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        gen_name = meta.get("generateName")
        if not meta.get("name") and isinstance(gen_name, str) and gen_name:
            meta["name"] = gen_name[:58] + _random_suffix()
        await self._check_namespace(kind, ns, creating=True)
        for k in ("resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(k, None)
        managed = meta.pop("__managedFields", None)
        if managed is not None:
            meta["managedFields"] = managed
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if kind in _GENERATION:
            meta["generation"] = 1
        causes = self._validate_common(kind, obj)
        if kind is kinds.SERVICES:
            if not causes:
                obj["status"] = {"loadBalancer": {}}
                causes += self._prepare_service(obj, None, allow_reserved)
        else:
            causes += self._prepare_create(kind, obj)
        name = meta["name"] if isinstance(meta.get("name"), str) else ""
        if causes:
            if kind is kinds.SERVICES:
                self._rollback_allocations(obj)
            raise errors.invalid(kind.kind, kind.group, name or "", causes)
        if kind is kinds.SERVICES:
            alloc = obj.pop("__allocated", None)
        if dry_run:
            if kind is kinds.SERVICES:
                obj["__allocated"] = alloc
                self._rollback_allocations(obj)
            return obj
        try:
            e = await self.store.create(resource_key(kind), ns, name, obj)
        except Exception as err:
            # AlreadyExists or a storage failure: nothing stays allocated. Not on cancellation: the
            # store may already hold the object (its commit is shielded), and with it the ports.
            if kind is kinds.SERVICES:
                obj["__allocated"] = alloc
                self._rollback_allocations(obj)
            if isinstance(err, KeyExists):
                raise errors.already_exists(kind.plural, kind.group, name) from None
            raise
        return e.obj

    # --- update ----------------------------------------------------------------------------
    async def guaranteed_update(self, kind: Kind, namespace: str | None, name: str,
                                mutate: Callable[[Obj, Entry], Awaitable[Obj] | Obj], *,
                                precondition_rv: str | None = None, subresource: str | None = None,
                                dry_run: bool = False, create_obj: Obj | None = None) -> tuple[Obj, bool]:
        """Read, mutate a copy, write with the read revision as precondition; retry on conflict
        unless the client set a resourceVersion precondition (then 409). Returns (obj, created)."""
        ns = self._ns_for(kind, namespace)
        for _attempt in range(20):
            cur = await self.store.get(resource_key(kind), ns, name)
            if cur is None:
                if create_obj is not None and subresource is None:
                    return await self.create(kind, namespace, create_obj, dry_run=dry_run), True
                raise errors.not_found(kind.plural, kind.group, name)
            if precondition_rv and precondition_rv != str(cur.rev):
                raise errors.conflict(kind.plural, kind.group, name)
            res = mutate(copy_obj(cur), cur)
            new = await res if asyncio.iscoroutine(res) else res
            assert isinstance(new, dict)
            try:
                new = self._prepare_update(kind, cur.obj, new, subresource)
            except Exception:
                if kind is kinds.SERVICES:
                    self._rollback_allocations(new)  # a check after the allocation failed
                raise
            alloc = new.pop("__allocated", None)
            if new == cur.obj or dry_run:
                # Upstream skips the write for a no-op update and returns the stored object.
                if alloc:
                    new["__allocated"] = alloc
                    self._rollback_allocations(new)
                return (cur.obj if new == cur.obj else new), False
            meta = new["metadata"]
            try:
                if meta.get("deletionTimestamp") and not meta.get("finalizers") and \
                        self._deletion_complete(kind, new):
                    e = await self.store.delete(resource_key(kind), ns, name, cur.rev)
                    if alloc:  # the object is gone: what this update allocated is held by nobody
                        new["__allocated"] = alloc
                        self._rollback_allocations(new)
                    self._on_deleted(kind, e.obj)
                    return e.obj, False
                e = await self.store.update(resource_key(kind), ns, name, new, cur.rev)
            except Exception as err:
                # A conflict, the object deleted meanwhile (retried, then 404) or a storage failure:
                # the write did not happen, so neither may the allocations made for it. (Not on
                # cancellation: the shielded commit may still store the object holding them.)
                if alloc:
                    new["__allocated"] = alloc
                    self._rollback_allocations(new)
                if isinstance(err, KeyNotFound):
                    continue
                if not isinstance(err, RevisionConflict):
                    raise
                if precondition_rv:
                    raise errors.conflict(kind.plural, kind.group, name) from None
                continue
            if kind is kinds.SERVICES:
                self._after_service_update(cur.obj, e.obj)
            return e.obj, False
        raise errors.conflict(kind.plural, kind.group, name, "too many concurrent writers, try again")

    def _deletion_complete(self, kind: Kind, obj: Obj) -> bool:
        """An object marked for deletion whose last finalizer is gone is deleted by the update
        (upstream ShouldDeleteDuringUpdate); a pod bound to a node also waits for the kubelet to
        confirm with a zero-grace delete, so that watchers see the final status it wrote first."""
        if kind is kinds.PODS:
            grace = (obj.get("metadata") or {}).get("deletionGracePeriodSeconds")
            return grace == 0 or not (obj.get("spec") or {}).get("nodeName")
        return True

    def _prepare_update(self, kind: Kind, old: Obj, new: Obj, subresource: str | None) -> Obj:
        """Apply the strategy: keep what the client may not change, default, validate, bump
        generation. Raises ApiError 422/400."""
        if not isinstance(new, dict):
            raise errors.bad_request("the object must be a JSON object")
        _check_shape(kind, new)
        old_meta = old.get("metadata") or {}
        name = old_meta.get("name", "")
        if subresource == "status":
            result = json.loads(json.dumps(old))
            result["status"] = new.get("status") if new.get("status") is not None else {}
            if kind is kinds.NODES or kind is kinds.NAMESPACES:
                pass
            new = result
        else:
            new_meta = _meta(new)
            if new_meta.get("name") not in (None, name):
                raise errors.bad_request(f'the name of the object ({new_meta.get("name")}) does not match the name '
                                         f"on the URL ({name})")
            if kind in _STATUS_SUBRESOURCE and kind is not kinds.NAMESPACES:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if kind is kinds.NAMESPACES:
                new["status"] = old.get("status")
            causes = self._validate_common(kind, {**new, "metadata": {**new_meta, "name": name}})
            if kind is kinds.PODS:
                if isinstance(new.get("spec"), dict):
                    defaults.default_pod_admission(new["spec"], self.default_toleration_seconds)
                causes += defaults.validate_pod_update(old, new)
            elif kind is kinds.SERVICES:
                causes += self._prepare_service(new, old)
            elif kind in (kinds.DEPLOYMENTS, kinds.REPLICASETS, kinds.DAEMONSETS):
                status = new.get("status")
                causes += self._prepare_create(kind, new)
                if status is not None:
                    new["status"] = status
                else:
                    new.pop("status", None)
                if (new.get("spec") or {}).get("selector") != (old.get("spec") or {}).get("selector"):
                    causes.append(("spec.selector", "FieldValueInvalid", "Invalid value: field is immutable"))
            elif kind is kinds.JOBS:
                status = new.get("status")
                causes += defaults.prepare_job(new, old_meta.get("uid", ""))
                new["status"] = status if status is not None else {}
            elif kind is kinds.SECRETS:
                new.setdefault("type", "Opaque")
                causes += defaults.prepare_secret_data(new)
                if new.get("type") != old.get("type"):
                    causes.append(("type", "FieldValueInvalid", "Invalid value: field is immutable"))
            elif kind is kinds.CONFIGMAPS:
                causes += defaults.validate_data_maps(new)
            if causes:
                if kind is kinds.SERVICES:
                    self._rollback_allocations(new)
                raise errors.invalid(kind.kind, kind.group, name, causes)
        meta = _meta(new)
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        meta["name"] = name
        if kind.namespaced:
            meta["namespace"] = old_meta.get("namespace", "")
        else:
            meta.pop("namespace", None)
        meta["resourceVersion"] = old_meta.get("resourceVersion")
        meta.pop("selfLink", None)
        # managedFields are written only by server-side apply; other writes keep what was there.
        managed = meta.pop("__managedFields", None)
        meta.pop("managedFields", None)
        if managed is None:
            managed = old_meta.get("managedFields")
        if managed:
            meta["managedFields"] = managed
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        if subresource is None and old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid(kind.kind, kind.group, name, [(
                    "metadata.finalizers", "FieldValueForbidden",
                    f"Forbidden: no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers {sorted(added)}")])
        if kind in _GENERATION and subresource is None:
            if _spec_of(new) != _spec_of(old):
                meta["generation"] = int(old_meta.get("generation") or 1) + 1
        return new

    async def update(self, kind: Kind, namespace: str | None, name: str, body: Obj, *,
                     subresource: str | None = None, dry_run: bool = False) -> tuple[Obj, bool]:
        if not isinstance(body, dict):
            raise errors.bad_request("the object must be a JSON object")
        body = json.loads(json.dumps(body))  # private copy: the strategy edits it in place
        meta = _meta(body)
        rv = meta.get("resourceVersion") or None
        if kind.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on "
                                     "the request")
        create_obj = None
        if kind in _CREATE_ON_UPDATE and not rv:
            create_obj = json.loads(json.dumps(body))
            _meta(create_obj).setdefault("name", name)
        return await self.guaranteed_update(kind, namespace, name, lambda _cur, _e: body, precondition_rv=rv,
                                            subresource=subresource, dry_run=dry_run, create_obj=create_obj)

    async def patch(self, kind: Kind, namespace: str | None, name: str, patch_type: str, patch: Any, *,
                    subresource: str | None = None, dry_run: bool = False) -> Obj:
        rv: str | None = None
        if isinstance(patch, dict):
            prv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch.get("metadata"), dict) \
                else None
            rv = str(prv) if prv else None

        def apply(cur: Obj, _e: Entry) -> Obj:
            try:
                if patch_type == "json":
                    out = json_patch(cur, patch)
                elif patch_type == "strategic":
                    out = strategic_merge(cur, patch)
                else:
                    out = merge_patch(cur, patch)
            except PatchError as e:
                if e.malformed:
                    raise errors.bad_request(str(e)) from None
                raise errors.ApiError(422, "Invalid", f"the server rejected our request due to an error in our "
                                                      f"request: {e}") from None
            if not isinstance(out, dict):
                raise errors.bad_request("the patched object is not a JSON object")
            if patch_type == "json":
                # A json-patch that sets metadata.resourceVersion is a precondition too.
                prv = (out.get("metadata") or {}).get("resourceVersion")
                if prv and prv != cur["metadata"].get("resourceVersion"):
                    raise errors.conflict(kind.plural, kind.group, name)
            return out

        obj, _ = await self.guaranteed_update(kind, namespace, name, apply, precondition_rv=rv,
                                              subresource=subresource, dry_run=dry_run)
        return obj

    async def server_side_apply(self, kind: Kind, namespace: str | None, name: str, config: Obj, manager: str, *,
                                dry_run: bool = False) -> tuple[Obj, bool]:
        """PATCH application/apply-patch+yaml (apply.py: simplified, always forcing conflicts)."""
        from nodeagent.api.apply import apply

        cmeta = _meta(config)
        if cmeta.get("name") not in (None, name):
            raise errors.bad_request(f'the name of the object ({cmeta.get("name")}) does not match the name on the '
                                     f"URL ({name})")
        cmeta["name"] = name
        ns = self._ns_for(kind, namespace)
        if await self.store.get(resource_key(kind), ns, name) is None:
            obj = apply(None, config, manager, kind.api_version, now_rfc3339())
            try:
                return await self.create(kind, namespace, obj, dry_run=dry_run), True
            except errors.ApiError as e:
                if e.reason != "AlreadyExists":
                    raise  # lost a race with another creator: fall through to an update
        return await self.guaranteed_update(
            kind, namespace, name, lambda cur, _e: apply(cur, config, manager, kind.api_version, now_rfc3339()),
            dry_run=dry_run)

    # --- scale -----------------------------------------------------------------------------
    def to_scale(self, obj: Obj) -> Obj:
        meta = obj.get("metadata") or {}
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": spec.get("replicas", 0)},
            "status": {"replicas": status.get("replicas", 0),
                       "selector": selector_from_match_labels(spec.get("selector"))},
        }

    async def get_scale(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        return self.to_scale((await self._get_entry(kind, namespace, name)).obj)

    async def update_scale(self, kind: Kind, namespace: str | None, name: str,
                           change: Callable[[Obj], Obj], *, dry_run: bool = False,
                           precondition_rv: str | None = None) -> Obj:
        def mutate(cur: Obj, _e: Entry) -> Obj:
            scale = change(self.to_scale(cur))
            replicas = (scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise errors.invalid("Scale", "autoscaling", name, [(
                    "spec.replicas", "FieldValueInvalid", f"Invalid value: {replicas}: must be greater than or "
                                                          "equal to 0")])
            cur.setdefault("spec", {})["replicas"] = replicas
            return cur

        obj, _ = await self.guaranteed_update(kind, namespace, name, mutate, precondition_rv=precondition_rv,
                                              dry_run=dry_run)
        return self.to_scale(obj)

    # --- binding ---------------------------------------------------------------------------
    async def bind(self, namespace: str, name: str, binding: Obj) -> Obj:
        target = binding.get("target") if isinstance(binding, dict) else None
        node = target.get("name") if isinstance(target, dict) else None
        if not node or (isinstance(target, dict) and target.get("kind") not in (None, "", "Node")):
            raise errors.invalid("Binding", "", name, [("target.name", "FieldValueRequired", "Required value")])
        want_uid = ((binding.get("metadata") or {}).get("uid")) if isinstance(binding.get("metadata"), dict) else None

        def mutate(cur: Obj, _e: Entry) -> Obj:
            meta = cur.get("metadata") or {}
            if want_uid and meta.get("uid") != want_uid:
                raise errors.conflict("pods", "", name, f"Precondition failed: UID in precondition: {want_uid}, "
                                                        f"UID in object meta: {meta.get('uid')}")
            if meta.get("deletionTimestamp"):
                raise errors.conflict("pods", "", name, "pod is being deleted, cannot be assigned to a host")
            spec = cur.setdefault("spec", {})
            if spec.get("nodeName"):
                raise errors.conflict("pods", "", name, f"pod {name} is already assigned to node "
                                                        f'"{spec["nodeName"]}"')
            spec["nodeName"] = node
            status = cur.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                          "lastTransitionTime": now_rfc3339()})
            status["conditions"] = conds
            return cur

        ns = namespace
        for _ in range(20):
            cur = await self._get_entry(kinds.PODS, ns, name)
            new = mutate(copy_obj(cur), cur)
            try:
                await self.store.update("pods", ns, name, new, cur.rev)
            except RevisionConflict:
                continue
            return errors.status_body(201, "", "")
        raise errors.conflict("pods", "", name)

    # --- delete ----------------------------------------------------------------------------
    async def delete(self, kind: Kind, namespace: str | None, name: str, opts: DeleteOptions) -> tuple[Obj, bool]:
        """Returns (object, gone): gone is False when the object stays (graceful or finalizers)."""
        ns = self._ns_for(kind, namespace)
        for _ in range(20):
            cur = await self._get_entry(kind, namespace, name)
            meta = cur.obj.get("metadata") or {}
            if opts.uid and opts.uid != meta.get("uid"):
                raise errors.conflict(kind.plural, kind.group, name,
                                      f"Precondition failed: UID in precondition: {opts.uid}, UID in object meta: "
                                      f"{meta.get('uid')}")
            if opts.resource_version and opts.resource_version != str(cur.rev):
                raise errors.conflict(kind.plural, kind.group, name,
                                      f"Precondition failed: ResourceVersion in precondition: "
                                      f"{opts.resource_version}, ResourceVersion in object meta: {cur.rev}")
            new = copy_obj(cur)
            nmeta = new["metadata"]
            finalizers = list(nmeta.get("finalizers") or [])
            if opts.propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
                finalizers.append("foregroundDeletion")
            elif opts.propagation_policy == "Orphan" and "orphan" not in finalizers:
                finalizers.append("orphan")
            if kind is kinds.NAMESPACES:
                return await self._delete_namespace(cur, opts)
            grace = self._grace(kind, cur.obj, opts)
            if grace > 0 or finalizers:
                changed = False
                if not nmeta.get("deletionTimestamp"):
                    nmeta["deletionTimestamp"] = now_rfc3339(grace)
                    nmeta["deletionGracePeriodSeconds"] = grace
                    changed = True
                elif kind is kinds.PODS and grace < int(nmeta.get("deletionGracePeriodSeconds") or 0):
                    # A shorter grace period replaces a longer one (upstream BeforeDelete).
                    nmeta["deletionTimestamp"] = now_rfc3339(grace)
                    nmeta["deletionGracePeriodSeconds"] = grace
                    changed = True
                if finalizers != list(cur.obj.get("metadata", {}).get("finalizers") or []):
                    nmeta["finalizers"] = finalizers
                    changed = True
                if (grace > 0 or finalizers) and not (grace == 0 and not finalizers):
                    if not changed or opts.dry_run:
                        return (cur.obj if not changed else new), False
                    try:
                        e = await self.store.update(resource_key(kind), ns, name, new, cur.rev)
                    except RevisionConflict:
                        continue
                    return e.obj, False
            if opts.dry_run:
                return cur.obj, True
            try:
                e = await self.store.delete(resource_key(kind), ns, name, cur.rev)
            except (RevisionConflict, KeyNotFound):
                continue
            self._on_deleted(kind, e.obj)
            return e.obj, True
        raise errors.conflict(kind.plural, kind.group, name, "too many concurrent writers, try again")

    def _grace(self, kind: Kind, obj: Obj, opts: DeleteOptions) -> int:
        if kind is not kinds.PODS:
            return 0
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        # Upstream pod CheckGracefulDelete: unbound or terminal pods go at once.
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if opts.grace_period_seconds is not None:
            return max(0, int(opts.grace_period_seconds))
        g = spec.get("terminationGracePeriodSeconds")
        return int(g) if isinstance(g, int) and g >= 0 else 30

    def _on_deleted(self, kind: Kind, obj: Obj) -> None:
        if kind is kinds.SERVICES:
            self._release_service(obj)

    async def delete_collection(self, kind: Kind, namespace: str | None, opts: ListOptions,
                                dopts: DeleteOptions) -> list[Obj]:
        res = await self.list(kind, namespace, opts)
        out = []
        for e in res.items:
            try:
                obj, _ = await self.delete(kind, e.namespace or None, e.name, dopts)
                out.append(obj)
            except errors.ApiError as err:
                if err.code != 404:
                    raise
        return out

    # --- namespaces ------------------------------------------------------------------------
    async def _delete_namespace(self, cur: Entry, opts: DeleteOptions) -> tuple[Obj, bool]:
        name = cur.name
        if name in ("default", "kube-system", "kube-public"):
            raise errors.ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be '
                                                    "deleted", name=name, kind="namespaces")
        new = copy_obj(cur)
        meta = new["metadata"]
        if meta.get("deletionTimestamp"):
            return cur.obj, False
        meta["deletionTimestamp"] = now_rfc3339()
        meta["deletionGracePeriodSeconds"] = 0
        new["status"] = {"phase": "Terminating"}
        if opts.dry_run:
            return new, False
        e = await self.store.update("namespaces", "", name, new, cur.rev)
        self._ns_wakeup.set()
        return e.obj, False

    async def _namespace_finalizer(self) -> None:
        """The namespace lifecycle: empty a Terminating namespace, then remove it (upstream's
        namespace controller, kept in the apiserver since it is the only owner of storage)."""
        while True:
            try:
                await asyncio.wait_for(self._ns_wakeup.wait(), timeout=2.0)
            except TimeoutError:
                pass
            self._ns_wakeup.clear()
            try:
                await self._finalize_namespaces()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("msg=\"namespace finalizer failed\"")

    async def _finalize_namespaces(self) -> None:
        nss, _ = await self.store.list("namespaces", "")
        for ns in nss:
            if not (ns.obj.get("metadata") or {}).get("deletionTimestamp"):
                continue
            remaining = 0
            for kind in kinds.KINDS:
                if not kind.namespaced or kind is kinds.BINDINGS:
                    continue
                items, _ = await self.store.list(resource_key(kind), ns.name)
                for e in items:
                    remaining += 1
                    if not (e.obj.get("metadata") or {}).get("deletionTimestamp"):
                        try:
                            await self.delete(kind, ns.name, e.name, DeleteOptions())
                        except errors.ApiError:
                            pass
            if remaining == 0:
                try:
                    cur = await self.store.get("namespaces", "", ns.name)
                    if cur is not None:
                        await self.store.delete("namespaces", "", ns.name, cur.rev)
                except (RevisionConflict, KeyNotFound):
                    pass
                log.info("msg=\"namespace removed\" namespace=%s", ns.name)

    # --- get / list / watch ----------------------------------------------------------------
    async def get(self, kind: Kind, namespace: str | None, name: str) -> Entry:
        return await self._get_entry(kind, namespace, name)

    async def list(self, kind: Kind, namespace: str | None, opts: ListOptions) -> ListResult:
        rkey = resource_key(kind)
        ns = namespace if kind.namespaced and namespace else None
        entries, rev = await self.store.list(rkey, ns)
        start_after: str | None = None
        if opts.continue_token:
            try:
                tok = json.loads(base64.urlsafe_b64decode(opts.continue_token.encode()))
                start_after = str(tok["start"])
                list_rev = int(tok["rv"])
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("continue key is not valid: decode the token from the previous list's "
                                         "metadata.continue unchanged") from None
            if list_rev < self.store.compacted_revision:
                raise errors.ApiError(410, "Expired", "The provided continue parameter is too old to display a "
                                                      "consistent list result. You can start a new list without the "
                                                      "continue parameter.")
        elif opts.resource_version and opts.resource_version != "0":
            try:
                want = int(opts.resource_version)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {opts.resource_version!r}: must be an "
                                         "integer") from None
            if opts.resource_version_match == "Exact":
                if want < rev:
                    entries = self._state_at(kind, rkey, ns, entries, want)
                    rev = want
            elif want > rev:
                raise errors.ApiError(504, "Timeout", f"Too large resource version: {want}, current resource "
                                                      f"version: {rev}", retry_after=1)
        if opts.resource_version_match and opts.resource_version_match not in ("Exact", "NotOlderThan"):
            raise errors.bad_request(f"invalid resourceVersionMatch {opts.resource_version_match!r}: want Exact or "
                                     "NotOlderThan")
        selected = [e for e in entries
                    if (start_after is None or _ns_name(e) > start_after)
                    and labels_match(opts.label_selector, e.obj) and fields_match(opts.field_selector, e.obj)]
        if opts.limit and opts.limit > 0 and len(selected) > opts.limit:
            page = selected[:opts.limit]
            token = base64.urlsafe_b64encode(json.dumps(
                {"rv": rev, "start": _ns_name(page[-1])}).encode()).decode()
            return ListResult(page, rev, token, len(selected) - len(page))
        return ListResult(selected, rev)

    def _state_at(self, kind: Kind, rkey: str, ns: str | None, current: builtins.list[Entry], rev: int) -> builtins.list[Entry]:
        """The objects as they were at revision `rev`: undo the newer history (resourceVersionMatch=Exact)."""
        try:
            newer = self.store.history(rkey, rev)
        except Expired as e:
            raise errors.gone(f"too old resource version: {e.requested} ({e.compacted})") from None
        state = {(e.namespace, e.name): e for e in current}
        for ev in reversed(newer):
            key = (ev.namespace, ev.name)
            if ev.prev is None:
                state.pop(key, None)
            else:
                prev = ev.prev
                raw = json.dumps(prev, separators=(",", ":")).encode()
                state[key] = Entry(rkey, ev.namespace, ev.name, int(prev["metadata"]["resourceVersion"]), prev, raw)
        return [state[k] for k in sorted(state) if ns is None or k[0] == ns]

    async def watch(self, kind: Kind, namespace: str | None, opts: ListOptions, *, name: str | None = None,
                    send_initial: bool | None = None, bookmarks: bool = False,
                    bookmark_interval: float = 10.0, timeout: float | None = None) -> WatchSession:
        """One watch request. Raises ApiError 410 at once when the revision is gone."""
        rkey = resource_key(kind)
        ns = namespace if kind.namespaced and namespace else None
        rv = opts.resource_version
        initial: builtins.list[Entry] = []
        if rv in (None, "", "0") or send_initial:
            # "Get state and start at most recent": synthetic ADDED for what exists now.
            entries, after = await self.store.list(rkey, ns)
            initial = [e for e in entries if self._matches(e.obj, ns, name, opts)]
        else:
            try:
                after = int(rv)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {rv!r}: must be an integer") from None
        try:
            stream = self.store.watch(rkey, after)
        except Expired as e:
            raise errors.gone(f"too old resource version: {e.requested} ({e.compacted})") from None
        return WatchSession(self, kind, stream, initial, ns, name, opts, after, bool(send_initial), bookmarks,
                            bookmark_interval, timeout)

    def _matches(self, obj: Obj, ns: str | None, name: str | None, opts: ListOptions) -> bool:
        meta = obj.get("metadata") or {}
        if ns is not None and meta.get("namespace") != ns:
            return False
        if name is not None and meta.get("name") != name:
            return False
        return labels_match(opts.label_selector, obj) and fields_match(opts.field_selector, obj)

    def _filter_event(self, ev: Event, ns: str | None, name: str | None, opts: ListOptions) -> WatchEvent | None:
        """Selector transitions (upstream watch cache filterWithAttrs): entering the selection is
        ADDED, leaving it is DELETED (with the new state), staying is the event itself."""
        now = self._matches(ev.obj, ns, name, opts)
        if ev.type == "DELETED":
            was = ev.prev is not None and self._matches(ev.prev, ns, name, opts)
            return WatchEvent("DELETED", ev.obj, ev.raw, ev.line("DELETED")) if (was or now) else None
        if ev.type == "ADDED":
            return WatchEvent("ADDED", ev.obj, ev.raw, ev.line("ADDED")) if now else None
        was = ev.prev is not None and self._matches(ev.prev, ns, name, opts)
        t = "MODIFIED" if now and was else "ADDED" if now else "DELETED" if was else None
        return WatchEvent(t, ev.obj, ev.raw, ev.line(t)) if t else None


class WatchSession:
    """The events of one watch request, handed out in batches: everything already queued goes out
    in one write, so a watcher that fell behind catches up with few syscalls."""

    def __init__(self, registry: Registry, kind: Kind, stream: WatchStream, initial: list[Entry], ns: str | None,
                 name: str | None, opts: ListOptions, after: int, initial_end_bookmark: bool, bookmarks: bool,
                 interval: float, timeout: float | None) -> None:
        self.kind = kind
        self._reg = registry
        self._stream = stream
        self._initial: list[Entry] | None = initial
        self._ns, self._name, self._opts = ns, name, opts
        self._after = after
        self._initial_end = initial_end_bookmark
        self._interval = interval
        self._done = False
        self._bookmarks = bookmarks
        self._loop = asyncio.get_running_loop()
        self._handles: list[asyncio.TimerHandle] = []
        self._sink: Callable[[list[WatchEvent]], bool] | None = None
        self._pending: list[WatchEvent] = []
        # Namespace-wide or cluster-wide without selectors: every event passes unchanged.
        self._match_all = name is None and not opts.label_selector and not opts.field_selector
        self._finished: asyncio.Future[None] = self._loop.create_future()
        if bookmarks:
            self._handles.append(self._loop.call_later(interval, self._tick))
        if timeout is not None:
            self._handles.append(self._loop.call_later(timeout, self._timeout))

    def _tick(self) -> None:
        self._handles[0] = self._loop.call_later(self._interval, self._tick)
        if self._sink is not None:
            self._flush()  # keep order: events already published go before the bookmark
            sink = self._sink
            if sink is None:  # the flush found the client gone
                return
            # Direct mode: every published event was delivered synchronously already.
            batch = [self._bookmark(self._reg.store.committed_revision)] if self._bookmarks else []
            if not sink(batch):
                self.close()
            return
        # The committed revision when the marker is queued: every event at or below it is already
        # ahead of the marker in the queue, so a bookmark there skips nothing.
        self._stream.queue.put_nowait((_TICK, self._reg.store.committed_revision))

    def _timeout(self) -> None:
        if self._sink is not None:
            self.close()
        else:
            self._stream.queue.put_nowait((_TIMEOUT, 0))

    def attach(self, sink: Callable[[list[WatchEvent]], bool], liveness_interval: float = 5.0) -> None:
        """Switch to direct delivery: flush what is pending through `sink` now, then call it for
        every event as it is published. `sink` returns False when the client is gone or too slow;
        the session then ends. `sink([])` is called periodically as a liveness check."""
        pending: list[WatchEvent] = []
        if self._initial is not None:
            pending += [WatchEvent("ADDED", e.obj, e.raw) for e in self._initial]
            self._initial = None
            if self._initial_end:
                pending.append(self._bookmark(self._after, initial_end=True))
        q = self._stream.queue
        ended = False
        while not q.empty():
            item = q.get_nowait()
            if item is None or (isinstance(item, tuple) and item[0] is _TIMEOUT):
                ended = True
            elif isinstance(item, tuple):
                pending.append(self._bookmark(item[1]))
            else:
                ev = self._reg._filter_event(item, self._ns, self._name, self._opts)
                if ev is not None:
                    pending.append(ev)
        self._sink = sink
        if (pending and not sink(pending)) or ended or self._stream.closed:
            self.close()
            return
        if not self._bookmarks:
            self._interval = liveness_interval
            self._handles.insert(0, self._loop.call_later(liveness_interval, self._tick))
        self._stream.on_end = self.close
        self._stream.direct = self._deliver

    def _deliver(self, item: Event) -> None:
        # Events published together (one commit batch) leave in one write: when the server falls
        # behind, batches grow and the cost per event shrinks instead of piling up.
        if self._match_all and (self._ns is None or item.namespace == self._ns):
            ev: WatchEvent | None = WatchEvent(item.type, item.obj, item.raw, item.line(item.type))
        else:
            ev = self._reg._filter_event(item, self._ns, self._name, self._opts)
        if ev is None:
            return
        self._pending.append(ev)
        if len(self._pending) == 1:
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        sink = self._sink
        if batch and sink is not None and not sink(batch):
            self.close()

    async def wait_finished(self) -> None:
        await asyncio.shield(self._finished)

    def _bookmark(self, rev: int, initial_end: bool = False) -> WatchEvent:
        meta: Obj = {"resourceVersion": str(max(rev, self._after))}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return WatchEvent("BOOKMARK", {"kind": self.kind.kind, "apiVersion": self.kind.api_version, "metadata": meta})

    async def next_batch(self, limit: int = 500) -> list[WatchEvent] | None:
        """The next events (at least one), or None when the watch is over."""
        if self._initial is not None:
            batch = [WatchEvent("ADDED", e.obj, e.raw) for e in self._initial]
            self._initial = None
            if self._initial_end:
                batch.append(self._bookmark(self._after, initial_end=True))
            if batch:
                return batch
        out: list[WatchEvent] = []
        q = self._stream.queue
        while not out:
            if self._done:
                return None
            item = await q.get()
            while True:
                if item is None or (isinstance(item, tuple) and item[0] is _TIMEOUT):
                    self._done = True
                    break
                if isinstance(item, tuple):
                    out.append(self._bookmark(item[1]))
                else:
                    ev = self._reg._filter_event(item, self._ns, self._name, self._opts)
                    if ev is not None:
                        out.append(ev)
                if len(out) >= limit or q.empty():
                    break
                item = q.get_nowait()
        return out

    def close(self) -> None:
        # No write may follow: the HTTP layer ends the chunked response once this returns.
        self._sink = None
        self._pending = []
        for h in self._handles:
            h.cancel()
        self._stream.direct = None
        self._stream.on_end = None
        self._stream.close()
        if not self._finished.done():
            self._finished.set_result(None)


def _check_shape(kind: Kind, obj: Obj) -> None:
    """metadata, spec and status are objects, and names strings, whatever the patch produced."""
    for fld in ("metadata", "spec", "status"):
        if obj.get(fld) is not None and not isinstance(obj[fld], dict):
            raise errors.bad_request(f"{kind.kind}.{fld}: expected an object, got {type(obj[fld]).__name__}")
    meta = obj.get("metadata") or {}
    for fld in ("name", "namespace", "generateName", "resourceVersion"):
        if meta.get(fld) is not None and not isinstance(meta[fld], str):
            raise errors.bad_request(f"{kind.kind}.metadata.{fld}: expected a string, got {type(meta[fld]).__name__}")


def _held_node_ports(spec: Obj) -> set[int]:
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


def old_ports_has(old_spec: Obj, node_port: Any) -> bool:
    return any(isinstance(p, dict) and p.get("nodePort") == node_port for p in old_spec.get("ports") or [])


def _spec_of(obj: Obj) -> Any:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_TICK = object()
_TIMEOUT = object()


def _random_suffix(n: int = 5) -> str:
    # Upstream's generateName alphabet: no vowels (no words), no confusable characters.
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(n))
