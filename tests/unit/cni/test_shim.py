"""The exec'd shim (static C build and the Python fallback) against a daemon socket served by
PluginServer with a fake handler: forwarding, exit codes, and the standalone path."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from nodeagent.cni import conflist, install, protocol
from nodeagent.cni.daemon import PluginServer
from nodeagent.cni.errors import CNIError
from nodeagent.cni.shim import socket_path
from tests.unit.cni.test_dispatcher import CONF, ENV, FakeHandler


@pytest.fixture(scope="module")
def c_shim(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = install.build_shim(sys.executable, cache_dir=str(tmp_path_factory.mktemp("shim")))
    if path is None:
        pytest.skip("no C compiler: the C shim cannot be built here")
    return path


def python_shim(tmp_path: Path) -> str:
    p = tmp_path / "nodeagent-bridge.py"
    p.write_bytes(install._python_shim(sys.executable))
    p.chmod(0o755)
    return str(p)


async def run(argv: list[str], env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE, env=env)
    out, _ = await proc.communicate(stdin)
    assert proc.returncode is not None
    return proc.returncode, out


def test_protocol_round_trip() -> None:
    env, stdin = protocol.decode_request(protocol.encode_request({"CNI_A": "1=2", "HOME": "x", "CNI_B": ""}, b"{}"))
    assert env == {"CNI_A": "1=2", "CNI_B": ""} and stdin == b"{}"
    assert protocol.decode_reply(protocol.encode_reply(7, b"out")) == (7, b"out")


def test_socket_path_scan() -> None:
    assert socket_path(b'{"a":1, "daemonSocket" :\n "/x/y.sock"}') == "/x/y.sock"
    assert socket_path(b'{"daemonSocket": 3}').startswith("/var/run/nodeagent")
    assert socket_path(b'{"name":"n"}').startswith("/var/run/nodeagent")


@pytest.mark.parametrize("kind", ["c", "python"])
async def test_shim_forwards_to_daemon(kind: str, c_shim: str, tmp_path: Path) -> None:
    sock = str(tmp_path / "d.sock")
    handler = FakeHandler()
    server = PluginServer(sock, handler, workers=2)
    await server.start()
    argv = [c_shim] if kind == "c" else [python_shim(tmp_path)]
    try:
        conf = json.dumps({**CONF, "daemonSocket": sock}).encode()
        code, out = await run(argv, {**ENV, "PATH": os.environ["PATH"]}, conf)
        assert code == 0, out
        assert json.loads(out)["ips"][0]["address"] == "10.22.0.2/24"
        (name, req), = handler.calls
        assert name == "add" and req.container_id == "c1" and req.conf.name == "net1"
        handler.fail = CNIError(11, "busy")
        code, out = await run(argv, {**ENV, "CNI_COMMAND": "DEL"}, conf)
        assert code == 1 and json.loads(out)["code"] == 11
        assert server.calls == 2
    finally:
        await server.close()
    assert not await asyncio.to_thread(os.path.exists, sock)


@pytest.mark.parametrize("kind", ["c", "python"])
async def test_shim_without_daemon_runs_standalone(kind: str, c_shim: str, tmp_path: Path) -> None:
    argv = [c_shim] if kind == "c" else [python_shim(tmp_path)]
    conf = json.dumps({**CONF, "daemonSocket": str(tmp_path / "nobody.sock")}).encode()
    code, out = await run(argv, {"CNI_COMMAND": "VERSION"}, conf)
    assert code == 0 and "1.1.0" in json.loads(out)["supportedVersions"]
    # standalone validation: bad JSON on stdin is reported by the Python plugin itself
    code, out = await run(argv, dict(ENV), b"not json")
    assert code == 1 and json.loads(out)["code"] == 6


def test_install_populates_bin_dir(tmp_path: Path, c_shim: str) -> None:
    ref = tmp_path / "ref"
    ref.mkdir()
    for name in install.REFERENCE_PLUGINS:
        (ref / name).write_text("#!/bin/sh\n")
    bin_dir = tmp_path / "bin"
    os.environ["NODEAGENT_CNI_BUILD_DIR"] = os.path.dirname(c_shim)
    try:
        target = install.install(str(bin_dir), reference_dir=str(ref))
        install.install(str(bin_dir), reference_dir=str(ref))  # idempotent
    finally:
        del os.environ["NODEAGENT_CNI_BUILD_DIR"]
    assert os.access(target, os.X_OK) and open(target, "rb").read(4) == b"\x7fELF"
    assert sorted(os.listdir(bin_dir)) == sorted([install.PLUGIN_NAME, *install.REFERENCE_PLUGINS])
    assert os.readlink(bin_dir / "portmap") == str(ref / "portmap")


def test_conflist_chains_portmap_and_bandwidth(tmp_path: Path) -> None:
    body = conflist.build("10.244.3.0/24", ipam_dir="/d/ipam", daemon_socket="/d/s.sock", cluster_cidr="10.244.0.0/16")
    assert conflist.write(str(tmp_path), body) and not conflist.write(str(tmp_path), body)
    data: dict[str, Any] = json.loads((tmp_path / "10-nodeagent.conflist").read_text())
    assert [p["type"] for p in data["plugins"]] == ["nodeagent-bridge", "portmap", "bandwidth"]
    assert data["plugins"][1]["capabilities"] == {"portMappings": True}
    ours = data["plugins"][0]
    assert ours["ipam"]["ranges"] == [[{"subnet": "10.244.3.0/24"}]] and ours["daemonSocket"] == "/d/s.sock"




def test_conflist_writer_waits_for_our_pod_cidr(tmp_path: Path) -> None:
    from nodeagent.cni.daemon import ConflistWriter, DaemonConfig

    cfg = DaemonConfig(node_name="n1", data_dir=str(tmp_path), socket=str(tmp_path / "s.sock"))
    w = ConflistWriter(cfg)
    path = tmp_path / "cni" / "net.d" / "10-nodeagent.conflist"
    w.on_node({"metadata": {"name": "n1"}, "spec": {}})
    w.on_node({"metadata": {"name": "other"}, "spec": {"podCIDR": "10.244.9.0/24"}})
    assert not path.exists() and w.pod_cidr is None
    w.on_node({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}})
    data = json.loads(path.read_text())
    assert data["plugins"][0]["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.244.3.0/24"}]],
                                          "dataDir": str(tmp_path / "cni" / "ipam")}
    assert data["plugins"][0]["clusterCIDR"] == "10.244.0.0/16" and w.pod_cidr == "10.244.3.0/24"
