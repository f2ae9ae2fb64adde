"""Resource quantities as upstream parses them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nodeagent.machinery.quantity import int_value, milli_value, parse_quantity, resource_value


def test_cpu_and_memory_units() -> None:
    assert milli_value("100m") == 100
    assert milli_value("1.5") == 1500
    assert milli_value(2) == 2000
    assert milli_value("1u") == 1  # rounded up to a whole milli-core, as MilliValue does
    assert int_value("128Mi") == 128 * 2**20
    assert int_value("1G") == 10**9
    assert int_value("1e3") == 1000
    assert resource_value("cpu", "250m") == 250 and resource_value("pods", "110") == 110


def test_bad_quantity_names_the_value() -> None:
    with pytest.raises(ValueError, match="'12XB'"):
        int_value("12XB")


@pytest.mark.parametrize("bad", ["", "abc", "1Xi", "12 Mi", "--1"])
def test_parse_quantity_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(bad)


def test_parse_quantity_exact() -> None:
    assert parse_quantity("1.5Gi") == Decimal(3 * 2**29)
