"""Resolve a container's environment: value, fieldRef, resourceFieldRef, configMapKeyRef,
secretKeyRef and envFrom (upstream kubelet_pods.go makeEnvironmentVariables).

ConfigMaps and Secrets are read through a getter so that this module stays free of I/O policy;
a missing non-optional reference raises ContainerConfigError, which the pod worker reports as the
container's waiting reason CreateContainerConfigError, as upstream does.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from nodeagent.machinery.quantity import parse_quantity

# (kind "configmap"|"secret", namespace, name) -> the object, or None when it does not exist
ObjectGetter = Callable[[str, str, str], Awaitable[dict[str, Any] | None]]


def api_object_getter(client: Any) -> ObjectGetter:
    """An ObjectGetter reading ConfigMaps and Secrets from the apiserver."""
    from nodeagent.client import NotFound
    from nodeagent.machinery.kinds import CONFIGMAPS, SECRETS

    async def get(kind: str, ns: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = await client.get(CONFIGMAPS if kind == "configmap" else SECRETS, name, namespace=ns)
            return obj
        except NotFound:
            return None

    return get


class ContainerConfigError(Exception):
    """The container cannot be configured yet (a missing ConfigMap, Secret or key)."""


_LABEL_RE = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref_value(pod: dict[str, Any], path: str, pod_ip: str, host_ip: str, node_name: str) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
    }
    if path in simple:
        return str(simple[path])
    m = _LABEL_RE.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {path!r}")


def resource_field_value(container: dict[str, Any], ref: dict[str, Any], node_alloc: dict[str, str]) -> str:
    res = ref.get("resource", "")
    kind, _, name = res.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None:  # upstream falls back to the node's allocatable
        raw = node_alloc.get(name, "0")
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(int(math.ceil(parse_quantity(raw) / divisor)))


def _data(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    if kind == "secret":
        out = {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (obj.get("data") or {}).items()}
        out.update(obj.get("stringData") or {})
        return out
    return dict(obj.get("data") or {})


async def _ref_value(get: ObjectGetter, kind: str, ns: str, ref: dict[str, Any]) -> str | None:
    name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    obj = await get(kind, ns, name)
    if obj is None:
        if optional:
            return None
        what = "configmap" if kind == "configmap" else "secret"
        raise ContainerConfigError(f'{what} "{name}" not found')
    data = _data(kind, obj)
    if key not in data:
        if optional:
            return None
        raise ContainerConfigError(f'couldn\'t find key {key} in {"ConfigMap" if kind == "configmap" else "Secret"} {ns}/{name}')
    return data[key]


async def make_environment(pod: dict[str, Any], container: dict[str, Any], get: ObjectGetter,
                           pod_ip: str, host_ip: str, node_name: str,
                           node_alloc: dict[str, str] | None = None,
                           service_env: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    ns = pod.get("metadata", {}).get("namespace", "default")
    # Service variables come first so that envFrom and env override them (upstream order).
    env: dict[str, str] = dict(service_env or [])
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = src.get(key)
            if not ref:
                continue
            obj = await get(kind, ns, ref.get("name", ""))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind} "{ref.get("name")}" not found')
            for k, v in _data(kind, obj).items():
                env[prefix + k] = v

    def expand(value: str) -> str:
        # $(VAR) refers to an earlier variable; $$ escapes (upstream third_party/forked/golang/expansion)
        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            return env.get(m.group(1), m.group(0))
        return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)", sub, value)

    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")))
            continue
        vf = var["valueFrom"]
        value: str | None
        if "fieldRef" in vf:
            value = field_ref_value(pod, vf["fieldRef"].get("fieldPath", ""), pod_ip, host_ip, node_name)
        elif "resourceFieldRef" in vf:
            value = resource_field_value(container, vf["resourceFieldRef"], node_alloc or {})
        elif "configMapKeyRef" in vf:
            value = await _ref_value(get, "configmap", ns, vf["configMapKeyRef"])
        elif "secretKeyRef" in vf:
            value = await _ref_value(get, "secret", ns, vf["secretKeyRef"])
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(vf)}")
        if value is not None:
            env[name] = value
    return list(env.items())


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def service_environment(services: list[dict[str, Any]], namespace: str, enable_service_links: bool) -> list[tuple[str, str]]:
    """Docker-links style variables for Services (upstream getServiceEnvVarMap and
    pkg/kubelet/envvars): every Service with a ClusterIP in the pod's namespace when
    enableServiceLinks, and always the master service `kubernetes` of the default namespace."""
    chosen: dict[str, dict[str, Any]] = {}
    for svc in services:
        md, spec = svc.get("metadata", {}), svc.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        ns = md.get("namespace", "default")
        if ns == "default" and md.get("name") == "kubernetes":
            chosen.setdefault(md["name"], svc)
        elif ns == namespace and enable_service_links:
            chosen[md["name"]] = svc
    out: list[tuple[str, str]] = []
    for name in sorted(chosen):
        spec = chosen[name]["spec"]
        ip = spec["clusterIP"]
        ports = spec.get("ports") or []
        if not ports:
            continue
        prefix = _env_name(name)
        out.append((f"{prefix}_SERVICE_HOST", ip))
        out.append((f"{prefix}_SERVICE_PORT", str(ports[0]["port"])))
        for p in ports:
            if p.get("name"):
                out.append((f"{prefix}_SERVICE_PORT_{_env_name(p['name'])}", str(p["port"])))
        first = ports[0]
        out.append((f"{prefix}_PORT", f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"))
        for p in ports:
            proto = p.get("protocol", "TCP")
            base = f"{prefix}_PORT_{p['port']}_{proto.upper()}"
            out.extend([(base, f"{proto.lower()}://{ip}:{p['port']}"), (f"{base}_PROTO", proto.lower()),
                        (f"{base}_PORT", str(p["port"])), (f"{base}_ADDR", ip)])
    return out
