"""Pure functions that turn a Pod (a plain JSON dict) into CRI sandbox and container configs.

No I/O: everything the kubelet resolves on the node (DNS config, env values, mounts, the cgroup
parent, the log directory) is passed in. The shapes follow the upstream kubelet's kuberuntime
package (kuberuntime_sandbox.go generatePodSandboxConfig, kuberuntime_container.go
generateContainerConfig, labels.go, helpers_linux.go) so that tools such as crictl show the same
labels and annotations they would on a real node.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nodeagent.machinery.quantity import int_value, milli_value
from nodeagent.runtime.cri import api_pb2 as pb

# Labels and annotations the kubelet puts on sandboxes and containers (k8s.io/kubelet/pkg/types
# labels.go and kuberuntime/labels.go). The kubelet finds its objects back by these.
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
CONTAINER_HASH_ANNOTATION = "io.kubernetes.container.hash"
CONTAINER_RESTART_COUNT_ANNOTATION = "io.kubernetes.container.restartCount"
CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION = "io.kubernetes.container.terminationMessagePath"
CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION = "io.kubernetes.container.terminationMessagePolicy"
CONTAINER_PORTS_ANNOTATION = "io.kubernetes.container.ports"
POD_DELETION_GRACE_PERIOD_ANNOTATION = "io.kubernetes.pod.deletionGracePeriod"
POD_TERMINATION_GRACE_PERIOD_ANNOTATION = "io.kubernetes.pod.terminationGracePeriod"

DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_TERMINATION_GRACE_PERIOD = 30

# CPU shares and CFS quota, as the kubelet computes them (pkg/kubelet/cm/helpers_linux.go).
MIN_SHARES = 2
SHARES_PER_CPU = 1024
MILLI_CPU_TO_CPU = 1000
QUOTA_PERIOD = 100_000  # microseconds: 100 ms, the kernel's default CFS period
MIN_QUOTA_PERIOD = 1000

_PROTOCOLS = {"TCP": pb.TCP, "UDP": pb.UDP, "SCTP": pb.SCTP}
_HOSTNAME_MAX = 63


# ---------------------------------------------------------------------------- quantities

def parse_cpu(q: str | int | float) -> int:
    """CPU quantity in millicores, rounded up as Quantity.MilliValue() does."""
    return milli_value(q)


def parse_memory(q: str | int | float) -> int:
    """Memory quantity in bytes, rounded up as Quantity.Value() does."""
    return int_value(q)


def milli_cpu_to_shares(milli_cpu: int) -> int:
    if milli_cpu == 0:
        return MIN_SHARES  # no request: the minimum, so best-effort pods yield to others
    return max(milli_cpu * SHARES_PER_CPU // MILLI_CPU_TO_CPU, MIN_SHARES)


def milli_cpu_to_quota(milli_cpu: int, period: int = QUOTA_PERIOD) -> int:
    if milli_cpu == 0:
        return 0  # no limit
    return max(milli_cpu * period // MILLI_CPU_TO_CPU, MIN_QUOTA_PERIOD)


# ---------------------------------------------------------------------------- pod helpers

def _meta(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("metadata") or {}


def _spec(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    return pod.get("spec") or {}


def pod_full_name(pod: Mapping[str, Any]) -> str:
    md = _meta(pod)
    return f"{md.get('namespace', 'default')}/{md.get('name', '')}"


def pod_log_directory(logs_root: str, pod: Mapping[str, Any]) -> str:
    """<logs_root>/<namespace>_<name>_<uid>, as upstream's /var/log/pods layout."""
    md = _meta(pod)
    return f"{logs_root.rstrip('/')}/{md.get('namespace', 'default')}_{md.get('name', '')}_{md.get('uid', '')}"


def container_log_path(container_name: str, attempt: int) -> str:
    """The container's log file relative to the sandbox's log_directory: <name>/<attempt>.log."""
    return f"{container_name}/{attempt}.log"


