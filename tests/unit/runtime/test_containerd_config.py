"""ManagedContainerd without running it: the generated config, argv, mount discovery."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nodeagent.runtime.containerd import ContainerdError, ManagedContainerd, crun_blocked, mounts_under

CRI = "io.containerd.grpc.v1.cri"


def test_config_keeps_everything_under_the_data_dir(tmp_path: Path) -> None:
    c = ManagedContainerd(tmp_path, cni_bin_dir="/opt/cni/bin", stream_port=10010)
    cfg = tomllib.loads(c.render_config())
    d = tmp_path.resolve() / "containerd"
    assert cfg["version"] == 2
    assert (cfg["root"], cfg["state"]) == (str(d / "root"), str(d / "state"))
    assert cfg["grpc"]["address"] == str(d / "containerd.sock") == str(c.socket)
    assert cfg["ttrpc"]["address"] == str(d / "containerd.sock.ttrpc")
    assert c.endpoint == f"unix://{d / 'containerd.sock'}"
    cri = cfg["plugins"][CRI]
    assert cri["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE here
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["sandbox_image"] == "nodeagent.local/pause:1"
    assert (cri["stream_server_address"], cri["stream_server_port"]) == ("127.0.0.1", "10010")
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["Root"] == str(d / "runc")
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"] == {"bin_dir": "/opt/cni/bin", "conf_dir": str(tmp_path.resolve() / "cni" / "net.d"),
                          "max_conf_num": 1}
    assert "io.containerd.internal.v1.opt" in cfg["disabled_plugins"]


def test_config_custom_sandbox_image_and_stream_address(tmp_path: Path) -> None:
    c = ManagedContainerd(tmp_path, sandbox_image="nodeagent.local/other:2", stream_address="192.168.56.11",
                          cni_conf_dir=tmp_path / "conf")
    cri = tomllib.loads(c.render_config())["plugins"][CRI]
    assert cri["sandbox_image"] == "nodeagent.local/other:2"
    assert cri["stream_server_address"] == "192.168.56.11"
    assert cri["cni"]["conf_dir"] == str(tmp_path / "conf")


def test_crun_is_a_second_runtime_handler_with_its_own_root(tmp_path: Path) -> None:
    c = ManagedContainerd(tmp_path, metrics_address="127.0.0.1:1338")
    c.crun_binary = "/usr/bin/crun"
    cfg = tomllib.loads(c.render_config())
    runtimes = cfg["plugins"][CRI]["containerd"]["runtimes"]
    assert cfg["plugins"][CRI]["containerd"]["default_runtime_name"] == "runc"
    assert runtimes["crun"]["runtime_type"] == "io.containerd.runc.v2"  # containerd's runc shim execs crun
    d = tmp_path.resolve() / "containerd"
    assert runtimes["crun"]["options"] == {"BinaryName": "/usr/bin/crun", "Root": str(d / "crun"),
                                           "SystemdCgroup": False}
    assert "BinaryName" not in runtimes["runc"]["options"]
    assert cfg["metrics"]["address"] == "127.0.0.1:1338"
    c.crun_binary = None  # not installed: only runc, and no metrics section unless asked
    cfg = tomllib.loads(c.render_config())
    assert list(cfg["plugins"][CRI]["containerd"]["runtimes"]) == ["runc"]
    assert "metrics" not in tomllib.loads(ManagedContainerd(tmp_path).render_config())


def test_crun_blocked_by_v2_controllers_in_a_hybrid_layout(tmp_path: Path) -> None:
    assert crun_blocked(tmp_path) == ""  # no unified/ mount: pure v1 or pure v2
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("\n")
    assert crun_blocked(tmp_path) == ""  # hybrid with an empty v2 hierarchy, as systemd mounts it
    (tmp_path / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    assert "hugetlb" in crun_blocked(tmp_path) and "mount -t cgroup" in crun_blocked(tmp_path)


def test_argv_enters_only_the_network_namespace(tmp_path: Path) -> None:
    c = ManagedContainerd(tmp_path, netns="na-node-1")
    assert c.argv()[:3] == ["nsenter", "--net=/var/run/netns/na-node-1", "--"]
    assert c.argv()[3:] == ["containerd", "--config", str(c.config_path)]
    assert ManagedContainerd(tmp_path).argv()[0] == "containerd"


def test_socket_path_too_long_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ContainerdError, match="shorter data dir"):
        ManagedContainerd(tmp_path / ("x" * 100))


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
100 22 0:50 / /data/n1/containerd/state/io.containerd.grpc.v1.cri/sandboxes/abc/shm rw - tmpfs shm rw
101 22 0:51 / /data/n1/containerd/state/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - overlay overlay rw
102 22 0:4 net:[4026532] /data/n1/containerd/state/netns/cni-1 rw - nsfs nsfs rw
103 22 0:52 / /data/n1\\040x/containerd/weird rw - tmpfs tmpfs rw
104 22 0:53 / /data/n10/containerd/other rw - tmpfs tmpfs rw
105 22 0:54 / /data/n1 rw - tmpfs tmpfs rw
"""


def test_mounts_under_finds_only_ours_deepest_first() -> None:
    got = mounts_under(Path("/data/n1"), MOUNTINFO)
    # deepest first (a mount below another must go before it), then by path
    assert got == [
        "/data/n1/containerd/state/io.containerd.grpc.v1.cri/sandboxes/abc/shm",
        "/data/n1/containerd/state/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
        "/data/n1/containerd/state/netns/cni-1",
    ]
    assert mounts_under(Path("/data/n1 x"), MOUNTINFO) == ["/data/n1 x/containerd/weird"]
