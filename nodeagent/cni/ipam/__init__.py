"""host-local compatible IPAM: a Store of reservations and the allocator that walks ranges."""
