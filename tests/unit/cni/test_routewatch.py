"""Which rtnetlink notifications wake the route sync."""

from __future__ import annotations

import struct

from nodeagent.cni.routes import RTPROT_NODEAGENT
from nodeagent.cni.routewatch import RTM_DELLINK, RTM_DELROUTE, wakes_sync

RTM_NEWROUTE = 24


def _msg(kind: int, protocol: int = 0) -> bytes:
    body = struct.pack("=BBBBBBBBI", 2, 24, 0, 0, 254, protocol, 0, 1, 0) + b"\\0" * 8  # an attribute's room
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


def test_only_deletions_of_ours_or_of_links_wake_the_sync() -> None:
    assert wakes_sync(_msg(RTM_DELROUTE, RTPROT_NODEAGENT))
    assert not wakes_sync(_msg(RTM_DELROUTE, 4))  # a static route of someone else
    assert not wakes_sync(_msg(RTM_NEWROUTE, RTPROT_NODEAGENT))  # our own sync adding it back
    assert wakes_sync(_msg(RTM_DELLINK))
    # several notifications in one read: any one of ours is enough
    assert wakes_sync(_msg(RTM_NEWROUTE, 2) + _msg(RTM_DELROUTE, RTPROT_NODEAGENT))
    assert not wakes_sync(b"") and not wakes_sync(b"\\0" * 7)
