"""What a request asks, as the authorizers see it (upstream authorizer.AttributesRecord)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nodeagent.api.auth.user import UserInfo
from nodeagent.machinery.selectors import FieldRequirement


@dataclass(frozen=True)
class Attributes:
    user: UserInfo
    verb: str
    resource_request: bool = True
    namespace: str = ""
    api_group: str = ""
    api_version: str = "v1"
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""  # non-resource requests
    field_selector: tuple[FieldRequirement, ...] = field(default=())

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.api_group}" if self.api_group else self.resource

    def describe(self) -> str:
        """The part of upstream's Forbidden message after `User "x" cannot`."""
        if not self.resource_request:
            return f'{self.verb} path "{self.path}"'
        res = f"{self.resource}/{self.subresource}" if self.subresource else self.resource
        where = f' in the namespace "{self.namespace}"' if self.namespace else " at the cluster scope"
        return f'{self.verb} resource "{res}" in API group "{self.api_group}"{where}'
