"""Pod volumes on the node: emptyDir, hostPath, configMap, secret, downwardAPI and projected (with
service account tokens, kubelet/tokens.py).

Layout as upstream: DIR/kubelet/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>. ConfigMap and
Secret contents are written atomically the way upstream's AtomicWriter does: the files go into a
fresh timestamped directory, `..data` is swapped to point at it with one rename, and each visible
name is a symlink through `..data`, so a reader never sees half an update.
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.kubelet.env import ObjectGetter
from nodeagent.kubelet.model import Mount

log = logging.getLogger(__name__)


class VolumeError(Exception):
    """A volume cannot be set up yet (reported as a FailedMount event)."""


PLUGIN_DIRS = {"emptyDir": "kubernetes.io~empty-dir", "configMap": "kubernetes.io~configmap",
               "secret": "kubernetes.io~secret", "downwardAPI": "kubernetes.io~downward-api",
               "projected": "kubernetes.io~projected"}


def pod_dir(pods_dir: str, uid: str) -> str:
    return os.path.join(pods_dir, uid)


def _atomic_write(target: str, files: dict[str, bytes], mode: int) -> None:
    os.makedirs(target, exist_ok=True)
    data_link = os.path.join(target, "..data")
    try:
        current = os.readlink(data_link)
    except OSError:
        current = None
    if current is not None:
        old = {}
        base = os.path.join(target, current)
        for root, _, names in os.walk(base):
            for n in names:
                p = os.path.join(root, n)
                with open(p, "rb") as f:
                    old[os.path.relpath(p, base)] = f.read()
        if old == files:
            return
    ts = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    new_dir = os.path.join(target, ts)
    os.makedirs(new_dir)
    for rel, content in files.items():
        p = os.path.join(new_dir, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(content)
        os.chmod(p, mode)
    tmp_link = os.path.join(target, "..data_tmp")
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(ts, tmp_link)
    os.rename(tmp_link, data_link)
    for rel in {r.split("/", 1)[0] for r in files}:
        link = os.path.join(target, rel)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..data", rel), link)
    for rel in os.listdir(target):  # names no longer present
        if rel.startswith(".."):
            continue
        if rel not in {r.split("/", 1)[0] for r in files}:
            os.unlink(os.path.join(target, rel))
    if current is not None and current != ts:
        shutil.rmtree(os.path.join(target, current), ignore_errors=True)


def _project(data: dict[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    out = {}
    for it in items:
        if it["key"] in data:
            out[it.get("path") or it["key"]] = data[it["key"]]
    return out


# (pod, serviceAccountToken source) -> the token (kubelet/tokens.py TokenManager.token)
TokenGetter = Callable[[dict[str, Any], dict[str, Any]], Awaitable[bytes]]


async def setup_volumes(pod: dict[str, Any], pods_dir: str, get: ObjectGetter,
                        token: TokenGetter | None = None) -> dict[str, str]:
    """Create or refresh every volume of the pod; return volume name -> host path."""
    ns = pod["metadata"].get("namespace", "default")
    objects: dict[str, Any] = {}
    for vol in pod.get("spec", {}).get("volumes") or []:
        if "configMap" in vol:
            objects[vol["name"]] = await get("configmap", ns, vol["configMap"].get("name", ""))
        elif "secret" in vol:
            objects[vol["name"]] = await get("secret", ns, vol["secret"].get("secretName", ""))
        elif "projected" in vol:
            for idx, src in enumerate(vol["projected"].get("sources") or []):
                if "configMap" in src:
                    objects[f"{vol['name']}:{idx}"] = await get("configmap", ns, src["configMap"].get("name", ""))
                elif "secret" in src:
                    objects[f"{vol['name']}:{idx}"] = await get("secret", ns, src["secret"].get("name", ""))
                elif "serviceAccountToken" in src:
                    if token is None:
                        raise VolumeError(f"projected volume {vol['name']!r}: no token source for serviceAccountToken")
                    try:
                        objects[f"{vol['name']}:{idx}"] = await token(pod, src["serviceAccountToken"])
                    except Exception as e:
                        raise VolumeError(f"projected volume {vol['name']!r}: cannot get a service account token: "
                                          f"{e}") from e
    return materialize_volumes(pod, pods_dir, objects)


def _object_data(kind: str, obj: dict[str, Any]) -> dict[str, bytes]:
    if kind == "configMap":
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data
    data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
    return data


def _format_map(m: dict[str, str]) -> str:
    # upstream fieldpath.FormatMap: key="value" lines, sorted, values quoted as Go's %q
    import json

    return "\n".join(f"{k}={json.dumps(v)}" for k, v in sorted(m.items()))


def downward_value(pod: dict[str, Any], item: dict[str, Any]) -> bytes:
    """One downwardAPI volume item (metadata fields; resource fields of a container)."""
    import re

    from nodeagent.kubelet.env import resource_field_value

    meta = pod.get("metadata", {})
    if "fieldRef" in item:
        path = item["fieldRef"].get("fieldPath", "")
        simple = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "default"),
                  "metadata.uid": meta.get("uid", "")}
        if path in simple:
            return str(simple[path]).encode()
        if path in ("metadata.labels", "metadata.annotations"):
            return _format_map(meta.get(path.split(".", 1)[1]) or {}).encode()
        m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
        if m:
            return str((meta.get(m.group(1)) or {}).get(m.group(2), "")).encode()
        raise VolumeError(f"downwardAPI: unsupported fieldPath {path!r} (volume files take metadata fields only)")
    if "resourceFieldRef" in item:
        ref = item["resourceFieldRef"]
        containers = pod.get("spec", {}).get("containers") or []
        c = next((c for c in containers if c["name"] == ref.get("containerName")), containers[0] if containers else {})
        return resource_field_value(c, ref, {}).encode()
    raise VolumeError(f"downwardAPI item {item.get('path')!r} has neither fieldRef nor resourceFieldRef")


def _projected_files(pod: dict[str, Any], vol: dict[str, Any], objects: dict[str, Any]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for idx, src in enumerate(vol["projected"].get("sources") or []):
        if "configMap" in src or "secret" in src:
            kind = "configMap" if "configMap" in src else "secret"
            obj = objects.get(f"{vol['name']}:{idx}")
            if obj is None:
                if src[kind].get("optional"):
                    continue
                raise VolumeError(f'{kind} "{src[kind].get("name")}" not found (projected volume {vol["name"]!r})')
            files.update(_project(_object_data(kind, obj), src[kind].get("items")))
        elif "downwardAPI" in src:
            for item in src["downwardAPI"].get("items") or []:
                files[item["path"]] = downward_value(pod, item)
        elif "serviceAccountToken" in src:
            tok = objects.get(f"{vol['name']}:{idx}")
            if isinstance(tok, bytes):
                files[src["serviceAccountToken"].get("path") or "token"] = tok
    return files


def _host_path(vol: dict[str, Any]) -> str:
    hp = vol["hostPath"]
    p = str(hp["path"])
    kind = hp.get("type") or ""
    if kind == "DirectoryOrCreate":
        os.makedirs(p, mode=0o755, exist_ok=True)
    elif kind == "FileOrCreate" and not os.path.exists(p):
        os.makedirs(os.path.dirname(p), exist_ok=True)
        open(p, "a").close()
    elif kind == "Directory" and not os.path.isdir(p):
        raise VolumeError(f"hostPath type check failed: {p} is not a directory")
    elif kind == "File" and not os.path.isfile(p):
        raise VolumeError(f"hostPath type check failed: {p} is not a file")
    elif kind == "Socket" and not os.path.exists(p):
        raise VolumeError(f"hostPath type check failed: {p} is not a socket file")
    return p


def materialize_volumes(pod: dict[str, Any], pods_dir: str, objects: dict[str, Any]) -> dict[str, str]:
    """The file-system half of setup_volumes: `objects` holds each configMap/secret volume's source."""
    uid = pod["metadata"]["uid"]
    base = os.path.join(pod_dir(pods_dir, uid), "volumes")
    paths: dict[str, str] = {}
    for vol in pod.get("spec", {}).get("volumes") or []:
        name = vol["name"]
        if "emptyDir" in vol:
            p = os.path.join(base, PLUGIN_DIRS["emptyDir"], name)
            os.makedirs(p, exist_ok=True)
            os.chmod(p, 0o777)  # upstream: world-writable so non-root containers can share it
        elif "hostPath" in vol:
            p = _host_path(vol)
        elif "configMap" in vol or "secret" in vol:
            kind = "configMap" if "configMap" in vol else "secret"
            src = vol[kind]
            obj_name = src.get("name") if kind == "configMap" else src.get("secretName")
            obj = objects.get(name)
            if obj is None and not src.get("optional"):
                raise VolumeError(f'{kind} "{obj_name}" not found (volume {name!r})')
            data = _object_data(kind, obj) if obj is not None else {}
            p = os.path.join(base, PLUGIN_DIRS[kind], name)
            mode = int(src.get("defaultMode", 0o644))
            _atomic_write(p, _project(data, src.get("items")), mode)
        elif "downwardAPI" in vol:
            src = vol["downwardAPI"]
            files = {item["path"]: downward_value(pod, item) for item in src.get("items") or []}
            p = os.path.join(base, PLUGIN_DIRS["downwardAPI"], name)
            _atomic_write(p, files, int(src.get("defaultMode", 0o644)))
        elif "projected" in vol:
            p = os.path.join(base, PLUGIN_DIRS["projected"], name)
            _atomic_write(p, _projected_files(pod, vol, objects), int(vol["projected"].get("defaultMode", 0o644)))
        else:
            continue  # other volume types are not supported: a mount of one fails with a clear error
        paths[name] = p
    return paths


