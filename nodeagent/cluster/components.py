"""The command lines of every process of a local cluster (flags as in docs/components.md). Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.cluster.addons import LB_POOL
from nodeagent.cluster.topology import (
    API_PORT,
    CLUSTER_CIDR,
    CLUSTER_DNS,
    CONTROL_PLANE_IP,
    SERVICE_CIDR,
    UNDERLAY_IF,
    ClusterPlan,
    Member,
)


@dataclass(frozen=True)
class Options:
    """Knobs of `cluster up` that tests shorten (seed 001: 40 s grace, 5 min to move pods)."""

    node_monitor_grace_period: int = 40
    default_toleration_seconds: int = 300
    proxy_mode: str = "iptables"
    cni_backend: str = "host-gw"
    extra: dict[str, list[str]] = field(default_factory=dict)  # component -> extra flags

    @property
    def heartbeat_period(self) -> float:
        """The kubelet's status/lease period: upstream's 10 s, shortened so that a short grace
        period still sees a few heartbeats (upstream sizes grace to 4+ heartbeats as well)."""
        return max(1.0, min(10.0, self.node_monitor_grace_period / 4))


@dataclass(frozen=True)
class Component:
    name: str        # "apiserver", "kubelet", ...
    member: Member
    args: list[str]  # after `nodeagent`

    @property
    def id(self) -> str:
        """unique in the cluster: pid file and log file stem"""
        return f"{self.member.name}-{self.name}"

    def pid_file(self, plan: ClusterPlan) -> Path:
        return plan.run_dir / f"{self.id}.pid"

    def log_file(self, plan: ClusterPlan) -> Path:
        return plan.log_dir / f"{self.id}.log"


def apiserver_data_dir(plan: ClusterPlan) -> Path:
    return plan.control_plane.data_dir / "apiserver"


def node_kubeconfig(plan: ClusterPlan, m: Member) -> Path:
    return m.data_dir / "kubeconfig"


# Each node process runs as itself (issue 14): the kubelet as system:node:NAME (Node authorizer),
# kube-proxy as system:kube-proxy (system:node-proxier), the CNI daemon as
# system:nodeagent:cni-daemon (reads every Node for its routes).
PROXY_USER = "system:kube-proxy"
CNI_USER = "system:nodeagent:cni-daemon"
INGRESS_USER = "system:nodeagent:ingress"    # ClusterRole nodeagent:ingress
SPEAKER_USER = "system:nodeagent:speaker"    # ClusterRole nodeagent:speaker


def proxy_kubeconfig(m: Member) -> Path:
    return m.data_dir / "kube-proxy.kubeconfig"


def cni_kubeconfig(m: Member) -> Path:
    return m.data_dir / "cni-daemon.kubeconfig"


def ingress_kubeconfig(m: Member) -> Path:
    return m.data_dir / "ingress.kubeconfig"


def speaker_kubeconfig(m: Member) -> Path:
    return m.data_dir / "speaker.kubeconfig"


def kubelet_serving_cert(m: Member) -> tuple[Path, Path]:
    """The kubelet's serving pair, issued by the cluster CA for its name and address."""
    return m.data_dir / "kubelet-serving.crt", m.data_dir / "kubelet-serving.key"


def apiserver(plan: ClusterPlan, opts: Options) -> Component:
    cp = plan.control_plane
    return Component("apiserver", cp, [
        "apiserver", "--data-dir", str(apiserver_data_dir(plan)),
        "--bind-address", "0.0.0.0", "--port", str(API_PORT),
        "--advertise-address", CONTROL_PLANE_IP,
        # the host reaches it through the loopback forwarder
        "--tls-san", "127.0.0.1", "--tls-san", "localhost",
        "--service-cluster-ip-range", SERVICE_CIDR,
        *opts.extra.get("apiserver", []),
    ])


