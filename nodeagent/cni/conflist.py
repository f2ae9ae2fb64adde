"""The network configuration list the CNI daemon writes for containerd: our plugin first, then the
reference portmap (hostPort) and bandwidth plugins, as DIR/cni/net.d/10-nodeagent.conflist.

cniVersion 1.0.0: the newest version that containerd 1.6's libcni and Debian's reference plugins
(1.1.1) all speak; our plugin speaks 1.1.0 too.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

CONFLIST_NAME = "10-nodeagent.conflist"
NETWORK_NAME = "nodeagent"
CONFLIST_VERSION = "1.0.0"


def build(pod_cidr: str, *, ipam_dir: str, daemon_socket: str, cluster_cidr: str | None,
          mtu: int = 0, bridge: str = "cni0") -> dict[str, Any]:
    ours: dict[str, Any] = {
        "type": "nodeagent-bridge",
        "bridge": bridge,
        "isGateway": True,
        "isDefaultGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "daemonSocket": daemon_socket,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": pod_cidr}]], "dataDir": ipam_dir},
    }
    if cluster_cidr:
        ours["clusterCIDR"] = cluster_cidr
    if mtu:
        ours["mtu"] = mtu
    return {
        "cniVersion": CONFLIST_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            ours,
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def write(conf_dir: str, conflist: dict[str, Any]) -> bool:
    """Atomically (containerd watches the directory and must never read half a file); returns
    whether the content changed."""
    os.makedirs(conf_dir, exist_ok=True)
    path = os.path.join(conf_dir, CONFLIST_NAME)
    data = json.dumps(conflist, indent=2) + "\n"
    try:
        with open(path) as f:
            if f.read() == data:
                return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(dir=conf_dir, prefix=".conflist-")
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True
