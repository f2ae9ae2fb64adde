"""RuntimeClass (node.k8s.io/v1): its validation and columns, and the RuntimeClass admission of
pods (overhead, scheduling, unknown classes), on the real registry over a MemoryStore."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeagent.api.errors import ApiError
from nodeagent.api.memory_store import MemoryStore
from nodeagent.api.registry import Registry
from nodeagent.machinery import kinds

Obj = dict[str, Any]


@pytest.fixture
async def reg() -> AsyncIterator[Registry]:
    r = Registry(MemoryStore())
    await r.start()
    await r.ensure_namespace("default")
    try:
        yield r
    finally:
        await r.close()


def rc(name: str, handler: Any = "crun", **extra: Any) -> Obj:
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name},
            "handler": handler, **extra}


def pod(name: str, **spec: Any) -> Obj:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nodeagent.local/toolbox:1"}],
                                                 **spec}}


async def test_a_runtime_class_is_cluster_scoped_with_upstream_columns(reg: Registry) -> None:
    obj = await reg.create(kinds.RUNTIME_CLASSES, None, rc("fast"))
    assert obj["handler"] == "crun" and "namespace" not in obj["metadata"] and "status" not in obj
    printer = reg.strategy(kinds.RUNTIME_CLASSES).printer
    assert [c[0] for c in printer.columns] == ["Name", "Handler", "Age"]
    assert printer.row(obj)[:2] == ["fast", "crun"]


@pytest.mark.parametrize("body, field, text", [
    (rc("a", handler=""), "handler", "Required value"),
    (rc("b", handler="Not_A_Label"), "handler", "a lowercase RFC 1123 label"),
    (rc("c", overhead={"podFixed": {"cpu": "-1"}}), "overhead.podFixed[cpu]", "must be greater than or equal to 0"),
    (rc("d", overhead={"podFixed": {"memory": "lots"}}), "overhead.podFixed[memory]", "quantities must match"),
    (rc("e", scheduling={"nodeSelector": {"bad key!": "x"}}), "scheduling.nodeSelector", "name part must consist"),
    (rc("f", scheduling={"tolerations": [{"key": "k", "operator": "Maybe"}]}), "scheduling.tolerations[0].operator",
     "Unsupported value"),
])
async def test_invalid_runtime_classes_are_422(reg: Registry, body: Obj, field: str, text: str) -> None:
    with pytest.raises(ApiError) as e:
        await reg.create(kinds.RUNTIME_CLASSES, None, body)
    assert e.value.code == 422
    causes = e.value.status()["details"]["causes"]
    assert any(c["field"] == field and text in c["message"] for c in causes), causes


async def test_the_handler_is_immutable(reg: Registry) -> None:
    await reg.create(kinds.RUNTIME_CLASSES, None, rc("fast"))
    obj = (await reg.get(kinds.RUNTIME_CLASSES, None, "fast")).obj
    with pytest.raises(ApiError, match="field is immutable") as e:
        await reg.update(kinds.RUNTIME_CLASSES, None, "fast", {**obj, "handler": "runc"})
    assert e.value.code == 422
    await reg.update(kinds.RUNTIME_CLASSES, None, "fast", {**obj, "metadata": {**obj["metadata"],
                                                                               "labels": {"tier": "fast"}}})


async def test_an_unknown_runtime_class_is_forbidden(reg: Registry) -> None:
    with pytest.raises(ApiError) as e:
        await reg.create(kinds.PODS, "default", pod("p", runtimeClassName="nope"))
    assert e.value.code == 403
    assert str(e.value) == 'pods "p" is forbidden: pod rejected: RuntimeClass "nope" not found'


async def test_admission_copies_overhead_and_merges_scheduling(reg: Registry) -> None:
    await reg.create(kinds.RUNTIME_CLASSES, None, rc(
        "sandboxed", overhead={"podFixed": {"cpu": "250m", "memory": "120Mi"}},
        scheduling={"nodeSelector": {"runtime": "crun"},
                    "tolerations": [{"key": "crun-only", "operator": "Exists", "effect": "NoSchedule"}]}))
    p = await reg.create(kinds.PODS, "default", pod("p", runtimeClassName="sandboxed", nodeSelector={"zone": "a"}))
    spec = p["spec"]
    assert spec["overhead"] == {"cpu": "250m", "memory": "120Mi"}
    assert spec["nodeSelector"] == {"zone": "a", "runtime": "crun"}
    assert {"key": "crun-only", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    # the same overhead set by hand (by value) is accepted; a different one is not
    same = await reg.create(kinds.PODS, "default", pod("q", runtimeClassName="sandboxed",
                                                       overhead={"cpu": "0.25", "memory": "120Mi"}))
    assert same["spec"]["overhead"] == {"cpu": "250m", "memory": "120Mi"}
    with pytest.raises(ApiError, match="Pod's Overhead doesn't match RuntimeClass's defined Overhead") as e:
        await reg.create(kinds.PODS, "default", pod("r", runtimeClassName="sandboxed", overhead={"cpu": "1"}))
    assert e.value.code == 403
    with pytest.raises(ApiError, match=r"conflict: runtimeClass.scheduling.nodeSelector\[runtime\] = crun; "
                                       r"pod.spec.nodeSelector\[runtime\] = runc"):
        await reg.create(kinds.PODS, "default", pod("s", runtimeClassName="sandboxed", nodeSelector={"runtime": "runc"}))


async def test_overhead_without_a_runtime_class_overhead_is_forbidden(reg: Registry) -> None:
    await reg.create(kinds.RUNTIME_CLASSES, None, rc("plain"))
    for p in (pod("a", overhead={"cpu": "1"}), pod("b", runtimeClassName="plain", overhead={"cpu": "1"})):
        with pytest.raises(ApiError, match="Pod Overhead set without corresponding RuntimeClass defined Overhead"):
            await reg.create(kinds.PODS, "default", p)
    plain = await reg.create(kinds.PODS, "default", pod("c", runtimeClassName="plain"))
    assert "overhead" not in plain["spec"]
