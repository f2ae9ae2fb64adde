"""Wake the route sync when one of our routes, or a link, is deleted (rtnetlink multicast).

Without it a route removed by hand (or by another daemon's cleanup) stayed gone until the next
periodic resync, 10 s by default, and so did the pods behind it. rtnetlink announces every route
deletion to the RTMGRP_IPV4_ROUTE/IPV6_ROUTE groups with the route's protocol: ours carry
RTPROT_NODEAGENT (routes.py). A deleted link (the VXLAN device, or the underlay taking its routes
along) wakes the sync too. The resync stays as the safety net: a multicast socket can overrun.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable

from nodeagent.cni.routes import RTPROT_NODEAGENT
from nodeagent.netns import netns_path, setns

log = logging.getLogger("nodeagent.cni.routewatch")

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_ROUTE = 0x400
RTM_DELLINK = 17
RTM_DELROUTE = 25
NLMSG_HDR = struct.Struct("=IHHII")
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags


def wakes_sync(data: bytes) -> bool:
    """Whether a batch of rtnetlink notifications holds a deletion of ours or of a link."""
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind, _flags, _seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size:
            break
        if kind == RTM_DELLINK:
            return True
        if kind == RTM_DELROUTE and off + NLMSG_HDR.size + RTMSG.size <= len(data):
            if RTMSG.unpack_from(data, off + NLMSG_HDR.size)[5] == RTPROT_NODEAGENT:
                return True
        off += (length + 3) & ~3
    return False


class RouteWatcher:
    """A thread reading rtnetlink notifications in `netns` (default: ours); calls `on_change`
    (from that thread) for every batch that `wakes_sync`."""

    def __init__(self, on_change: Callable[[], object], netns: str | None = None) -> None:
        self.on_change = on_change
        self.netns = netns
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="route-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)
        if self._error is not None:
            raise self._error

    def _open(self) -> socket.socket:
        if self.netns:
            setns(netns_path(self.netns))  # this thread only: the socket belongs to that namespace
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE))
        sock.settimeout(0.5)  # to notice stop(): closing a socket does not wake a blocked recv
        return sock

    def _run(self) -> None:
        try:
            sock = self._open()
        except BaseException as e:  # reported by start()
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        with sock:
            while not self._stop.is_set():
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError as e:  # ENOBUFS: notifications were lost; a sync covers them
                    log.debug("route watch recv failed err=%s", e)
                    self.on_change()
                    continue
                if wakes_sync(data):
                    self.on_change()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
