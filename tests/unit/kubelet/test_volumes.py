"""Volume files: configMap/secret items and modes, atomic updates, downwardAPI, projected."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from nodeagent.kubelet.volumes import VolumeError, container_mounts, materialize_volumes, remove_pod_dir


def _pod(volumes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web", "tier": "x"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"memory": "64Mi"}}}], "volumes": volumes}}


def test_configmap_items_mode_and_atomic_update(tmp_path: Path) -> None:
    pod = _pod([{"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "a", "path": "sub/a.txt"}],
                                              "defaultMode": 0o600}}])
    paths = materialize_volumes(pod, str(tmp_path), {"cfg": {"data": {"a": "one", "b": "skipped"}}})
    d = Path(paths["cfg"])
    assert (d / "sub" / "a.txt").read_text() == "one" and not (d / "b").exists()
    assert oct((d / "..data" / "sub" / "a.txt").stat().st_mode & 0o777) == "0o600"
    first = os.readlink(d / "..data")
    materialize_volumes(pod, str(tmp_path), {"cfg": {"data": {"a": "two"}}})
    assert (d / "sub" / "a.txt").read_text() == "two"
    second = os.readlink(d / "..data")
    assert second != first and not (d / first).exists()  # swapped in one rename, old copy removed
    materialize_volumes(pod, str(tmp_path), {"cfg": {"data": {"a": "two"}}})
    assert os.readlink(d / "..data") == second  # unchanged content: no rewrite


def test_secret_and_missing_objects(tmp_path: Path) -> None:
    vols = [{"name": "s", "secret": {"secretName": "sec"}}]
    paths = materialize_volumes(_pod(vols), str(tmp_path), {"s": {"data": {"pw": base64.b64encode(b"x1").decode()}}})
    assert (Path(paths["s"]) / "pw").read_bytes() == b"x1"
    with pytest.raises(VolumeError, match='secret "sec" not found'):
        materialize_volumes(_pod(vols), str(tmp_path), {"s": None})
    opt = [{"name": "s", "secret": {"secretName": "sec", "optional": True}}]
    assert "s" in materialize_volumes(_pod(opt), str(tmp_path), {"s": None})


def test_downward_api_and_projected(tmp_path: Path) -> None:
    vols = [
        {"name": "info", "downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
            {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}},
        ]}},
        {"name": "all", "projected": {"sources": [
            {"configMap": {"name": "cm"}},
            {"secret": {"name": "sec", "items": [{"key": "pw", "path": "creds/pw"}]}},
            {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ]}},
    ]
    objs: dict[str, dict[str, Any] | None] = {"all:0": {"data": {"greeting": "hi"}}, "all:1": {"data": {"pw": base64.b64encode(b"p").decode()}}}
    paths = materialize_volumes(_pod(vols), str(tmp_path), objs)
    info = Path(paths["info"])
    assert (info / "name").read_text() == "p" and (info / "app").read_text() == "web"
    assert (info / "labels").read_text() == 'app="web"\ntier="x"'
    assert (info / "mem").read_text() == "64"
    allv = Path(paths["all"])
    assert (allv / "greeting").read_text() == "hi" and (allv / "creds" / "pw").read_text() == "p"
    assert (allv / "ns").read_text() == "ns"


def test_mounts_and_cleanup(tmp_path: Path) -> None:
    pod = _pod([{"name": "scratch", "emptyDir": {}}, {"name": "host", "hostPath": {"path": str(tmp_path / "h"),
                                                                                  "type": "DirectoryOrCreate"}}])
    paths = materialize_volumes(pod, str(tmp_path / "pods"), {})
    assert (tmp_path / "h").is_dir()
    c = {"name": "c", "volumeMounts": [{"name": "scratch", "mountPath": "/s", "subPath": "d"},
                                       {"name": "host", "mountPath": "/h", "readOnly": True}]}
    mounts = container_mounts(c, paths)
    assert mounts[0].host_path.endswith("kubernetes.io~empty-dir/scratch/d") and os.path.isdir(mounts[0].host_path)
    assert mounts[1].readonly and mounts[1].host_path == str(tmp_path / "h")
    with pytest.raises(VolumeError, match="names no volume"):
        container_mounts({"name": "c", "volumeMounts": [{"name": "nfs", "mountPath": "/n"}]}, paths)
    remove_pod_dir(str(tmp_path / "pods"), "u1")
    assert not (tmp_path / "pods" / "u1").exists() and (tmp_path / "h").is_dir()  # hostPaths are never removed
