"""nodeagent.proxy: kube-proxy (issue 6).

    model.py        Service / EndpointSlice -> ServicePort / Endpoint values
    tracker.py      change trackers shared by every back end ({previous, current}, no-ops dropped)
    proxier.py      the sync loop: trackers -> back end, conntrack clean-up, metrics, health
    iptables/       upstream chain layout via iptables-legacy-restore (+ a validating fake and a
                    packet tracer for tests)
    nftables.py     one `ip kube-proxy` table, verdict maps, one `nft -f` transaction per sync
    ipvs.py         virtual/real servers through pyroute2's IPVS netlink (+ a fake)
    conntrack.py    stale UDP conntrack entries
    metrics.py, http.py   /metrics (upstream names) and /healthz
    command.py      `nodeagent proxy`
"""
