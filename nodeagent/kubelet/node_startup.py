"""Ready as soon as the node can be: upstream's fastStatusUpdateOnce (pkg/kubelet/kubelet.go).

After registration the Node is NotReady until the runtime reports NetworkReady, which waits for
the CNI config, which waits for the podCIDR the control plane assigns after registration. The
regular loops would notice that only at their next tick (runtime status every 5 s, node status
every 10 s); this loop checks every 100 ms, writes the status the moment it changes and ends once
the node is Ready with a podCIDR (or after upstream's nodeReadyGracePeriod, 120 s).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nodeagent.kubelet.node import NodeStatusManager

log = logging.getLogger(__name__)

FAST_PERIOD = 0.1
NODE_READY_GRACE_PERIOD = 120.0


async def fast_status_update_once(nodes: NodeStatusManager, refresh_runtime: Callable[[], Awaitable[None]],
                                  period: float = FAST_PERIOD, grace: float = NODE_READY_GRACE_PERIOD) -> bool:
    """True once the node's Ready status is written; False when the grace period ran out first."""
    start = time.monotonic()
    while time.monotonic() - start < grace:
        try:
            await refresh_runtime()
            await nodes.update_status()  # reads the podCIDR while it is unknown; writes only changes
            # what was written, not readiness() now: the 5 s runtime loop may have changed it since
            if nodes.ready_reported and nodes.pod_cidr:
                log.info("node ready node=%s after=%.2fs", nodes.config.node_name, time.monotonic() - start)
                return True
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.debug("fast node status update failed err=%s", e)
        await asyncio.sleep(period)
    return False
