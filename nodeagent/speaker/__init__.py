"""`nodeagent speaker`: announces LoadBalancer Services' addresses on the node's underlay, as MetalLB's
speaker in layer 2 mode: for each address one node answers ARP for it, a node that has a ready
endpoint of the Service (election.py), and it sends gratuitous ARP when it takes an address over
(arp.py). Node-local and talking only to the apiserver (app.py); it never adds addresses, routes or
netfilter rules to the node. IPv4 only (no NDP)."""
