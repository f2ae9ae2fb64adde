"""`nodeagent containerd` and `nodeagent images build`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "containerd", help="run a managed containerd in the foreground",
        description="Run a managed containerd (root, state, socket and config under DIR/containerd) "
                    "until SIGTERM/SIGINT; then remove its pods, stop it and unmount what it left.")
    p.add_argument("--data-dir", required=True, help="the node's data dir (DIR)")
    p.add_argument("--netns", default=None, help="run inside this network namespace (name or path)")
    p.add_argument("--cni-bin-dir", default=None, help="CNI plugins (default DIR/cni/bin)")
    p.add_argument("--cni-conf-dir", default=None, help="CNI config (default DIR/cni/net.d)")
    p.add_argument("--sandbox-image", default=None, help="pause image (default nodeagent.local/pause:1)")
    p.add_argument("--stream-address", default="127.0.0.1", help="exec/attach streaming server address")
    p.add_argument("--stream-port", type=int, default=0, help="streaming server port (0: any free one)")
    p.add_argument("--metrics-address", default="", help="host:port for containerd's Prometheus metrics (default off)")
    p.add_argument("--keep-pods", action="store_true",
                   help="on exit stop only containerd, leaving pods running for a later start")
    p.set_defaults(func=containerd_main)

    images = subparsers.add_parser("images", help="nodeagent's locally built container images")
    isub = images.add_subparsers(dest="images_command", metavar="COMMAND")
    b = isub.add_parser(
        "build", help="build the OCI image layouts into the image cache (idempotent)",
        description="Build nodeagent.local/pause:1 and nodeagent.local/toolbox:1 as OCI layouts into "
                    "$NODEAGENT_IMAGE_CACHE (default <repo>/build/images); also (re)generates the "
                    "CRI stubs.")
    b.add_argument("--import", dest="import_socket", metavar="SOCKET", default=None,
                   help="also import them into the containerd serving SOCKET (path or unix://)")
    b.add_argument("--cache-dir", default=None, help="image cache directory")
    b.set_defaults(func=images_build_main)
    images.set_defaults(func=lambda args: (images.print_help(), 2)[1])


async def images_build_main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nodeagent.runtime import images
    from nodeagent.runtime.stubs import ensure_stubs

    ensure_stubs()
    cache = Path(args.cache_dir) if args.cache_dir else None
    try:
        built = await asyncio.to_thread(images.build_all, cache)
        for img in built.values():
            state = "built" if img.changed else "unchanged"
            print(f"{img.name} {state} {img.manifest_digest} {img.layout}")
        if args.import_socket:
            done = await images.import_images(args.import_socket, cache_dir=cache)
            for name in images.ALL_IMAGES:
                print(f"{name} {'imported' if name in done else 'already present'} in {args.import_socket}")
    except images.ImageBuildError as e:
        log.error("images build failed error=%s", e)
        return 1
    return 0


async def containerd_main(args: argparse.Namespace) -> int:
    from nodeagent.runtime.containerd import ContainerdError, ManagedContainerd
    from nodeagent.runtime.images import PAUSE_IMAGE, ImageBuildError

    c = ManagedContainerd(args.data_dir, netns=args.netns, cni_bin_dir=args.cni_bin_dir,
                          cni_conf_dir=args.cni_conf_dir, sandbox_image=args.sandbox_image or PAUSE_IMAGE,
                          stream_address=args.stream_address, stream_port=args.stream_port,
                          metrics_address=args.metrics_address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await c.start()
    except (ContainerdError, ImageBuildError) as e:
        log.error("containerd start failed data_dir=%s error=%s", args.data_dir, e)
        return 1
    print(c.endpoint, flush=True)
    assert c.proc is not None
    proc_done = asyncio.create_task(c.proc.wait())
    stop_wait = asyncio.create_task(stop.wait())
    await asyncio.wait({proc_done, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    stop_wait.cancel()
    rc = 0
    if proc_done.done():
        log.error("containerd exited rc=%s log=%s", c.proc.returncode, c.log_path)
        rc = 1
    await c.stop(cleanup=not args.keep_pods)
    return rc
