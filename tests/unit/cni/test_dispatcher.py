"""The dispatcher against a recording fake handler: env, stdin and version handling per the CNI spec."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nodeagent.cni.dispatcher import Request, dispatch
from nodeagent.cni.errors import CNIError

CONF = {
    "cniVersion": "1.0.0", "name": "net1", "type": "nodeagent-bridge", "isDefaultGateway": True,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/24"}]]},
}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}
RESULT = {"interfaces": [{"name": "eth0", "sandbox": "/var/run/netns/x"}],
          "ips": [{"address": "10.22.0.2/24", "gateway": "10.22.0.1", "interface": 0}], "routes": [], "dns": {}}


class FakeHandler:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[tuple[str, Request]] = []
        self.fail = fail

    def _record(self, name: str, req: Request) -> None:
        self.calls.append((name, req))
        if self.fail:
            raise self.fail

    def add(self, req: Request) -> dict[str, Any]:
        self._record("add", req)
        return dict(RESULT)

    def delete(self, req: Request) -> None:
        self._record("delete", req)

    def check(self, req: Request) -> None:
        self._record("check", req)

    def gc(self, req: Request) -> None:
        self._record("gc", req)

    def status(self, req: Request) -> None:
        self._record("status", req)


def call(env: dict[str, str], conf: Any = CONF, handler: FakeHandler | None = None) -> tuple[int, dict[str, Any] | None, FakeHandler]:
    h = handler or FakeHandler()
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    code, out = dispatch(env, stdin, h)
    return code, (json.loads(out) if out else None), h


def test_version_lists_supported_versions_without_config() -> None:
    code, out, h = call({"CNI_COMMAND": "VERSION"}, b"")
    assert code == 0 and out is not None
    assert out["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    assert h.calls == []


def test_add_passes_env_and_config_and_prints_result() -> None:
    code, out, h = call(ENV)
    assert code == 0 and out is not None
    assert out["cniVersion"] == "1.0.0" and out["ips"][0]["address"] == "10.22.0.2/24"
    assert "version" not in out["ips"][0]  # 1.0.0 dropped the per-IP version field
    (name, req), = h.calls
    assert name == "add" and req.container_id == "c1" and req.ifname == "eth0"
    assert req.conf.is_gateway and req.conf.is_default_gateway  # isDefaultGateway implies isGateway


def test_old_version_result_carries_ip_version() -> None:
    code, out, _ = call(ENV, {**CONF, "cniVersion": "0.3.1"})
    assert code == 0 and out is not None and out["ips"][0]["version"] == "4" and out["cniVersion"] == "0.3.1"


@pytest.mark.parametrize("missing", ["CNI_NETNS", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"])
def test_add_without_required_env_is_code_4(missing: str) -> None:
    env = {k: v for k, v in ENV.items() if k != missing}
    code, out, h = call(env)
    assert code != 0 and out is not None and out["code"] == 4 and missing in out["details"]
    assert h.calls == []


def test_del_does_not_need_netns() -> None:
    env = {k: v for k, v in ENV.items() if k != "CNI_NETNS"} | {"CNI_COMMAND": "DEL"}
    code, out, h = call(env)
    assert code == 0 and out is None and h.calls[0][0] == "delete"


def test_unknown_command_is_code_4() -> None:
    code, out, _ = call({**ENV, "CNI_COMMAND": "FROB"})
    assert code != 0 and out is not None and out["code"] == 4


def test_not_json_is_code_6() -> None:
    code, out, h = call(ENV, b"{not json")
    assert code != 0 and out is not None and out["code"] == 6 and h.calls == []


def test_unknown_cni_version_is_code_1() -> None:
    code, out, h = call(ENV, {**CONF, "cniVersion": "9.9.9"})
    assert code != 0 and out is not None and out["code"] == 1 and "9.9.9" in out["details"]
    assert h.calls == []


@pytest.mark.parametrize("conf, word", [
    ({k: v for k, v in CONF.items() if k != "ipam"}, "ipam"),
    ({**CONF, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.22.0.0/33"}]]}}, "subnet"),
    ({**CONF, "ipam": {"type": "host-local", "subnet": "banana"}}, "subnet"),
    ({**CONF, "ipam": {"type": "host-local", "subnet": "10.0.0.0/24", "rangeStart": "10.0.1.5"}}, "rangeStart"),
    ({**CONF, "ipam": {"type": "dhcp"}}, "ipam"),
    ({**CONF, "mtu": 12}, "mtu"),
    ({**CONF, "name": ""}, "name"),
    ({**CONF, "bridge": "a-very-long-bridge-name"}, "bridge"),
])
def test_invalid_config_is_code_7(conf: dict[str, Any], word: str) -> None:
    code, out, h = call(ENV, conf)
    assert code != 0 and out is not None and out["code"] == 7, out
    assert word in (out["msg"] + out.get("details", "")) and h.calls == []


@pytest.mark.parametrize("ifname", ["", "x" * 16, "a/b", "a:b", "a b", ".."])
def test_bad_ifname_is_code_4(ifname: str) -> None:
    code, out, _ = call({**ENV, "CNI_IFNAME": ifname} if ifname else {**ENV, "CNI_IFNAME": ""})
    assert code != 0 and out is not None and out["code"] == 4


def test_check_needs_040() -> None:
    code, out, h = call({**ENV, "CNI_COMMAND": "CHECK"}, {**CONF, "cniVersion": "0.3.1"})
    assert code != 0 and out is not None and out["code"] == 1 and h.calls == []
    code, out, h = call({**ENV, "CNI_COMMAND": "CHECK"}, {**CONF, "cniVersion": "0.4.0"})
    assert code == 0 and h.calls[0][0] == "check"


def test_gc_and_status_need_110_and_only_cni_path() -> None:
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "/x"}
    gc_conf = {**CONF, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}
    code, _, h = call(env, gc_conf)
    assert code == 0 and h.calls[0][1].conf.valid_attachments == (("c1", "eth0"),)
    code, out, _ = call(env, CONF)
    assert code != 0 and out is not None and out["code"] == 1
    code, _, h = call({"CNI_COMMAND": "STATUS", "CNI_PATH": "/x"}, {**CONF, "cniVersion": "1.1.0"})
    assert code == 0 and h.calls[0][0] == "status"


def test_handler_errors_become_cni_error_json() -> None:
    code, out, _ = call(ENV, handler=FakeHandler(CNIError(11, "busy", "try later")))
    assert code != 0 and out == {"cniVersion": "1.0.0", "code": 11, "msg": "busy", "details": "try later"}
    code, out, _ = call(ENV, handler=FakeHandler(RuntimeError("boom")))
    assert code != 0 and out is not None and out["code"] == 999 and "boom" in out["details"]
