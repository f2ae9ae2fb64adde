"""The kubelet's settings: flags of `nodeagent kubelet`, with upstream's defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class KubeletConfig:
    node_name: str
    data_dir: str
    node_ip: str = ""
    pod_cidr: str = ""
    port: int = 10250
    bind_address: str = "0.0.0.0"
    cluster_dns: list[str] = field(default_factory=lambda: ["10.96.0.10"])
    cluster_domain: str = "cluster.local"
    resolv_conf: str = "/etc/resolv.conf"
    max_pods: int = 110
    # upstream KubeletConfiguration defaults
    node_status_update_frequency: float = 10.0
    node_status_report_frequency: float = 300.0
    node_lease_renew_interval: float = 10.0  # upstream: a quarter of the lease duration
    node_lease_duration_seconds: int = 40
    sync_frequency: float = 60.0
    housekeeping_interval: float = 2.0
    pleg_relist_period: float = 1.0
    pleg_relist_threshold: float = 180.0
    backoff_initial: float = 10.0
    backoff_max: float = 300.0
    runtime_request_timeout: float = 120.0
    container_log_max_size: int = 10 * 1024 * 1024  # upstream containerLogMaxSize 10Mi
    container_log_max_files: int = 5
    log_rotation_interval: float = 10.0
    parallel_pod_starts: int = 4  # new sandboxes created at once (0: no limit)
    authenticate: bool = True  # authenticate (x509, TokenReview) and authorize (SubjectAccessReview) callers
    tls_cert_file: str = ""  # the serving certificate (issued by the cluster CA); "" = self-signed
    tls_private_key_file: str = ""
    client_ca_file: str = ""  # CA whose client certificates authenticate callers; "" = the kubeconfig's CA

    @property
    def root_dir(self) -> str:
        return os.path.join(self.data_dir, "kubelet")

    @property
    def pods_dir(self) -> str:
        return os.path.join(self.root_dir, "pods")

    @property
    def pki_dir(self) -> str:
        return os.path.join(self.root_dir, "pki")

    @property
    def logs_dir(self) -> str:
        return os.path.join(self.data_dir, "logs", "pods")


@dataclass
class HostInfo:
    """What the kubelet learns while starting, beyond its flags, shared by its parts: the node IP
    it reports (status.hostIP, the IP of hostNetwork pods) and the runtime's name (the prefix of
    containerIDs)."""

    host_ip: str
    runtime_name: str = "containerd"
