"""The iptables back end: chain names, the executor interface (real and fake), the renderer."""
