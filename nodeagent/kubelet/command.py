"""`nodeagent kubelet`: flags as in docs/components.md."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "kubelet", help="run the kubelet: register the node, run its pods through the CRI")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--container-runtime-endpoint", default=None,
                   help="unix:///path/to/containerd.sock (default: a managed containerd under DIR)")
    p.add_argument("--pod-cidr", default="", help="the node's pod CIDR (default: wait for the control plane)")
    p.add_argument("--node-ip", default="", help="InternalIP to report (default: first global IPv4 here)")
    p.add_argument("--address", default="0.0.0.0", help="address of the kubelet's HTTPS endpoint")
    p.add_argument("--port", type=int, default=10250)
    p.add_argument("--cluster-dns", default="10.96.0.10", help="comma-separated nameserver IPs for pods")
    p.add_argument("--cluster-domain", default="cluster.local")
    p.add_argument("--cni-bin-dir", default=None)
    p.add_argument("--cni-conf-dir", default=None)
    p.add_argument("--resolv-conf", default="/etc/resolv.conf")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--node-status-update-frequency", type=float, default=10.0)
    p.add_argument("--node-status-report-frequency", type=float, default=300.0)
    p.add_argument("--node-lease-duration-seconds", type=int, default=40)
    p.add_argument("--node-lease-renew-interval", type=float, default=10.0)
    p.add_argument("--sync-frequency", type=float, default=60.0)
    p.add_argument("--pleg-relist-period", type=float, default=1.0)
    p.add_argument("--pleg-relist-threshold", type=float, default=180.0)
    p.add_argument("--runtime-request-timeout", type=float, default=120.0)
    p.add_argument("--container-log-max-size", default="10Mi", help="rotate a container's log past this size")
    p.add_argument("--container-log-max-files", type=int, default=5)
    p.add_argument("--parallel-pod-starts", type=int, default=4,
                   help="how many new pod sandboxes are created at once (0: no limit)")
    p.add_argument("--tls-cert-file", default="",
                   help="serving certificate issued by the cluster CA for this node (CN system:node:NAME); "
                        "without one the kubelet makes a self-signed certificate the apiserver refuses")
    p.add_argument("--tls-private-key-file", default="")
    p.add_argument("--client-ca-file", default="",
                   help="CA of the client certificates callers may present (default: the kubeconfig's CA)")
    p.add_argument("--anonymous-auth", action="store_true",
                   help="serve the kubelet endpoint without token review (testing only)")
    p.set_defaults(func=main)


async def main(args: argparse.Namespace) -> int:
    from nodeagent.kubelet.app import run_kubelet
    from nodeagent.kubelet.config import KubeletConfig
    from nodeagent.machinery.quantity import parse_quantity

    cfg = KubeletConfig(
        node_name=args.node_name, data_dir=args.data_dir, node_ip=args.node_ip, pod_cidr=args.pod_cidr,
        port=args.port, bind_address=args.address,
        cluster_dns=[s for s in args.cluster_dns.split(",") if s], cluster_domain=args.cluster_domain,
        resolv_conf=args.resolv_conf, max_pods=args.max_pods,
        node_status_update_frequency=args.node_status_update_frequency,
        node_status_report_frequency=args.node_status_report_frequency,
        node_lease_duration_seconds=args.node_lease_duration_seconds,
        node_lease_renew_interval=args.node_lease_renew_interval, sync_frequency=args.sync_frequency,
        pleg_relist_period=args.pleg_relist_period, pleg_relist_threshold=args.pleg_relist_threshold,
        runtime_request_timeout=args.runtime_request_timeout,
        parallel_pod_starts=args.parallel_pod_starts,
        container_log_max_size=int(parse_quantity(args.container_log_max_size)),
        container_log_max_files=max(2, args.container_log_max_files), authenticate=not args.anonymous_auth,
        tls_cert_file=args.tls_cert_file, tls_private_key_file=args.tls_private_key_file,
        client_ca_file=args.client_ca_file,
    )
    return await run_kubelet(cfg, args.kubeconfig, args.container_runtime_endpoint, args.cni_bin_dir,
                             args.cni_conf_dir)
