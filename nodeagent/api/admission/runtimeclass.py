"""RuntimeClass admission (upstream plugin/pkg/admission/runtimeclass/admission.go), on by default
as upstream: a pod created with spec.runtimeClassName gets its RuntimeClass's overhead.podFixed as
spec.overhead (the scheduler adds it to the pod's requests) and its scheduling.nodeSelector and
tolerations merged into the pod's; an unknown class, a conflicting nodeSelector or an overhead the
pod set itself is refused with 403 Forbidden and upstream's message."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.api.admission import Attributes
from nodeagent.api.admission.request import Request
from nodeagent.machinery.kinds import PODS
from nodeagent.machinery.quantity import parse_quantity

Obj = dict[str, Any]
GetRuntimeClass = Callable[[str], Awaitable[Obj | None]]


def _forbidden(attrs: Attributes, why: str) -> Exception:
    """admission.NewForbidden: `pods "NAME" is forbidden: WHY`."""
    return Request.of(attrs).forbidden(why)


def _same_quantities(a: Obj, b: Obj) -> bool:
    """apiequality.Semantic: quantities compare by value ("1000m" == "1")."""
    try:
        return a.keys() == b.keys() and all(parse_quantity(a[k]) == parse_quantity(b[k]) for k in a)
    except ValueError:
        return False


class RuntimeClassAdmission:
    name = "RuntimeClass"

    def __init__(self, get_runtime_class: GetRuntimeClass) -> None:
        self._get = get_runtime_class

    @staticmethod
    def _applies(attrs: Attributes) -> bool:
        return attrs.operation == "CREATE" and attrs.kind == PODS and attrs.subresource is None and attrs.obj is not None

    async def _runtime_class(self, attrs: Attributes) -> Obj | None:
        assert attrs.obj is not None
        name = (attrs.obj.get("spec") or {}).get("runtimeClassName")
        if not name:
            return None
        rc = await self._get(str(name))
        if rc is None or (rc.get("metadata") or {}).get("deletionTimestamp"):
            raise _forbidden(attrs, f'pod rejected: RuntimeClass "{name}" not found')
        return rc

    async def admit(self, attrs: Attributes) -> None:
        if not self._applies(attrs):
            return
        rc = await self._runtime_class(attrs)
        if rc is None:
            return
        assert attrs.obj is not None
        spec = attrs.obj.setdefault("spec", {})
        fixed = (rc.get("overhead") or {}).get("podFixed")
        if fixed is not None:
            if spec.get("overhead") and not _same_quantities(fixed, spec["overhead"]):
                raise _forbidden(attrs, "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead")
            spec["overhead"] = copy.deepcopy(fixed)
        scheduling = rc.get("scheduling") or {}
        selector = dict(spec.get("nodeSelector") or {})
        for key, want in (scheduling.get("nodeSelector") or {}).items():
            have = selector.get(key)
            if have is not None and have != want:
                raise _forbidden(attrs, f"conflict: runtimeClass.scheduling.nodeSelector[{key}] = {want}; "
                                        f"pod.spec.nodeSelector[{key}] = {have}")
            selector[key] = want
        if selector:
            spec["nodeSelector"] = selector
        tolerations = list(spec.get("tolerations") or [])
        for tol in scheduling.get("tolerations") or []:
            if tol not in tolerations:  # upstream merges without duplicates
                tolerations.append(copy.deepcopy(tol))
        if tolerations:
            spec["tolerations"] = tolerations

    async def validate(self, attrs: Attributes) -> None:
        if not self._applies(attrs):
            return
        assert attrs.obj is not None
        rc = await self._runtime_class(attrs)
        if (attrs.obj.get("spec") or {}).get("overhead") and not (rc and (rc.get("overhead") or {}).get("podFixed")):
            raise _forbidden(attrs, "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead")
