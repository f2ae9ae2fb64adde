"""Resource quantities as upstream parses them."""

from __future__ import annotations

import pytest

from nodeagent.controllers.quantity import int_value, milli_value, resource_value


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