def container_mounts(container: dict[str, Any], volume_paths: dict[str, str]) -> list[Mount]:
    mounts = []
    for vm in container.get("volumeMounts") or []:
        host = volume_paths.get(vm["name"])
        if host is None:
            raise VolumeError(f"container {container['name']}: volumeMount {vm['name']!r} names no volume of a "
                              "supported type (emptyDir, hostPath, configMap, secret, downwardAPI, projected)")
        if vm.get("subPath"):
            host = os.path.join(host, vm["subPath"])
            if not os.path.exists(host):
                os.makedirs(host, exist_ok=True)
        mounts.append(Mount(container_path=vm["mountPath"], host_path=host, readonly=bool(vm.get("readOnly"))))
    return mounts


def remove_pod_dir(pods_dir: str, uid: str) -> None:
    """Remove the pod's directory (emptyDir contents, configMap/secret copies; never hostPaths)."""
    shutil.rmtree(pod_dir(pods_dir, uid), ignore_errors=True)


# upstream: at most 4 KiB of message; FallbackToLogsOnError takes the last 80 lines / 2 KiB of log
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048


def _termination_file(pods_dir: str, uid: str, name: str, attempt: int) -> str:
    return os.path.join(pod_dir(pods_dir, uid), "containers", name, str(attempt))


