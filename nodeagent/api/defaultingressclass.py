"""The DefaultIngressClass admission plugin (upstream plugin/pkg/admission/network/defaultingressclass):
an Ingress created without spec.ingressClassName and without the legacy kubernetes.io/ingress.class
annotation gets the name of the IngressClass annotated ingressclass.kubernetes.io/is-default-class:
"true"; with several such classes, the newest (ties: the first name), as upstream since 1.28."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.api.admission import Attributes
from nodeagent.api.registry.strategies.ingresses import ANNOTATION_DEFAULT_CLASS, ANNOTATION_INGRESS_CLASS
from nodeagent.machinery.kinds import INGRESSES

Obj = dict[str, Any]


def default_class(classes: list[Obj]) -> Obj | None:
    """The newest class marked default (getDefaultClass)."""
    marked = [c for c in classes
              if ((c.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_DEFAULT_CLASS) == "true"]
    if not marked:
        return None
    # RFC 3339 timestamps of one format sort as strings; newest first, then by name
    marked.sort(key=lambda c: str((c.get("metadata") or {}).get("name", "")))
    marked.sort(key=lambda c: str((c.get("metadata") or {}).get("creationTimestamp", "")), reverse=True)
    return marked[0]


class DefaultIngressClass:
    name = "DefaultIngressClass"

    def __init__(self, list_classes: Callable[[], Awaitable[list[Obj]]]) -> None:
        self._list = list_classes

    async def admit(self, attrs: Attributes) -> None:
        if attrs.kind != INGRESSES or attrs.operation != "CREATE" or attrs.subresource or attrs.obj is None:
            return
        spec = attrs.obj.get("spec")
        if not isinstance(spec, dict) or spec.get("ingressClassName") is not None:
            return
        annotations = (attrs.obj.get("metadata") or {}).get("annotations") or {}
        if isinstance(annotations, dict) and ANNOTATION_INGRESS_CLASS in annotations:
            return
        cls = default_class(await self._list())
        if cls is not None:
            spec["ingressClassName"] = cls["metadata"]["name"]

    async def validate(self, attrs: Attributes) -> None:
        pass


def default_ingress_class(registry: Any) -> DefaultIngressClass:
    """The plugin over a Registry's stored IngressClasses."""
    from nodeagent.api.registry.options import ListOptions
    from nodeagent.machinery.kinds import INGRESSCLASSES

    async def classes() -> list[Obj]:
        return [e.obj for e in (await registry.list(INGRESSCLASSES, None, ListOptions())).items]

    return DefaultIngressClass(classes)
