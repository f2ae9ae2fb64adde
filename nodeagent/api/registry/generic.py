"""The generic store: create, update, delete, get, list and watch, written once for every kind.

Upstream's k8s.io/apiserver/pkg/registry/generic/registry/store.go cut to what nodeagent serves:
metadata bookkeeping (uid, creationTimestamp, generation), optimistic concurrency (409 on a stale
resourceVersion, retried internally when the client gave none), dry runs, finalizers and graceful
deletion, list paging and resourceVersion semantics. What differs between kinds is the Strategy's
(strategy.py); what a write starts besides the object (allocations) is committed or reverted here.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.api import errors
from nodeagent.api.admission import Attributes, Chain
from nodeagent.api.registry.options import (
    DeleteOptions,
    ListOptions,
    ListResult,
    WriteContext,
    apply_patch,
    check_shape,
    copy_obj,
    meta_of,
    now_rfc3339,
    random_suffix,
    resource_key,
)
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.registry.watch import WatchSession, matches
from nodeagent.api.store import Entry, Expired, KeyExists, KeyNotFound, RevisionConflict, Store
from nodeagent.machinery.kinds import Kind

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Mutate = Callable[[Obj, Entry], Awaitable[Obj] | Obj]
Observer = Callable[[Kind, str, Obj], None]  # (kind, ADDED|MODIFIED|DELETED, stored object)

_RETRIES = 20  # attempts of a guaranteed update before answering 409


def _spec_of(obj: Obj) -> Any:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _ns_name(e: Entry) -> str:
    return f"{e.namespace}/{e.name}"


class GenericStore:
    """One kind's storage with its strategy (upstream: one registry.Store per resource)."""

    def __init__(self, store: Store, kind: Kind, strategy: Strategy, admission: Chain,
                 observers: list[Observer]) -> None:
        self.store = store
        self.kind = kind
        self.strategy = strategy
        self.resource = resource_key(kind)
        self.admission = admission
        self._observers = observers  # shared with the Registry: the background loops' wake-ups

    # --- helpers -----------------------------------------------------------------------------
    def _ns(self, namespace: str | None) -> str:
        return (namespace or "") if self.kind.namespaced else ""

    def _notify(self, type_: str, obj: Obj) -> None:
        for fn in self._observers:
            fn(self.kind, type_, obj)

    async def _admit(self, step: str, op: str, ctx: WriteContext, ns: str, name: str, obj: Obj | None,
                     old: Obj | None) -> None:
        if not self.admission:
            return
        attrs = Attributes(op, self.kind, ns, name, ctx.subresource, obj, old, ctx.user, ctx.dry_run)
        await (self.admission.admit(attrs) if step == "admit" else self.admission.validate(attrs))

    async def _check_namespace(self, namespace: str) -> None:
        """The namespace exists and is not terminating (upstream NamespaceLifecycle admission)."""
        if not self.kind.namespaced:
            return
        if not namespace:
            raise errors.bad_request(f"the namespace of the {self.kind.kind} is required: give it in "
                                     "metadata.namespace or in the URL")
        ns = await self.store.get("namespaces", "", namespace)
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if (ns.obj.get("metadata") or {}).get("deletionTimestamp"):
            raise errors.ApiError(403, "Forbidden",
                                  f'{self.kind.plural} "?" is forbidden: unable to create new content in namespace '
                                  f"{namespace} because it is being terminated", kind=self.kind.plural)

    def _not_found(self, name: str) -> errors.ApiError:
        return errors.not_found(self.kind.plural, self.kind.group, name)

    def _conflict(self, name: str, why: str | None = None) -> errors.ApiError:
        return errors.conflict(self.kind.plural, self.kind.group, name, why)

    # --- get ---------------------------------------------------------------------------------
    async def get(self, namespace: str | None, name: str) -> Entry:
        e = await self.store.get(self.resource, self._ns(namespace), name)
        if e is None:
            raise self._not_found(name)
        return e

    # --- create ------------------------------------------------------------------------------
    async def create(self, namespace: str | None, obj: Obj, ctx: WriteContext) -> Obj:
        kind = self.kind
        check_shape(kind, obj)
        meta = meta_of(obj)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        ns = self._ns(namespace or meta.get("namespace"))
        if kind.namespaced:
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        gen_name = meta.get("generateName")
        if not meta.get("name") and isinstance(gen_name, str) and gen_name:
            meta["name"] = gen_name[:58] + random_suffix()
        for k in ("resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(k, None)
        managed = meta.pop("__managedFields", None)
        if managed is not None:
            meta["managedFields"] = managed
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if self.strategy.generation:
            meta["generation"] = 1
        name = meta["name"] if isinstance(meta.get("name"), str) else ""
        await self._admit("admit", "CREATE", ctx, ns, name, obj, None)
        await self._check_namespace(ns)  # after mutating admission, as upstream's NamespaceLifecycle
        try:
            causes = await self.strategy.check_create(obj, ctx)
            if causes:
                raise errors.invalid(kind.kind, kind.group, name, causes)
            await self._admit("validate", "CREATE", ctx, ns, name, obj, None)
            if ctx.dry_run:
                await ctx.revert()
                return obj
            e = await self.store.create(self.resource, ns, name, obj)
        except KeyExists:
            await ctx.revert()
            raise errors.already_exists(kind.plural, kind.group, name) from None
        except Exception:
            # Invalid, refused or a storage failure: nothing stays allocated. Not on cancellation: the
            # store may already hold the object (its commit is shielded), and with it the allocations.
            await ctx.revert()
            raise
        await ctx.commit()
        self._notify("ADDED", e.obj)
        return e.obj

    # --- update ------------------------------------------------------------------------------
    async def guaranteed_update(self, namespace: str | None, name: str, mutate: Mutate, ctx: WriteContext, *,
                                precondition_rv: str | None = None,
                                create_obj: Obj | None = None) -> tuple[Obj, bool]:
        """Read, mutate a copy, write with the read revision as precondition; retry on conflict
        unless the client set a resourceVersion precondition (then 409). Returns (obj, created)."""
        ns = self._ns(namespace)
        for _attempt in range(_RETRIES):
            cur = await self.store.get(self.resource, ns, name)
            if cur is None:
                if create_obj is not None and ctx.subresource is None:
                    return await self.create(namespace, create_obj, ctx), True
                raise self._not_found(name)
            if precondition_rv and precondition_rv != str(cur.rev):
                raise self._conflict(name)
            res = mutate(copy_obj(cur), cur)
            new = await res if asyncio.iscoroutine(res) else res
            assert isinstance(new, dict)
            try:
                await self._admit("admit", "UPDATE", ctx, ns, name, new, cur.obj)
                new = await self._prepare_update(cur.obj, new, ctx)
                await self._admit("validate", "UPDATE", ctx, ns, name, new, cur.obj)
            except Exception:
                await ctx.revert()  # a check after an allocation failed
                raise
            if new == cur.obj or ctx.dry_run:
                # Upstream skips the write for a no-op update and returns the stored object.
                await ctx.revert()
                return (cur.obj if new == cur.obj else new), False
            meta = new["metadata"]
            try:
                if meta.get("deletionTimestamp") and not meta.get("finalizers") and \
                        self.strategy.deletion_complete(new):
                    e = await self.store.delete(self.resource, ns, name, cur.rev)
                    await ctx.revert()  # the object is gone: what this update allocated is held by nobody
                    await self._deleted(e.obj)
                    return e.obj, False
                e = await self.store.update(self.resource, ns, name, new, cur.rev)
            except Exception as err:
                # A conflict, the object deleted meanwhile (retried, then 404) or a storage failure:
                # the write did not happen, so neither may the allocations made for it. (Not on
                # cancellation: the shielded commit may still store the object holding them.)
                await ctx.revert()
                if isinstance(err, KeyNotFound):
                    continue
                if not isinstance(err, RevisionConflict):
                    raise
                if precondition_rv:
                    raise self._conflict(name) from None
                continue
            await ctx.commit()
            self._notify("MODIFIED", e.obj)
            return e.obj, False
        raise self._conflict(name, "too many concurrent writers, try again")

    async def update_unchecked(self, namespace: str | None, name: str, mutate: Callable[[Obj], Obj]) -> Entry:
        """A storage-level guaranteed update that skips the strategy, for subresources that own
        their rules (upstream BindingREST's setPodNodeAndMetadata)."""
        ns = self._ns(namespace)
        for _ in range(_RETRIES):
            cur = await self.get(namespace, name)
            new = mutate(copy_obj(cur))
            try:
                e = await self.store.update(self.resource, ns, name, new, cur.rev)
            except RevisionConflict:
                continue
            self._notify("MODIFIED", e.obj)
            return e
        raise self._conflict(name)

    async def _prepare_update(self, old: Obj, new: Obj, ctx: WriteContext) -> Obj:
        """Apply the strategy: keep what the client may not change, default, validate, bump
        generation. Raises ApiError 422/400."""
        kind = self.kind
        if not isinstance(new, dict):
            raise errors.bad_request("the object must be a JSON object")
        check_shape(kind, new)
        old_meta = old.get("metadata") or {}
        name = old_meta.get("name", "")
        if ctx.subresource == "status":
            new = self.strategy.prepare_for_status_update(new, old)
        else:
            new_meta = meta_of(new)
            if new_meta.get("name") not in (None, name):
                raise errors.bad_request(f'the name of the object ({new_meta.get("name")}) does not match the name '
                                         f"on the URL ({name})")
            causes = await self.strategy.check_update(new, old, ctx)
            if causes:
                raise errors.invalid(kind.kind, kind.group, name, causes)
        meta = meta_of(new)
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
        if ctx.subresource is None and old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid(kind.kind, kind.group, name, [(
                    "metadata.finalizers", "FieldValueForbidden",
                    f"Forbidden: no new finalizers can be added if the object is being deleted, found new "
                    f"finalizers {sorted(added)}")])
        if self.strategy.generation and ctx.subresource is None and _spec_of(new) != _spec_of(old):
            meta["generation"] = int(old_meta.get("generation") or 1) + 1
        return new

    async def update(self, namespace: str | None, name: str, body: Obj, ctx: WriteContext) -> tuple[Obj, bool]:
        if not isinstance(body, dict):
            raise errors.bad_request("the object must be a JSON object")
        body = json.loads(json.dumps(body))  # private copy: the strategy edits it in place
        meta = meta_of(body)
        rv = meta.get("resourceVersion") or None
        if self.kind.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on "
                                     "the request")
        create_obj = None
        if self.strategy.create_on_update and not rv:
            create_obj = json.loads(json.dumps(body))
            meta_of(create_obj).setdefault("name", name)
        return await self.guaranteed_update(namespace, name, lambda _cur, _e: body, ctx, precondition_rv=rv,
                                            create_obj=create_obj)

    async def patch(self, namespace: str | None, name: str, patch_type: str, patch: Any,
                    ctx: WriteContext) -> Obj:
        rv: str | None = None
        if isinstance(patch, dict):
            prv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch.get("metadata"), dict) \
                else None
            rv = str(prv) if prv else None

        def apply(cur: Obj, _e: Entry) -> Obj:
            out = apply_patch(patch_type, cur, patch)
            if patch_type == "json":
                # A json-patch that sets metadata.resourceVersion is a precondition too.
                prv = (out.get("metadata") or {}).get("resourceVersion")
                if prv and prv != cur["metadata"].get("resourceVersion"):
                    raise self._conflict(name)
            return out

        obj, _ = await self.guaranteed_update(namespace, name, apply, ctx, precondition_rv=rv)
        return obj

    async def server_side_apply(self, namespace: str | None, name: str, config: Obj, manager: str,
                                ctx: WriteContext) -> tuple[Obj, bool]:
        """PATCH application/apply-patch+yaml (apply.py: simplified, always forcing conflicts)."""
        from nodeagent.api.apply import apply

        kind = self.kind
        cmeta = meta_of(config)
        if cmeta.get("name") not in (None, name):
            raise errors.bad_request(f'the name of the object ({cmeta.get("name")}) does not match the name on the '
                                     f"URL ({name})")
        cmeta["name"] = name
        if await self.store.get(self.resource, self._ns(namespace), name) is None:
            obj = apply(None, config, manager, kind.api_version, now_rfc3339())
            try:
                return await self.create(namespace, obj, ctx), True
            except errors.ApiError as e:
                if e.reason != "AlreadyExists":
                    raise  # lost a race with another creator: fall through to an update
        return await self.guaranteed_update(
            namespace, name, lambda cur, _e: apply(cur, config, manager, kind.api_version, now_rfc3339()), ctx)

    # --- delete ------------------------------------------------------------------------------
    async def delete(self, namespace: str | None, name: str, opts: DeleteOptions,
                     ctx: WriteContext | None = None) -> tuple[Obj, bool]:
        """Returns (object, gone): gone is False when the object stays (graceful or finalizers)."""
        ctx = ctx or WriteContext(dry_run=opts.dry_run)
        ns = self._ns(namespace)
        strategy = self.strategy
        for _ in range(_RETRIES):
            cur = await self.get(namespace, name)
            meta = cur.obj.get("metadata") or {}
            if opts.uid and opts.uid != meta.get("uid"):
                raise self._conflict(name, f"Precondition failed: UID in precondition: {opts.uid}, UID in object "
                                           f"meta: {meta.get('uid')}")
            if opts.resource_version and opts.resource_version != str(cur.rev):
                raise self._conflict(name, f"Precondition failed: ResourceVersion in precondition: "
                                           f"{opts.resource_version}, ResourceVersion in object meta: {cur.rev}")
            strategy.check_delete(cur.obj)
            await self._admit("validate", "DELETE", ctx, ns, name, None, cur.obj)
            new = copy_obj(cur)
            nmeta = new["metadata"]
            finalizers = list(nmeta.get("finalizers") or [])
            if strategy.gc_finalizers:
                if opts.propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
                    finalizers.append("foregroundDeletion")
                elif opts.propagation_policy == "Orphan" and "orphan" not in finalizers:
                    finalizers.append("orphan")
            grace = strategy.grace_period(cur.obj, opts)
            if grace > 0 or finalizers or strategy.holds_deletion(cur.obj):
                changed = False
                # A shorter grace period replaces a longer one (upstream BeforeDelete).
                if not nmeta.get("deletionTimestamp") or grace < int(nmeta.get("deletionGracePeriodSeconds") or 0):
                    if not nmeta.get("deletionTimestamp"):
                        strategy.prepare_for_delete(new)
                    nmeta["deletionTimestamp"] = now_rfc3339(grace)
                    nmeta["deletionGracePeriodSeconds"] = grace
                    changed = True
                if finalizers != list(meta.get("finalizers") or []):
                    nmeta["finalizers"] = finalizers
                    changed = True
                if not changed or opts.dry_run:
                    return (cur.obj if not changed else new), False
                try:
                    e = await self.store.update(self.resource, ns, name, new, cur.rev)
                except RevisionConflict:
                    continue
                self._notify("MODIFIED", e.obj)
                return e.obj, False
            if opts.dry_run:
                return cur.obj, True
            try:
                e = await self.store.delete(self.resource, ns, name, cur.rev)
            except (RevisionConflict, KeyNotFound):
                continue
            await self._deleted(e.obj)
            return e.obj, True
        raise self._conflict(name, "too many concurrent writers, try again")

    async def _deleted(self, obj: Obj) -> None:
        await self.strategy.after_delete(obj)
        self._notify("DELETED", obj)

    async def delete_collection(self, namespace: str | None, opts: ListOptions,
                                dopts: DeleteOptions, user: Any = None) -> builtins.list[Obj]:
        res = await self.list(namespace, opts)
        out = []
        for e in res.items:
            try:
                obj, _ = await self.delete(e.namespace or None, e.name, dopts, WriteContext(dopts.dry_run, user=user))
                out.append(obj)
            except errors.ApiError as err:
                if err.code != 404:
                    raise
        return out

    # --- list --------------------------------------------------------------------------------
    async def list(self, namespace: str | None, opts: ListOptions) -> ListResult:
        ns = namespace if self.kind.namespaced and namespace else None
        entries, rev = await self.store.list(self.resource, ns)
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
                    entries = self._state_at(ns, entries, want)
                    rev = want
            elif want > rev:
                raise errors.ApiError(504, "Timeout", f"Too large resource version: {want}, current resource "
                                                      f"version: {rev}", retry_after=1)
        if opts.resource_version_match and opts.resource_version_match not in ("Exact", "NotOlderThan"):
            raise errors.bad_request(f"invalid resourceVersionMatch {opts.resource_version_match!r}: want Exact or "
                                     "NotOlderThan")
        if start_after is not None:
            entries = [e for e in entries if _ns_name(e) > start_after]
        selected = [e for e in entries if matches(e.obj, None, None, opts)] \
            if opts.label_selector or opts.field_selector else entries
        if opts.limit and opts.limit > 0 and len(selected) > opts.limit:
            page = selected[:opts.limit]
            token = base64.urlsafe_b64encode(json.dumps(
                {"rv": rev, "start": _ns_name(page[-1])}).encode()).decode()
            return ListResult(page, rev, token, len(selected) - len(page))
        return ListResult(selected, rev)

    def _state_at(self, ns: str | None, current: builtins.list[Entry], rev: int) -> builtins.list[Entry]:
        """The objects as they were at revision `rev`: undo the newer history (resourceVersionMatch=Exact)."""
        try:
            newer = self.store.history(self.resource, rev)
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
                state[key] = Entry(self.resource, ev.namespace, ev.name, int(prev["metadata"]["resourceVersion"]),
                                   prev, raw)
        return [state[k] for k in sorted(state) if ns is None or k[0] == ns]

    # --- watch -------------------------------------------------------------------------------
    async def watch(self, namespace: str | None, opts: ListOptions, *, name: str | None = None,
                    send_initial: bool | None = None, bookmarks: bool = False,
                    bookmark_interval: float = 10.0, timeout: float | None = None) -> WatchSession:
        """One watch request. Raises ApiError 410 at once when the revision is gone."""
        ns = namespace if self.kind.namespaced and namespace else None
        rv = opts.resource_version
        initial: builtins.list[Entry] = []
        if rv in (None, "", "0") or send_initial:
            # "Get state and start at most recent": synthetic ADDED for what exists now.
            entries, after = await self.store.list(self.resource, ns)
            initial = [e for e in entries if matches(e.obj, ns, name, opts)]
        else:
            try:
                after = int(rv)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {rv!r}: must be an integer") from None
        try:
            stream = self.store.watch(self.resource, after)
        except Expired as e:
            raise errors.gone(f"too old resource version: {e.requested} ({e.compacted})") from None
        return WatchSession(self.store, self.kind, stream, initial, ns, name, opts, after, bool(send_initial),
                            bookmarks, bookmark_interval, timeout)
