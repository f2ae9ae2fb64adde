"""The Ingress controller's loop: informers -> model -> HAProxy, then Events and status.

    Ingress, IngressClass, Service, EndpointSlice, Secret, Node informers
      -> (any change marks the state dirty; changes within min_sync_interval are coalesced)
      -> model.Builder: the ProxyConfig and the Problems of each Ingress
      -> fingerprint unchanged: only endpoints moved -> runtime API (`set server`), no reload
         fingerprint changed: render, write certificates, `haproxy -c`; good -> graceful reload;
         bad -> find the Ingresses whose own config fails the check, leave them out (an Event
         says why) and try again; still bad -> the running config stays
      -> Events for new Problems, status.loadBalancer of every Ingress served

The API needs (for issue 14's least-privilege identity): get/list/watch ingresses, ingressclasses
(networking.k8s.io), services, endpointslices (discovery.k8s.io), secrets, nodes; update/patch
ingresses/status; create/patch events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nodeagent.client import EventRecorder, Informer
from nodeagent.client.interface import ClientProtocol
from nodeagent.ingress import certs
from nodeagent.ingress.haproxy import HAProxy, ProxyError, server_commands
from nodeagent.ingress.metrics import Metrics
from nodeagent.ingress.model import Builder, Problem, ProxyConfig, World, key
from nodeagent.ingress.render import Listen, fingerprint, render, slot_count
from nodeagent.machinery.kinds import ENDPOINTSLICES, INGRESSCLASSES, INGRESSES, NODES, SECRETS, SERVICES

log = logging.getLogger(__name__)

Obj = dict[str, Any]
ANNOTATION_INGRESS_CLASS = "kubernetes.io/ingress.class"
DEFAULT_CONTROLLER = "nodeagent.io/ingress"


@dataclass
class Options:
    node_name: str = ""
    ingress_class: str = "nodeagent"
    controller_class: str = DEFAULT_CONTROLLER
    watch_without_class: bool = False
    publish_addresses: tuple[str, ...] = ()
    listen: Listen = field(default_factory=Listen)
    haproxy_binary: str | list[str] = "haproxy"
    min_sync_interval: float = 0.05


def node_address(node: Obj) -> str | None:
    addrs = (node.get("status") or {}).get("addresses") or []
    for t in ("InternalIP", "ExternalIP"):
        for a in addrs:
            if a.get("type") == t and a.get("address"):
                return str(a["address"])
    return None


def node_ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def _content_hash(obj: Obj) -> str:
    md = obj.get("metadata") or {}
    return hashlib.sha256(json.dumps([obj.get("spec"), md.get("annotations")], sort_keys=True).encode()).hexdigest()


class IngressController:
    def __init__(self, client: ClientProtocol, opts: Options, metrics: Metrics | None = None) -> None:
        self.client = client
        self.opts = opts
        self.metrics = metrics or Metrics()
        self.run_dir = opts.listen.run_dir
        self.proxy = HAProxy(self.run_dir, opts.haproxy_binary)
        self.recorder = EventRecorder(client, component="nodeagent-ingress", host=opts.node_name or None)
        self.informers = {k: Informer(client, k) for k in (INGRESSES, INGRESSCLASSES, SERVICES, ENDPOINTSLICES,
                                                          SECRETS, NODES)}
        for inf in self.informers.values():
            inf.add_handlers(on_add=self._changed, on_update=lambda _o, _n: self._changed(), on_delete=self._changed)
        self.dirty = asyncio.Event()
        self.applied_fingerprint: str | None = None
        self.slots: dict[str, int] = {}
        self.applied_servers: dict[str, list[tuple[str, int] | None]] = {}
        self.problems_seen: set[Problem] = set()
        self.rejected: dict[str, tuple[str, str]] = {}  # ingress -> (content hash, haproxy's error)
        self.syncs = 0
        self._tasks: list[asyncio.Task[Any]] = []

    def _changed(self, *_: Any) -> None:
        self.dirty.set()

    # --- which Ingresses are ours (ingress-nginx's class rules) --------------------------------
    def ours(self, ing: Obj) -> bool:
        spec = ing.get("spec") or {}
        cls = spec.get("ingressClassName")
        if cls:
            ic = self.informers[INGRESSCLASSES].get(str(cls))
            return ic is not None and (ic.get("spec") or {}).get("controller") == self.opts.controller_class
        annotations = (ing.get("metadata") or {}).get("annotations") or {}
        if ANNOTATION_INGRESS_CLASS in annotations:
            return annotations[ANNOTATION_INGRESS_CLASS] == self.opts.ingress_class
        return self.opts.watch_without_class

    def world(self) -> World:
        inf = self.informers
        return World(
            ingresses=[i for i in inf[INGRESSES].list() if self.ours(i)
                       and not (i.get("metadata") or {}).get("deletionTimestamp")],
            services={key(s): s for s in inf[SERVICES].list()},
            slices=World.slices_by_service(inf[ENDPOINTSLICES].list()),
            secrets={key(s): s for s in inf[SECRETS].list()},
        )

    # --- running -----------------------------------------------------------------------------
    async def start(self, sync_timeout: float = 60.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        certs.ensure_default(self.run_dir)
        for k, inf in self.informers.items():
            self._tasks.append(asyncio.create_task(inf.run(), name=f"informer-{k.plural}"))
        for inf in self.informers.values():
            await inf.wait_synced(sync_timeout)
        await self.proxy.adopt()
        await self.sync()  # the first config serves before start() returns
        self._tasks.append(asyncio.create_task(self._loop(), name="ingress-sync"))

    async def stop(self, stop_proxy: bool = True) -> None:
        for inf in self.informers.values():
            inf.stop()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if stop_proxy:
            await self.proxy.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.recorder.flush(), 2.0)

    async def _loop(self) -> None:
        while True:
            await self.dirty.wait()
            await asyncio.sleep(self.opts.min_sync_interval)  # coalesce a burst of watch events
            self.dirty.clear()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("ingress sync failed error=%s", e, exc_info=log.isEnabledFor(logging.DEBUG))
                self.applied_fingerprint = None  # the next pass re-renders and reloads
                await asyncio.sleep(1.0)
                self.dirty.set()

    async def sync(self) -> None:
        self.syncs += 1
        world = self.world()
        cfg = self._build(world)
        if self.proxy.running and self.applied_fingerprint == fingerprint(cfg, self.opts.listen, self.slots):
            await self._update_endpoints(cfg)
        else:
            cfg = await self._reload(world, cfg)
        self._report(world, cfg)
        await self._write_status(world, cfg)

    def _build(self, world: World) -> ProxyConfig:
        rejected = {k for k, (h, _) in self.rejected.items()
                    if any(key(i) == k and _content_hash(i) == h for i in world.ingresses)}
        if rejected:
            world = World([i for i in world.ingresses if key(i) not in rejected], world.services, world.slices,
                          world.secrets)
        cfg = Builder(world).build()
        for k in sorted(rejected):
            cfg.problems.append(Problem(k, "RejectedConfig", f"not served: haproxy refused its config: "
                                                             f"{self.rejected[k][1]}"))
        for name, b in cfg.backends.items():
            self.slots[name] = slot_count(len(b.servers), self.slots.get(name, 0))
        return cfg

    async def _update_endpoints(self, cfg: ProxyConfig) -> None:
        commands: list[str] = []
        new_state: dict[str, list[tuple[str, int] | None]] = {}
        changed = 0
        for name, b in cfg.backends.items():
            current = self.applied_servers.get(name) or []
            cmds, slots = server_commands(name, current, b.servers)
            if cmds:
                changed += 1
                commands += cmds
            new_state[name] = slots
        if not commands:
            return
        try:
            await self.proxy.set_servers(commands)
        except (ProxyError, OSError, TimeoutError) as e:
            log.warning("runtime endpoint update failed, reloading instead error=%s", e)
            self.applied_fingerprint = None
            self.dirty.set()
            return
        self.applied_servers.update(new_state)
        self.metrics.endpoint_updates.inc(changed)
        log.info("endpoints updated without reload backends=%d commands=%d", changed, len(commands))

    async def _reload(self, world: World, cfg: ProxyConfig) -> ProxyConfig:
        listen = self.opts.listen
        text = render(cfg, listen, self.slots)
        used = certs.write_for(cfg, self.run_dir)
        check = await self.proxy.check(text)
        if not check.ok:
            culprits = await self._find_culprits(world)
            if culprits:
                cfg = self._build(world)
                text = render(cfg, listen, self.slots)
                used = certs.write_for(cfg, self.run_dir)
                check = await self.proxy.check(text)
        if not check.ok:
            self.metrics.reload_errors.inc()
            self.metrics.last_ok.set(0)
            log.error("rendered haproxy config failed its check; keeping the running one error=%s",
                      check.output.splitlines()[-1:] or check.output)
            return cfg
        fp = fingerprint(cfg, listen, self.slots)
        started = time.monotonic()
        try:
            if self.proxy.running:
                await self.proxy.reload(text)
                self.metrics.worker_replaced()
            else:
                await self.proxy.start(text)
        except (ProxyError, OSError, TimeoutError):
            self.metrics.reload_errors.inc()
            self.metrics.last_ok.set(0)
            raise
        self.applied_fingerprint = fp
        self.applied_servers = {name: [*b.servers, *([None] * (self.slots[name] - len(b.servers)))]
                                for name, b in cfg.backends.items()}
        certs.remove_unused(self.run_dir, used)
        self.metrics.reloads.inc()
        self.metrics.last_ok.set(1)
        self.metrics.last_ok_time.set(time.time())
        self.metrics.config_hash.set(int(fp[:12], 16))
        log.info("haproxy config applied ingresses=%d backends=%d took_ms=%.0f", len(cfg.ingresses),
                 len(cfg.backends), (time.monotonic() - started) * 1000)
        return cfg

    async def _find_culprits(self, world: World) -> list[str]:
        """The Ingresses whose config fails `haproxy -c` on its own (cached by their content)."""
        culprits = []
        for ing in world.ingresses:
            k, h = key(ing), _content_hash(ing)
            if self.rejected.get(k, ("", ""))[0] == h:
                culprits.append(k)
                continue
            alone = Builder(World([ing], world.services, world.slices, world.secrets)).build()
            slots = {n: slot_count(len(b.servers)) for n, b in alone.backends.items()}
            certs.write_for(alone, self.run_dir)
            res = await self.proxy.check(render(alone, self.opts.listen, slots))
            if not res.ok:
                lines = [ln for ln in res.output.splitlines() if "ALERT" in ln] or res.output.splitlines()
                self.rejected[k] = (h, (lines[0] if lines else "invalid").strip()[:300])
                culprits.append(k)
                log.warning("ingress rejected ingress=%s error=%s", k, self.rejected[k][1])
        return culprits

    # --- reporting ---------------------------------------------------------------------------
    def _report(self, world: World, cfg: ProxyConfig) -> None:
        by_key = {key(i): i for i in world.ingresses}
        current = set(cfg.problems)
        for p in sorted(current - self.problems_seen, key=lambda p: (p.ingress, p.reason, p.message)):
            ing = by_key.get(p.ingress)
            if ing is not None:
                self.recorder.event(ing, "Warning", p.reason, p.message)
            log.warning("ingress problem ingress=%s reason=%s message=%r", p.ingress, p.reason, p.message)
        self.problems_seen = current
        counts: dict[tuple[str, str, str], int] = {}
        for p in current:
            ns, _, name = p.ingress.partition("/")
            counts[(ns, name, p.reason)] = counts.get((ns, name, p.reason), 0) + 1
        self.metrics.set_problems(counts)
        self.metrics.backend_labels = {n: (b.namespace, b.ingress.partition("/")[2], b.service)
                                       for n, b in cfg.backends.items()}

    def addresses(self) -> list[str]:
        """What goes into status.loadBalancer: --publish-status-address, else the addresses of the
        Ready nodes (this controller runs on every node, host network, as kube-proxy)."""
        if self.opts.publish_addresses:
            return sorted(set(self.opts.publish_addresses))
        out = {a for n in self.informers[NODES].list() if node_ready(n) and (a := node_address(n))}
        return sorted(out)

    async def _write_status(self, world: World, cfg: ProxyConfig) -> None:
        want = [{"ip": a} for a in self.addresses()]
        served = set(cfg.ingresses)
        for ing in world.ingresses:
            if key(ing) not in served:
                continue
            have = ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if have == want:
                continue
            md = ing["metadata"]
            try:
                await self.client.patch(INGRESSES, md["name"], {"status": {"loadBalancer": {"ingress": want}}},
                                        namespace=md.get("namespace"), subresource="status")
            except Exception as e:  # the next change or resync retries
                log.warning("ingress status update failed ingress=%s error=%s", key(ing), e)

    async def refresh_stats(self) -> None:
        if self.proxy.running:
            self.metrics.read_stats(await self.proxy.command("show stat", timeout=2))

    def healthy(self) -> bool:
        return self.proxy.running


def default_run_dir(node_name: str) -> Path:
    return Path("/run/nodeagent-ingress") / (node_name or "default")
