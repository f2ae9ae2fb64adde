"""`nodeagent apiserver` and `nodeagent kubeconfig` (flags as docs/components.md)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("apiserver", help="serve the Kubernetes API over HTTPS from an embedded store")
    p.add_argument("--data-dir", required=True, help="pki/, tokens.csv and state.db live here")
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--port", type=int, default=6443, help="HTTPS port")
    p.add_argument("--insecure-port", type=int, default=0, help="plain HTTP on 127.0.0.1 only; 0 = off")
    p.add_argument("--advertise-address", default=None, help="address other nodes and pods reach us at")
    p.add_argument("--tls-san", action="append", default=[], help="extra name/IP for the serving cert (repeatable)")
    p.add_argument("--service-cluster-ip-range", default="10.96.0.0/12")
    p.add_argument("--service-node-port-range", default="30000-32767")
    p.add_argument("--storage", default="sqlite", choices=["sqlite"])
    p.add_argument("--storage-sync", default="normal", choices=["normal", "full"],
                   help="normal: acknowledged writes survive a crash of the process; full: also of the machine")
    p.add_argument("--compaction-window", type=int, default=10000,
                   help="keep this many revisions of history for watches to resume from")
    p.add_argument("--compaction-interval", type=float, default=60.0, help="seconds between compactions")
    p.add_argument("--event-ttl", type=float, default=3600.0, help="seconds an Event is kept after its last update")
    p.add_argument("--service-account-issuer", default="https://kubernetes.default.svc.cluster.local",
                   help="the iss claim of service account tokens")
    p.add_argument("--service-account-key-file", default="",
                   help="RSA key that signs and checks service account tokens (default DIR/pki/sa.key, made once)")
    p.add_argument("--service-account-jwks-uri", default=None, help="jwks_uri of the OIDC discovery document")
    p.add_argument("--api-audiences", default="", help="comma-separated audiences tokens must name (default: issuer)")
    p.add_argument("--service-account-min-token-expiration-seconds", type=int, default=600,
                   help="shortest TokenRequest served (upstream: 10 minutes; tests of rotation lower it)")
    p.add_argument("--disable-admission-plugins", default="",
                   help="comma-separated: ServiceAccount, NodeRestriction, RBACEscalation")
    p.add_argument("--audit-policy-file", default="", help="audit.k8s.io/v1 Policy; auditing is off without it")
    p.add_argument("--audit-log-path", default="", help="where audit events go as JSON lines ('-' = stdout)")
    p.add_argument("--default-not-ready-toleration-seconds", type=int, default=300,
                   help="tolerationSeconds of the not-ready:NoExecute toleration added to every pod")
    p.add_argument("--default-unreachable-toleration-seconds", type=int, default=300,
                   help="tolerationSeconds of the unreachable:NoExecute toleration added to every pod")
    p.add_argument("--bookmark-interval", type=float, default=10.0, help=argparse.SUPPRESS)
    p.add_argument("--event-loop", default="auto", choices=["auto", "asyncio", "uvloop"],
                   help="auto: uvloop when installed (its TLS is several times cheaper per watch event)")
    p.set_defaults(func=run_apiserver_sync)

    k = subparsers.add_parser("kubeconfig", help="write a kubeconfig for the admin or a node")
    k.add_argument("--data-dir", required=True)
    k.add_argument("--server", default="https://127.0.0.1:6443")
    k.add_argument("--user", nargs="+", default=["admin"], metavar="admin|node NAME|NAME",
                   help="`admin` or `node NAME` (a bearer token in tokens.csv, created if missing), or any other "
                        "user NAME: an X.509 client certificate signed by the cluster CA (CN = NAME, O = each "
                        "--group), as kubeadm's kubeconfigs carry")
    k.add_argument("--group", action="append", default=[], help="a group of a certificate user (repeatable)")
    k.add_argument("--days", type=int, default=365, help="how long a client certificate is valid")
    k.add_argument("-o", "--output", required=True, help="kubeconfig file to write")
    k.set_defaults(func=run_kubeconfig)


def run_apiserver_sync(args: argparse.Namespace) -> int:
    """Run the server on uvloop when available: fanning watch events out over TLS is the hot path,
    and uvloop's transport does it with a fraction of asyncio's per-write cost."""
    import asyncio
    import logging

    factory = None
    if args.event_loop in ("auto", "uvloop"):
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            if args.event_loop == "uvloop":
                logging.getLogger("nodeagent.api").error("msg=\"--event-loop uvloop: uvloop is not installed\"")
                return 1
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(run_apiserver(args))


async def run_apiserver(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import signal
    from pathlib import Path

    from nodeagent.api.server import ApiServer, ServerConfig

    log = logging.getLogger("nodeagent.api")
    cfg = ServerConfig(
        data_dir=Path(args.data_dir), bind_address=args.bind_address, port=args.port,
        insecure_port=args.insecure_port, advertise_address=args.advertise_address, tls_sans=list(args.tls_san),
        service_cluster_ip_range=args.service_cluster_ip_range, service_node_port_range=args.service_node_port_range,
        storage=args.storage, storage_sync=args.storage_sync, compaction_window=args.compaction_window,
        compaction_interval=args.compaction_interval, bookmark_interval=args.bookmark_interval,
        event_ttl=args.event_ttl,
        service_account_issuer=args.service_account_issuer, service_account_key_file=args.service_account_key_file,
        service_account_jwks_uri=args.service_account_jwks_uri,
        api_audiences=[a for a in args.api_audiences.split(",") if a],
        min_token_expiration_seconds=args.service_account_min_token_expiration_seconds,
        disable_admission_plugins=[a.strip() for a in args.disable_admission_plugins.split(",") if a.strip()],
        audit_policy_file=args.audit_policy_file, audit_log_path=args.audit_log_path,
        default_toleration_seconds={
            "node.kubernetes.io/not-ready": args.default_not_ready_toleration_seconds,
            "node.kubernetes.io/unreachable": args.default_unreachable_toleration_seconds,
        },
    )
    server = ApiServer(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except (OSError, ValueError) as e:
        log.error("msg=\"apiserver failed to start\" error=%r", e)
        await server.stop()
        return 1
    from nodeagent.api import gcpolicy

    gc_task = asyncio.create_task(gcpolicy.run())
    await stop.wait()
    log.info("msg=\"apiserver stopping\"")
    gc_task.cancel()
    await server.stop()
    return 0


def run_kubeconfig(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from nodeagent.api.kubeconfig import write_cert_kubeconfig, write_kubeconfig

    user = args.user
    if len(user) == 1 and (user[0] != "admin" or args.group):
        try:
            write_cert_kubeconfig(Path(args.data_dir), args.server, Path(args.output), user[0], tuple(args.group),
                                  args.days)
        except FileNotFoundError as e:
            print(f"nodeagent kubeconfig: {e}", file=sys.stderr)
            return 1
        return 0
    if user == ["admin"]:
        node = None
    elif len(user) == 2 and user[0] == "node" and user[1]:
        node = user[1]
    else:
        print(f"nodeagent kubeconfig: --user wants `admin`, `node NAME` or a user NAME, got {' '.join(user)!r}",
              file=sys.stderr)
        return 2
    try:
        write_kubeconfig(Path(args.data_dir), args.server, Path(args.output), node)
    except FileNotFoundError as e:
        print(f"nodeagent kubeconfig: {e}", file=sys.stderr)
        return 1
    return 0
