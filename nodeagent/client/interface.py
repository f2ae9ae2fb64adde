"""ClientProtocol: what every component may call on the one client (docs/components.md, "The
shared client"). `Client` (rest.py) is the implementation against an apiserver; unit tests pass
tests/helpers/fake_client.FakeClient, the real registry in memory behind the same calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol

from nodeagent.client.rest import WatchEvent
from nodeagent.machinery.kinds import Kind

Obj = dict[str, Any]


class ClientProtocol(Protocol):
    async def get(self, kind: Kind, name: str, namespace: str | None = None) -> Obj: ...

    async def list(self, kind: Kind, namespace: str | None = None,
                   label_selector: str | dict[str, str] | None = None, field_selector: str | None = None,
                   limit: int | None = None, continue_: str | None = None,
                   resource_version: str | None = None,
                   resource_version_match: str | None = None) -> Obj: ...

    async def create(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj: ...

    async def update(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj: ...

    async def update_status(self, kind: Kind, obj: Obj, namespace: str | None = None) -> Obj: ...

    async def patch(self, kind: Kind, name: str, patch: Any, namespace: str | None = None,
                    patch_type: str = "merge", subresource: str | None = None) -> Obj: ...

    async def delete(self, kind: Kind, name: str, namespace: str | None = None,
                     grace_period_seconds: int | None = None, propagation_policy: str | None = None,
                     preconditions: dict[str, str] | None = None) -> Obj: ...

    async def create_subresource(self, kind: Kind, name: str, subresource: str, body: Obj,
                                 namespace: str | None = None) -> Obj: ...

    def watch(self, kind: Kind, namespace: str | None = None, resource_version: str | None = None,
              label_selector: str | dict[str, str] | None = None, field_selector: str | None = None,
              timeout_seconds: int | None = None, allow_bookmarks: bool = True) -> AsyncIterator[WatchEvent]:
        """One watch request (an async generator in both implementations)."""
        ...

    async def close(self) -> None: ...
