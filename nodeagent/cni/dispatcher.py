"""The CNI command dispatcher: owns the environment, stdin and stdout of one plugin call.

It validates what the spec puts on the runtime (CNI_* variables, the config's cniVersion, JSON on
stdin), calls the handler for the command and turns the outcome into the bytes and exit code the
runtime reads. It never touches os.environ or sys.stdin itself, so tests inject both (the shape of
containernetworking/cni pkg/skel). The same dispatcher runs inside the daemon and standalone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nodeagent.cni import version
from nodeagent.cni.config import NetConf, parse_netconf
from nodeagent.cni.errors import DECODE_FAILURE, INTERNAL, INVALID_ENV, CNIError

log = logging.getLogger("nodeagent.cni")

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "GC", "STATUS")

# CNI spec 1.1.0 "Parameters": which variables each operation requires.
_REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}

# The operation first appeared in this spec version; older configs may not ask for it.
_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


@dataclass(frozen=True)
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: str
    path: str
    conf: NetConf
    raw_conf: dict[str, Any]


class Handler(Protocol):
    def add(self, req: Request) -> dict[str, Any]: ...
    def delete(self, req: Request) -> None: ...
    def check(self, req: Request) -> None: ...
    def gc(self, req: Request) -> None: ...
    def status(self, req: Request) -> None: ...


def validate_ifname(name: str) -> None:
    """The spec's interface-name rules (skel ValidateInterfaceName)."""
    problem = ""
    if not name:
        problem = "is empty"
    elif len(name) > 15:
        problem = "is longer than 15 characters"
    elif name in (".", ".."):
        problem = "is . or .."
    elif any(c in name for c in "/: \t\n"):
        problem = "contains '/', ':' or whitespace"
    if problem:
        raise CNIError(INVALID_ENV, "invalid CNI_IFNAME", f"interface name {name!r} {problem}")


def _decode(stdin: bytes) -> dict[str, Any]:
    try:
        raw = json.loads(stdin)
    except (ValueError, UnicodeDecodeError) as e:
        raise CNIError(DECODE_FAILURE, "failed to decode network config", f"stdin is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise CNIError(DECODE_FAILURE, "failed to decode network config", "stdin must be a JSON object")
    return raw


def dispatch(env: Mapping[str, str], stdin: bytes, handler: Handler) -> tuple[int, bytes]:
    """Run one plugin call; return (exit code, stdout bytes)."""
    cni_version = version.CURRENT_VERSION
    command = env.get("CNI_COMMAND", "")
    try:
        if command not in COMMANDS:
            raise CNIError(INVALID_ENV, "invalid CNI_COMMAND", f"{command!r} is not one of {', '.join(COMMANDS)}")
        if command == "VERSION":
            return 0, _dumps({"cniVersion": version.CURRENT_VERSION,
                              "supportedVersions": list(version.SUPPORTED_VERSIONS)})
        missing = [k for k in _REQUIRED_ENV[command] if not env.get(k)]
        if missing:
            raise CNIError(INVALID_ENV, "required environment variables missing",
                           f"{', '.join(missing)} must be set for {command}")
        raw = _decode(stdin)
        if "cniVersion" not in raw:
            raise CNIError(DECODE_FAILURE, "failed to decode network config", "cniVersion is missing")
        version.check_supported(raw["cniVersion"])
        cni_version = raw["cniVersion"]
        minimum = _MIN_VERSION.get(command)
        if minimum and not version.at_least(cni_version, minimum):
            raise CNIError(1, f"config version does not allow {command}",
                           f"cniVersion {cni_version} predates {command} (needs {minimum})")
        if command != "GC" and command != "STATUS":
            validate_ifname(env["CNI_IFNAME"])
        conf = parse_netconf(raw, need_ipam=True)
        req = Request(command, env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""),
                      env.get("CNI_IFNAME", ""), env.get("CNI_ARGS", ""), env.get("CNI_PATH", ""),
                      conf, raw)
        if command == "ADD":
            result = handler.add(req)
            return 0, _dumps(version.convert_result(result, cni_version))
        if command == "DEL":
            handler.delete(req)
        elif command == "CHECK":
            handler.check(req)
        elif command == "GC":
            handler.gc(req)
        else:
            handler.status(req)
        return 0, b""
    except CNIError as e:
        log.info("cni error command=%s container=%s code=%d msg=%r details=%r",
                 command, env.get("CNI_CONTAINERID", ""), e.code, e.msg, e.details)
        return 1, _dumps(e.to_json(cni_version))
    except Exception as e:  # noqa: BLE001 - any bug still has to reach the runtime as CNI error JSON
        log.exception("cni internal error command=%s container=%s", command, env.get("CNI_CONTAINERID", ""))
        return 1, _dumps(CNIError(INTERNAL, f"{command} failed", f"{type(e).__name__}: {e}").to_json(cni_version))


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"
