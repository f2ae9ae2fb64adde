"""Simplified server-side apply: field sets and removal of fields a manager stopped applying."""

from __future__ import annotations

from typing import Any

from nodeagent.api.apply import apply, field_set, from_fields_v1, to_fields_v1


def _cfg(containers: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": labels},
            "spec": {"containers": containers}}


def test_field_set_uses_list_merge_keys_and_round_trips() -> None:
    fs = field_set(_cfg([{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}], {"a": "b"}))
    assert ("f:metadata", "f:labels", "f:a") in fs
    assert ("f:spec", "f:containers", 'k:{"name":"c"}', ".") in fs
    assert ("f:spec", "f:containers", 'k:{"name":"c"}', "f:ports", 'k:{"containerPort":80}', ".") in fs
    assert from_fields_v1(to_fields_v1(fs)) == fs


def test_reapply_removes_dropped_fields_and_keeps_others() -> None:
    first = _cfg([{"name": "a", "image": "1"}, {"name": "b", "image": "1"}], {"x": "1", "y": "2"})
    live = apply(None, first, "me", "v1", "t0")
    live["metadata"]["managedFields"] = live["metadata"].pop("__managedFields")
    live["metadata"]["labels"]["by-someone-else"] = "z"
    second = _cfg([{"name": "a", "image": "2"}], {"x": "1"})
    out = apply(live, second, "me", "v1", "t1")
    assert out["metadata"]["labels"] == {"x": "1", "by-someone-else": "z"}
    assert out["spec"]["containers"] == [{"name": "a", "image": "2"}]
    (entry,) = out["metadata"]["__managedFields"]
    assert entry["manager"] == "me" and entry["time"] == "t1"
