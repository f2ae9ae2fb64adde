"""nodeagent: the node side of Kubernetes in Python."""

__version__ = "0.1.0"
# What the kubelet reports as kubeletVersion and /version reports as gitVersion: kubectl 1.32
# warns about skew beyond one minor version, so we speak as a 1.32 cluster.
KUBERNETES_VERSION = "v1.32.0"
