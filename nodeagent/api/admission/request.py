"""What an admission plugin sees of a write (upstream admission.Attributes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nodeagent.api.auth.user import UserInfo

CREATE, UPDATE, DELETE, CONNECT = "CREATE", "UPDATE", "DELETE", "CONNECT"


@dataclass
class Request:
    user: UserInfo
    operation: str
    group: str
    resource: str  # plural
    subresource: str
    namespace: str
    name: str
    obj: dict[str, Any] | None  # the new object (CREATE, UPDATE; the options body of a CONNECT)
    old: dict[str, Any] | None  # the stored object (UPDATE, DELETE)
    dry_run: bool = False

    @classmethod
    def of(cls, attrs: Any) -> Request:
        """From the registry's admission.Attributes."""
        from nodeagent.api.auth.user import UserInfo as _U

        return cls(attrs.user if attrs.user is not None else _U(""), attrs.operation, attrs.kind.group,
                   attrs.kind.plural, attrs.subresource or "", attrs.namespace or "", attrs.name or "", attrs.obj,
                   attrs.old, attrs.dry_run)

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def forbidden(self, why: str) -> Exception:
        """Upstream admission.NewForbidden: `pods "x" is forbidden: <why>`."""
        from nodeagent.api.errors import ApiError

        name = self.name or ((self.obj or {}).get("metadata") or {}).get("name") or ""
        label = self.qualified_resource + (f' "{name}"' if name else "")
        return ApiError(403, "Forbidden", f"{label} is forbidden: {why}", name=name or None,
                        group=self.group, kind=self.resource)
