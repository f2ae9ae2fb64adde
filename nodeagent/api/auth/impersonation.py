"""User impersonation (upstream k8s.io/apiserver/pkg/endpoints/filters/impersonation.go): the
Impersonate-User, Impersonate-Group, Impersonate-Uid and Impersonate-Extra-KEY headers make the
request run as someone else, once the caller is authorized to `impersonate` each of them
(users, groups, serviceaccounts; authentication.k8s.io uids and userextras/KEY)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from nodeagent.api import errors
from nodeagent.api.auth.attributes import Attributes
from nodeagent.api.auth.decision import Decision
from nodeagent.api.auth.user import (
    ANONYMOUS_USER,
    AUTHENTICATED_GROUP,
    UNAUTHENTICATED_GROUP,
    UserInfo,
    serviceaccount_groups,
    split_serviceaccount,
)

USER_HEADER, GROUP_HEADER, UID_HEADER, EXTRA_PREFIX = (
    "Impersonate-User", "Impersonate-Group", "Impersonate-Uid", "Impersonate-Extra-")


def impersonate(request: Any, user: UserInfo, authorize: Callable[[Attributes], Decision]) -> UserInfo:
    headers = request.headers
    name = headers.get(USER_HEADER)
    groups = headers.getall(GROUP_HEADER, [])
    uid = headers.get(UID_HEADER)
    extra: dict[str, list[str]] = {}
    for k, v in headers.items():
        if k.lower().startswith(EXTRA_PREFIX.lower()):
            extra.setdefault(unquote(k[len(EXTRA_PREFIX):]).lower(), []).append(v)
    if name is None:
        if groups or uid or extra:
            raise errors.bad_request("requested impersonation of groups, a uid or extras without impersonating a "
                                     "user (set Impersonate-User)")
        return user
    checks: list[Attributes] = []
    sa = split_serviceaccount(name)
    if sa:
        checks.append(Attributes(user=user, verb="impersonate", resource="serviceaccounts", namespace=sa[0],
                                 name=sa[1]))
    else:
        checks.append(Attributes(user=user, verb="impersonate", resource="users", name=name))
    checks += [Attributes(user=user, verb="impersonate", resource="groups", name=g) for g in groups]
    if uid:
        checks.append(Attributes(user=user, verb="impersonate", api_group="authentication.k8s.io",
                                 resource="uids", name=uid))
    for key, values in extra.items():
        checks += [Attributes(user=user, verb="impersonate", api_group="authentication.k8s.io", resource="userextras",
                              subresource=key, name=v) for v in values]
    for attrs in checks:
        d = authorize(attrs)
        if not d.allowed:
            res = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
            raise errors.ApiError(403, "Forbidden", f'{res} "{attrs.name}" is forbidden: User "{user.name}" cannot '
                                                    f"{attrs.describe()}" + (f": {d.reason}" if d.reason else ""),
                                  name=attrs.name, group=attrs.api_group, kind=attrs.resource)
    all_groups = list(groups)
    if sa:
        all_groups += [g for g in serviceaccount_groups(sa[0]) if g not in all_groups]
    marker = UNAUTHENTICATED_GROUP if name == ANONYMOUS_USER else AUTHENTICATED_GROUP
    if marker not in all_groups:
        all_groups.append(marker)
    return UserInfo(name=name, uid=uid or "", groups=tuple(all_groups),
                    extra=tuple((k, tuple(v)) for k, v in sorted(extra.items())))