def pod_hostname(pod: Mapping[str, Any]) -> str:
    """spec.hostname or the pod's name, cut to 63 characters without a trailing '-' or '.'."""
    name = _spec(pod).get("hostname") or _meta(pod).get("name", "")
    if len(name) > _HOSTNAME_MAX:
        name = name[:_HOSTNAME_MAX].rstrip("-.")
    return str(name)


def namespace_options(pod: Mapping[str, Any]) -> pb.NamespaceOption:
    """Network/IPC from the sandbox (or the node's for hostNetwork/hostIPC); PID per container
    unless shareProcessNamespace (then the sandbox's) or hostPID (the node's).

    NamespaceMode 0 is POD, so PID must be set explicitly (see shared/ENVIRONMENT.md)."""
    spec = _spec(pod)
    if spec.get("hostPID"):
        pid = pb.NODE
    elif spec.get("shareProcessNamespace"):
        pid = pb.POD
    else:
        pid = pb.CONTAINER
    return pb.NamespaceOption(
        network=pb.NODE if spec.get("hostNetwork") else pb.POD,
        ipc=pb.NODE if spec.get("hostIPC") else pb.POD,
        pid=pid,
    )


def pod_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    labels = {str(k): str(v) for k, v in (_meta(pod).get("labels") or {}).items()}
    md = _meta(pod)
    labels[POD_NAME_LABEL] = str(md.get("name", ""))
    labels[POD_NAMESPACE_LABEL] = str(md.get("namespace", "default"))
    labels[POD_UID_LABEL] = str(md.get("uid", ""))
    return labels


def port_mappings(pod: Mapping[str, Any]) -> list[pb.PortMapping]:
    """Every declared container port, as upstream; host_port 0 means "not published on the node"
    and the runtime's portmap step skips it."""
    out: list[pb.PortMapping] = []
    for c in _spec(pod).get("containers") or []:
        for p in c.get("ports") or []:
            proto = str(p.get("protocol", "TCP")).upper()
            if proto not in _PROTOCOLS:
                raise ValueError(f"pod {pod_full_name(pod)} container {c.get('name')}: "
                                 f"unknown port protocol {proto!r} (want TCP, UDP or SCTP)")
            out.append(pb.PortMapping(
                protocol=_PROTOCOLS[proto],  # type: ignore[arg-type]
                container_port=int(p["containerPort"]),
                host_port=int(p.get("hostPort") or 0),
                host_ip=str(p.get("hostIP") or ""),
            ))
    return out


def _dns(dns_config: pb.DNSConfig | Mapping[str, Sequence[str]] | None) -> pb.DNSConfig | None:
    if dns_config is None:
        return None
    if isinstance(dns_config, pb.DNSConfig):
        return dns_config
    return pb.DNSConfig(servers=list(dns_config.get("servers", [])),
                        searches=list(dns_config.get("searches", [])),
                        options=list(dns_config.get("options", [])))


def sandbox_config(
    pod: Mapping[str, Any],
    *,
    log_directory: str,
    attempt: int = 0,
    dns_config: pb.DNSConfig | Mapping[str, Sequence[str]] | None = None,
    cgroup_parent: str = "",
    hostname: str | None = None,
) -> pb.PodSandboxConfig:
    """The PodSandboxConfig for RunPodSandbox (and for CreateContainer's sandbox_config)."""
    md = _meta(pod)
    spec = _spec(pod)
    psc = spec.get("securityContext") or {}
    sec = pb.LinuxSandboxSecurityContext(namespace_options=namespace_options(pod))
    if psc.get("runAsUser") is not None:
        sec.run_as_user.value = int(psc["runAsUser"])
    if psc.get("runAsGroup") is not None:
        sec.run_as_group.value = int(psc["runAsGroup"])
    sec.supplemental_groups.extend(int(g) for g in psc.get("supplementalGroups") or [])
    if psc.get("fsGroup") is not None:
        sec.supplemental_groups.append(int(psc["fsGroup"]))
    # The runtime refuses a privileged container in an unprivileged sandbox (upstream sets this
    # from HasPrivilegedContainer).
    sec.privileged = any((c.get("securityContext") or {}).get("privileged")
                         for key in ("initContainers", "containers") for c in spec.get(key) or [])
    linux = pb.LinuxPodSandboxConfig(
        cgroup_parent=cgroup_parent,
        security_context=sec,
        sysctls={str(s["name"]): str(s["value"]) for s in psc.get("sysctls") or []},
    )
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=str(md.get("name", "")),
            namespace=str(md.get("namespace", "default")),
            uid=str(md.get("uid", "")),
            attempt=attempt,
        ),
        log_directory=log_directory,
        port_mappings=port_mappings(pod),
        labels=pod_labels(pod),
        annotations={str(k): str(v) for k, v in (md.get("annotations") or {}).items()},
        linux=linux,
    )
    # With hostNetwork the pod keeps the node's hostname (upstream leaves Hostname empty).
    if not spec.get("hostNetwork"):
        cfg.hostname = hostname if hostname is not None else pod_hostname(pod)
    dns = _dns(dns_config)
    if dns is not None:
        cfg.dns_config.CopyFrom(dns)
    return cfg


