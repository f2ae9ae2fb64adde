"""Resource quantities ("100m", "128Mi", "1.5", "2e3") as upstream's resource.Quantity parses them.

An API value type shared by everyone who reads resources: the scheduler compares requests with
allocatable, the runtime turns limits into cgroup values, the kubelet resolves resourceFieldRef.
Integer units: milli-cores for cpu, bytes for everything else
(k8s.io/apimachinery/pkg/api/resource/quantity.go suffixes).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}
_RE = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$")


def parse_quantity(value: str | int | float | None) -> Decimal:
    """The quantity as a Decimal in base units; raises ValueError naming the bad value."""
    if value is None:
        return Decimal(0)
    if isinstance(value, int | float):
        return Decimal(str(value))
    m = _RE.match(value.strip())
    if not m:
        raise ValueError(f"invalid resource quantity {value!r}: expected a number with an optional suffix")
    number, suffix = m.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as e:
        raise ValueError(f"invalid resource quantity {value!r}") from e
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    raise ValueError(f"invalid resource quantity {value!r}: unknown suffix {suffix!r}")


def milli_value(value: str | int | float | None) -> int:
    """cpu in milli-cores, rounded up as Quantity.MilliValue does."""
    return math.ceil(parse_quantity(value) * 1000)


def int_value(value: str | int | float | None) -> int:
    """memory, pods, ephemeral-storage: whole units, rounded up as Quantity.Value does."""
    return math.ceil(parse_quantity(value))


def resource_value(name: str, value: str | int | float | None) -> int:
    return milli_value(value) if name == "cpu" else int_value(value)
