"""The Strategy: everything that differs between kinds, as upstream's rest.RESTCreateStrategy,
RESTUpdateStrategy, RESTDeleteStrategy and the Store's hooks (pkg/registry/*/strategy.go).

The generic store (generic.py) calls these methods in a fixed order and does the rest itself
(metadata bookkeeping, optimistic concurrency, finalizers, dry runs, storage, watch):

  create:  check_create = validate_metadata -> default -> prepare_for_create -> validate -> canonicalize
  update:  check_update = prepare_for_update -> default -> validate_metadata -> validate_update
           -> canonicalize
           (status subresource: prepare_for_status_update only)
  delete:  check_delete, grace_period, holds_deletion, prepare_for_delete; a deleting object whose
           last finalizer went is removed by the update when deletion_complete says so
  after:   after_delete (on every removal), restore (at start, with the stored objects)

A write's side effects outside the object (allocations) are registered on the WriteContext as a
Finish and committed or reverted by the generic store. Class attributes hold the yes/no rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from nodeagent.api.allocators import ClusterIPAllocator, NodePortAllocator
from nodeagent.api.defaults import DEFAULT_TOLERATION_SECONDS
from nodeagent.api.registry.options import DeleteOptions, WriteContext, deep_copy
from nodeagent.api.tables import DEFAULT_PRINTER, Printer
from nodeagent.api.validation import SUBDOMAIN, Cause, validate_metadata
from nodeagent.machinery.kinds import Kind

Obj = dict[str, Any]


@dataclass
class Shared:
    """What the strategies of one Registry share: the Service allocators and admission defaults."""

    cluster_ips: ClusterIPAllocator
    node_ports: NodePortAllocator
    default_toleration_seconds: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_TOLERATION_SECONDS))


class Strategy:
    # metadata.name format (validation.SUBDOMAIN, LABEL, LABEL1035, PATH_SEGMENT).
    name_rule: ClassVar[str] = SUBDOMAIN
    # metadata.generation starts at 1 and counts changes to everything but metadata and status.
    generation: ClassVar[bool] = False
    # A PUT of a missing object creates it (upstream AllowCreateOnUpdate).
    create_on_update: ClassVar[bool] = False
    # propagationPolicy Foreground/Orphan become the foregroundDeletion/orphan finalizers.
    gc_finalizers: ClassVar[bool] = True
    # A POST to this kind's collection is a POST to this subresource of the object the body names
    # (upstream's BindingREST serves both /bindings and pods/NAME/binding).
    posts_as_subresource: ClassVar[str | None] = None
    # kubectl's columns (server-side Table output).
    printer: ClassVar[Printer] = DEFAULT_PRINTER

    def __init__(self, kind: Kind, shared: Shared) -> None:
        self.kind = kind
        self.shared = shared
        self.status_subresource = "status" in kind.subresources

    # --- create ------------------------------------------------------------------------------
    async def check_create(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        """Default and validate a new object; the causes of a 422 (empty when valid)."""
        causes = validate_metadata(obj.get("metadata"), self.name_rule)
        self.default(obj)
        self.prepare_for_create(obj, ctx)
        causes += self.validate(obj, ctx)
        if not causes:
            self.canonicalize(obj)
        return causes

    def default(self, obj: Obj) -> None:
        """Fill in defaults (upstream's SetDefaults_*, applied to every object written, so also to
        objects the unit tests' fake client seeds)."""

    def prepare_for_create(self, obj: Obj, ctx: WriteContext) -> None:
        """The status a new object starts with, and what else a create resets."""

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        return []

    def canonicalize(self, obj: Obj) -> None:
        """The stored form of a valid object (e.g. a Secret's stringData folded into data)."""

    # --- update ------------------------------------------------------------------------------
    async def check_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        self.prepare_for_update(new, old, ctx)
        self.default(new)
        raw = new.get("metadata")
        meta: Obj = raw if isinstance(raw, dict) else {}
        name = (old.get("metadata") or {}).get("name", "")
        causes = validate_metadata({**meta, "name": name}, self.name_rule)
        causes += self.validate_update(new, old, ctx)
        if not causes:
            self.canonicalize(new)
        return causes

    def prepare_for_update(self, new: Obj, old: Obj, ctx: WriteContext) -> None:
        """What the main resource may not change (the status, when it has a subresource)."""
        if self.status_subresource:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        return []

    def prepare_for_status_update(self, new: Obj, old: Obj) -> Obj:
        """The status subresource changes the status only."""
        result = deep_copy(old)
        result["status"] = new.get("status") if new.get("status") is not None else {}
        return result

    # --- delete ------------------------------------------------------------------------------
    def check_delete(self, obj: Obj) -> None:
        """Raise ApiError when this object may not be deleted at all."""

    def grace_period(self, obj: Obj, opts: DeleteOptions) -> int:
        """Seconds the object stays, marked, before it is removed (upstream CheckGracefulDelete)."""
        return 0

    def holds_deletion(self, obj: Obj) -> bool:
        """Whether a delete only marks the object even without grace or finalizers (a namespace
        waits for its content to go)."""
        return False

    def prepare_for_delete(self, obj: Obj) -> None:
        """Changes that come with the deletion mark (a namespace's Terminating phase)."""

    def deletion_complete(self, obj: Obj) -> bool:
        """A marked object whose last finalizer is gone is removed by that update (upstream
        ShouldDeleteDuringUpdate)."""
        return True

    # --- hooks -------------------------------------------------------------------------------
    async def after_delete(self, obj: Obj) -> None:
        """The object left storage (released allocations and the like)."""

    async def restore(self, objs: Iterable[Obj]) -> None:
        """At start: rebuild in-memory state (allocations) from the stored objects."""
