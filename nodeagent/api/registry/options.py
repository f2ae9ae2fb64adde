"""The values that travel between the HTTP layer, the registry and the strategies: options of a
list or delete, one write's context (dry run, who asks, its pending allocations), and helpers for
metadata every kind shares."""

from __future__ import annotations

import datetime
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from nodeagent.api import errors
from nodeagent.api.store import Entry
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.patch import PatchError, json_patch, merge_patch, strategic_merge
from nodeagent.machinery.selectors import FieldRequirement, Requirement

Obj = dict[str, Any]


def resource_key(kind: Kind) -> str:
    """The Store's resource name: "pods", "deployments.apps" (upstream's /registry/<resource> prefix)."""
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def now_rfc3339(offset: float = 0.0) -> str:
    t = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def copy_obj(e: Entry) -> Obj:
    """A private deep copy of a stored object (json round trip is the fastest deep copy here)."""
    return json.loads(e.raw)


def deep_copy(obj: Obj) -> Obj:
    return json.loads(json.dumps(obj))


def meta_of(obj: Obj) -> Obj:
    """obj["metadata"] as a dict, created when missing."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def check_shape(kind: Kind, obj: Obj) -> None:
    """metadata, spec and status are objects, and names strings, whatever the patch produced."""
    for fld in ("metadata", "spec", "status"):
        if obj.get(fld) is not None and not isinstance(obj[fld], dict):
            raise errors.bad_request(f"{kind.kind}.{fld}: expected an object, got {type(obj[fld]).__name__}")
    meta = obj.get("metadata") or {}
    for fld in ("name", "namespace", "generateName", "resourceVersion"):
        if meta.get(fld) is not None and not isinstance(meta[fld], str):
            raise errors.bad_request(f"{kind.kind}.metadata.{fld}: expected a string, got {type(meta[fld]).__name__}")


_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def random_suffix(n: int = 5) -> str:
    # Upstream's generateName alphabet: no vowels (no words), no confusable characters.
    return "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(n))


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


class Finish(Protocol):
    """What a write started besides the object itself (upstream's FinishFunc): committed once the
    object is stored, reverted when the write fails, is a no-op or a dry run."""

    async def commit(self) -> None: ...
    async def revert(self) -> None: ...


@dataclass
class WriteContext:
    """One create, update or delete as the strategies and admission see it."""

    dry_run: bool = False
    allow_reserved: bool = False  # the bootstrap's kubernetes Service may take the range's first IP
    user: Any = None  # the authenticated UserInfo (None for the apiserver's own writes)
    subresource: str | None = None
    pending: list[Finish] = field(default_factory=list)

    def add(self, finish: Finish) -> None:
        self.pending.append(finish)

    async def commit(self) -> None:
        pending, self.pending = self.pending, []
        for f in pending:
            await f.commit()

    async def revert(self) -> None:
        pending, self.pending = self.pending, []
        for f in reversed(pending):
            await f.revert()


def apply_patch(patch_type: str, cur: Any, patch: Any) -> Obj:
    """The patched object; 400 for a malformed patch, 422 for one that does not apply."""
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
    return out
