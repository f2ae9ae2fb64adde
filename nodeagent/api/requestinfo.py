"""Parse an API request path into (group, version, namespace, resource, name, subresource, verb),
as k8s.io/apiserver/pkg/endpoints/request/requestinfo.go does."""

from __future__ import annotations

from dataclasses import dataclass

# /api/v1/namespaces/{name}/status and /finalize address the namespace itself.
_NAMESPACE_SUBRESOURCES = {"status", "finalize"}


@dataclass
class RequestInfo:
    is_resource: bool
    path: str
    verb: str
    group: str = ""
    version: str = ""
    namespace: str | None = None
    resource: str = ""
    name: str | None = None
    subresource: str | None = None
    parts: tuple[str, ...] = ()  # everything after the subresource (proxy paths)

    @property
    def qualified_resource(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource


def parse(method: str, path: str, watch_param: bool) -> RequestInfo:
    parts = [p for p in path.split("/") if p]
    info = RequestInfo(is_resource=False, path=path, verb=method.lower())
    if not parts or parts[0] not in ("api", "apis"):
        return info
    if parts[0] == "api":
        if len(parts) < 2:
            return info
        info.group, info.version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return info
        info.group, info.version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return info
    info.is_resource = True
    watch = watch_param
    if rest[0] == "watch":
        watch = True
        rest = rest[1:]
        if not rest:
            info.is_resource = False
            return info
    if rest[0] == "namespaces" and len(rest) > 1:
        info.namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
        else:
            info.namespace = None if len(rest) <= 1 else rest[1]
            info.resource, info.name = "namespaces", rest[1]
            info.subresource = rest[2] if len(rest) > 2 else None
            info.namespace = None
            rest = []
    if rest:
        info.resource = rest[0]
        info.name = rest[1] if len(rest) > 1 else None
        info.subresource = rest[2] if len(rest) > 2 else None
        info.parts = tuple(rest[3:])
    m = method.upper()
    if m == "GET" or m == "HEAD":
        if watch:
            info.verb = "watch"
        else:
            info.verb = "get" if info.name else "list"
    elif m == "POST":
        info.verb = "create"
    elif m == "PUT":
        info.verb = "update"
    elif m == "PATCH":
        info.verb = "patch"
    elif m == "DELETE":
        info.verb = "delete" if info.name else "deletecollection"
    return info
