"""Endpoints and EndpointSlices: written by the endpoints controllers (and the apiserver for the
`kubernetes` Service); a PUT creates them (upstream AllowCreateOnUpdate)."""

from __future__ import annotations

from typing import Any

from nodeagent.api import tables as t
from nodeagent.api.registry.strategy import Strategy

Obj = dict[str, Any]
Row = list[Any]


def _endpoints_row(o: Obj) -> Row:
    eps = []
    for s in o.get("subsets") or []:
        ports = [p.get("port") for p in s.get("ports") or []] or [None]
        for a in s.get("addresses") or []:
            for p in ports:
                eps.append(f"{a.get('ip')}:{p}" if p is not None else str(a.get("ip")))
    return [t.meta(o).get("name", ""), t.more(eps), t.created(o)]


def _endpointslice_row(o: Obj) -> Row:
    ports = [str(p.get("port")) for p in o.get("ports") or [] if p.get("port") is not None]
    addrs = [a for e in o.get("endpoints") or [] for a in e.get("addresses") or []]
    addrs = [str(a) for a in addrs]
    return [t.meta(o).get("name", ""), o.get("addressType", ""), t.more(ports) if ports else "<unset>",
            t.more(addrs) if addrs else "<unset>", t.created(o)]


class EndpointsStrategy(Strategy):
    create_on_update = True
    printer = t.Printer((("Name", "string", 0), ("Endpoints", "string", 0), ("Age", "string", 0)), _endpoints_row)


class EndpointSliceStrategy(Strategy):
    create_on_update = True
    printer = t.Printer((("Name", "string", 0), ("AddressType", "string", 0), ("Ports", "string", 0),
                         ("Endpoints", "string", 0), ("Age", "string", 0)), _endpointslice_row)
