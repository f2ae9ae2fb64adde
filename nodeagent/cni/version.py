"""The CNI versions we speak and the conversion of our (1.x shaped) result to older ones."""

from __future__ import annotations

import copy
from typing import Any

from nodeagent.cni.errors import INCOMPATIBLE_VERSION, CNIError

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT_VERSION = "1.1.0"


def parse(version: str) -> tuple[int, int, int]:
    try:
        major, minor, patch = (int(p) for p in version.split("."))
    except (ValueError, AttributeError):
        raise CNIError(INCOMPATIBLE_VERSION, "invalid cniVersion", f"{version!r} is not MAJOR.MINOR.PATCH") from None
    return major, minor, patch


def check_supported(version: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        parse(version)  # a malformed string gets its own message
        raise CNIError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f"config is {version!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


def convert_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """Our result is 1.x shaped; 0.3.x/0.4.0 additionally carry "version" on each IP."""
    out = copy.deepcopy(result)
    out["cniVersion"] = version
    if not at_least(version, "1.0.0"):
        for ip in out.get("ips", []):
            ip["version"] = "6" if ":" in ip["address"] else "4"
    return out