# The control plane's own identities (issue 14), as kubeadm's kubeconfigs: the controller manager
# reads as system:kube-controller-manager and writes as each loop's service account, the scheduler
# is system:kube-scheduler, DNS the kube-system/kube-dns service account.
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
SCHEDULER_USER = "system:kube-scheduler"
DNS_SERVICE_ACCOUNT = ("kube-system", "kube-dns")


def control_plane_kubeconfig(plan: ClusterPlan, component: str) -> Path:
    return plan.control_plane.data_dir / f"{component}.kubeconfig"


def control_plane(plan: ClusterPlan, opts: Options) -> list[Component]:
    """What runs in the cp namespace after the apiserver answers."""
    cp = plan.control_plane
    return [
        Component("controllers", cp, [
            "controllers", "--kubeconfig", str(control_plane_kubeconfig(plan, "controller-manager")),
            "--use-service-account-credentials",
            "--scheduler-kubeconfig", str(control_plane_kubeconfig(plan, "scheduler")),
            "--cluster-cidr", CLUSTER_CIDR, "--no-leader-elect",
            "--node-monitor-grace-period", str(opts.node_monitor_grace_period),
            "--default-toleration-seconds", str(opts.default_toleration_seconds),
            "--lb-address-pool", LB_POOL,
            *opts.extra.get("controllers", []),
        ]),
        Component("dns", cp, [
            "dns", "--kubeconfig", str(control_plane_kubeconfig(plan, "dns")), "--bind", "0.0.0.0", "--port", "53",
            "--advertise-address", CONTROL_PLANE_IP, "--service-ip", CLUSTER_DNS,
            *opts.extra.get("dns", []),
        ]),
    ]


def node(plan: ClusterPlan, m: Member, opts: Options) -> list[Component]:
    """A node's processes, in start order: the CNI daemon must serve its socket before the kubelet's
    containerd runs a sandbox."""
    kc = str(node_kubeconfig(plan, m))
    d = m.data_dir
    return [
        Component("cni-daemon", m, [
            "cni-daemon", "--kubeconfig", str(cni_kubeconfig(m)), "--node-name", m.name, "--data-dir", str(d),
            "--backend", opts.cni_backend, "--cluster-cidr", CLUSTER_CIDR, *opts.extra.get("cni-daemon", []),
        ]),
        Component("kubelet", m, [
            "kubelet", "--kubeconfig", kc, "--node-name", m.name, "--data-dir", str(d),
            "--node-ip", m.ip, "--cluster-dns", CLUSTER_DNS,
            "--cni-bin-dir", str(d / "cni" / "bin"), "--cni-conf-dir", str(d / "cni" / "net.d"),
            "--node-status-update-frequency", f"{opts.heartbeat_period:g}",
            "--node-lease-renew-interval", f"{opts.heartbeat_period:g}",
            "--tls-cert-file", str(kubelet_serving_cert(m)[0]), "--tls-private-key-file", str(kubelet_serving_cert(m)[1]),
            *opts.extra.get("kubelet", []),
        ]),
        Component("proxy", m, [
            "proxy", "--kubeconfig", str(proxy_kubeconfig(m)), "--node-name", m.name, "--mode", opts.proxy_mode,
            "--cluster-cidr", CLUSTER_CIDR, *opts.extra.get("proxy", []),
        ]),
        # host network, as kube-proxy: HAProxy listens on the node's :80 and :443
        Component("ingress", m, [
            "ingress", "--kubeconfig", str(ingress_kubeconfig(m)), "--node-name", m.name, "--run-dir", str(d / "ingress"),
            *opts.extra.get("ingress", []),
        ]),
        Component("speaker", m, [
            "speaker", "--kubeconfig", str(speaker_kubeconfig(m)), "--node-name", m.name, "--interface", UNDERLAY_IF,
            *opts.extra.get("speaker", []),
        ]),
    ]


def all_components(plan: ClusterPlan, opts: Options) -> list[Component]:
    out = [apiserver(plan, opts), *control_plane(plan, opts)]
    for m in plan.node_members:
        out.extend(node(plan, m, opts))
    return out
