"""CNI error codes and the error result (CNI spec 1.1.0, "Error" and "Well-known Error Codes")."""

from __future__ import annotations

from typing import Any

# Codes 1-99 are reserved by the spec; 100+ are plugin specific. 999 is what the reference
# plugins return for an error without a better code (skel turns a plain error into it).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50  # STATUS: the plugin cannot serve ADDs now
NOT_AVAILABLE_LIMITED = 51  # STATUS: ... and existing containers may have limited connectivity
NO_ADDRESSES = 100  # IPAM: the range set is exhausted
INTERNAL = 999


class CNIError(Exception):
    """An error the plugin reports as CNI error JSON on stdout with a non-zero exit."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_json(self, cni_version: str) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out