# ---------------------------------------------------------------------------- containers

def container_hash(container: Mapping[str, Any]) -> str:
    """A stable hash of the container's whole spec (hex): the hash annotation of callers that
    pass none. The kubelet passes its own (nodeagent.kubelet.model.hash_container, the fields
    upstream hashes) and compares it in its plan."""
    canonical = json.dumps(container, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def container_labels(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
    md = _meta(pod)
    return {
        POD_NAME_LABEL: str(md.get("name", "")),
        POD_NAMESPACE_LABEL: str(md.get("namespace", "default")),
        POD_UID_LABEL: str(md.get("uid", "")),
        CONTAINER_NAME_LABEL: str(container["name"]),
    }


def container_annotations(
    pod: Mapping[str, Any], container: Mapping[str, Any], restart_count: int, spec_hash: str | None = None
) -> dict[str, str]:
    md = _meta(pod)
    spec = _spec(pod)
    ann = {
        CONTAINER_HASH_ANNOTATION: spec_hash if spec_hash is not None else container_hash(container),
        CONTAINER_RESTART_COUNT_ANNOTATION: str(restart_count),
        CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION:
            str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH),
        CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION:
            str(container.get("terminationMessagePolicy") or "File"),
        POD_TERMINATION_GRACE_PERIOD_ANNOTATION:
            str(spec.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD)),
    }
    if md.get("deletionGracePeriodSeconds") is not None:
        ann[POD_DELETION_GRACE_PERIOD_ANNOTATION] = str(md["deletionGracePeriodSeconds"])
    if container.get("ports"):
        # JSON of the ports in the field order of upstream's ContainerPort struct.
        ann[CONTAINER_PORTS_ANNOTATION] = json.dumps(
            [{k: p[k] for k in ("name", "hostPort", "containerPort", "protocol", "hostIP") if k in p}
             for p in container["ports"]], separators=(",", ":"))
    return ann


def linux_resources(container: Mapping[str, Any], oom_score_adj: int | None = None) -> pb.LinuxContainerResources:
    """CPU shares from the request (the limit when only a limit is set), CFS quota from the limit
    over a 100 ms period, the memory limit in bytes (kuberuntime_container_linux.go)."""
    res = container.get("resources") or {}
    requests = res.get("requests") or {}
    limits = res.get("limits") or {}
    cpu_request = parse_cpu(requests["cpu"]) if "cpu" in requests else 0
    cpu_limit = parse_cpu(limits["cpu"]) if "cpu" in limits else 0
    out = pb.LinuxContainerResources(
        cpu_shares=milli_cpu_to_shares(cpu_limit if cpu_request == 0 and cpu_limit else cpu_request),
        cpu_period=QUOTA_PERIOD,
        cpu_quota=milli_cpu_to_quota(cpu_limit),
    )
    if "memory" in limits:
        out.memory_limit_in_bytes = parse_memory(limits["memory"])
    if oom_score_adj is not None:
        out.oom_score_adj = oom_score_adj
    return out