def termination_message_mount(pods_dir: str, uid: str, container: dict[str, Any], attempt: int) -> Mount | None:
    """An empty host file mounted at terminationMessagePath (default /dev/termination-log), unless
    the container mounts something else there (upstream kuberuntime_container.go)."""
    path = container.get("terminationMessagePath") or "/dev/termination-log"
    if any(vm.get("mountPath") == path for vm in container.get("volumeMounts") or []):
        return None
    host = _termination_file(pods_dir, uid, container["name"], attempt)
    os.makedirs(os.path.dirname(host), exist_ok=True)
    with open(host, "w"):
        pass
    os.chmod(host, 0o666)  # non-root containers write it too
    return Mount(container_path=path, host_path=host)


def read_termination_message(pods_dir: str, uid: str, container: dict[str, Any], attempt: int, exit_code: int,
                             log_path: str) -> str:
    try:
        with open(_termination_file(pods_dir, uid, container["name"], attempt), "rb") as f:
            msg = f.read(MAX_TERMINATION_MESSAGE)
    except OSError:
        msg = b""
    if not msg and exit_code != 0 and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        from nodeagent.kubelet.logs import parse_cri_line, render

        try:
            with open(log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                raw = f.read().split(b"\n")[-FALLBACK_LOG_LINES - 1:]
        except OSError:
            raw = []
        lines = [line for line in (parse_cri_line(r) for r in raw) if line is not None]
        msg = b"".join(render(line, False) for line in lines)[-FALLBACK_LOG_BYTES:]
    return msg.decode("utf-8", "replace")
