"""nodeagent.proxy: kube-proxy (issue 6).

    model.py        Service / EndpointSlice -> ServicePort / Endpoint values; categorize (policies,
                    terminating fallback, topology hints)
    tracker.py      change trackers shared by every back end ({previous, current}, no-ops dropped)
    proxier.py      the sync loop: trackers -> back end, conntrack clean-up, metrics, health
    iptables/       upstream chain layout via iptables-restore, legacy or nft back end (+ a
                    validating fake and a packet tracer for tests)
    nftables.py     one `ip kube-proxy` table, verdict maps, endpoints as interval-map data;
    nft_slots.py    full syncs as one `nft -f`, partial ones mostly as netlink element batches
    nft_netlink.py  (nft_slots: each chain's key range; nft_netlink: the element writer)
    ipvs.py         virtual/real servers through pyroute2's IPVS netlink (+ a fake)
    conntrack.py    stale UDP conntrack entries
    healthcheck.py  healthCheckNodePort listeners (LoadBalancer, externalTrafficPolicy Local)
    metrics.py, http.py   /metrics (upstream names), /healthz and /livez
    loader.py       streams input into iptables-restore / nft -f
    config.py       --config: a KubeProxyConfiguration file onto the flags (upstream precedence)
    command.py      `nodeagent proxy`
"""