def _security_context(pod: Mapping[str, Any], container: Mapping[str, Any]) -> pb.LinuxContainerSecurityContext:
    psc = _spec(pod).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    sec = pb.LinuxContainerSecurityContext(namespace_options=namespace_options(pod))
    run_as_user = csc.get("runAsUser", psc.get("runAsUser"))
    if run_as_user is not None:
        sec.run_as_user.value = int(run_as_user)
    run_as_group = csc.get("runAsGroup", psc.get("runAsGroup"))
    if run_as_group is not None:
        sec.run_as_group.value = int(run_as_group)
    sec.supplemental_groups.extend(int(g) for g in psc.get("supplementalGroups") or [])
    if psc.get("fsGroup") is not None:
        sec.supplemental_groups.append(int(psc["fsGroup"]))
    sec.privileged = bool(csc.get("privileged", False))
    sec.readonly_rootfs = bool(csc.get("readOnlyRootFilesystem", False))
    # allowPrivilegeEscalation defaults to true; false maps to no_new_privs.
    sec.no_new_privs = csc.get("allowPrivilegeEscalation") is False
    caps = csc.get("capabilities") or {}
    if caps:
        sec.capabilities.add_capabilities.extend(str(c) for c in caps.get("add") or [])
        sec.capabilities.drop_capabilities.extend(str(c) for c in caps.get("drop") or [])
    return sec


def _env(env: Iterable[tuple[str, str] | Mapping[str, str]]) -> list[pb.KeyValue]:
    out = []
    for item in env:
        if isinstance(item, Mapping):
            out.append(pb.KeyValue(key=str(item["name"]), value=str(item.get("value", ""))))
        else:
            out.append(pb.KeyValue(key=str(item[0]), value=str(item[1])))
    return out


def _mounts(mounts: Iterable[pb.Mount | Mapping[str, Any]]) -> list[pb.Mount]:
    out = []
    for m in mounts:
        if isinstance(m, pb.Mount):
            out.append(m)
        else:
            out.append(pb.Mount(container_path=str(m["container_path"]), host_path=str(m["host_path"]),
                                readonly=bool(m.get("readonly", False)),
                                selinux_relabel=bool(m.get("selinux_relabel", False)),
                                propagation=m.get("propagation", pb.PROPAGATION_PRIVATE)))
    return out


def container_config(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    attempt: int = 0,
    env: Iterable[tuple[str, str] | Mapping[str, str]] = (),
    mounts: Iterable[pb.Mount | Mapping[str, Any]] = (),
    restart_count: int | None = None,
    image: str | None = None,
    oom_score_adj: int | None = None,
    spec_hash: str | None = None,
) -> pb.ContainerConfig:
    """The ContainerConfig for CreateContainer. `env` is already resolved by the caller (values
    from ConfigMaps, the downward API, service links); `mounts` are host paths the caller
    prepared; `image` overrides container.image (e.g. with the id PullImage returned);
    `spec_hash` is the hash annotation (default container_hash(container))."""
    name = str(container["name"])
    if restart_count is None:
        restart_count = attempt
    user_image = str(container.get("image", ""))
    if not (image or user_image):
        raise ValueError(f"pod {pod_full_name(pod)} container {name}: no image")
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=attempt),
        image=pb.ImageSpec(image=image or user_image, user_specified_image=user_image),
        command=[str(c) for c in container.get("command") or []],
        args=[str(a) for a in container.get("args") or []],
        working_dir=str(container.get("workingDir") or ""),
        envs=_env(env),
        mounts=_mounts(mounts),
        labels=container_labels(pod, container),
        annotations=container_annotations(pod, container, restart_count, spec_hash),
        log_path=container_log_path(name, restart_count),
        stdin=bool(container.get("stdin", False)),
        stdin_once=bool(container.get("stdinOnce", False)),
        tty=bool(container.get("tty", False)),
        linux=pb.LinuxContainerConfig(
            resources=linux_resources(container, oom_score_adj),
            security_context=_security_context(pod, container),
        ),
    )
    return cfg
