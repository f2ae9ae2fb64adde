"""Pid files, /proc walking, mountinfo and cgroup clean-up decisions (pure, on fake /proc trees)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from nodeagent.cluster import cleanup, procs
from nodeagent.mountinfo import MountEntry, parse_mountinfo

STAT = "{pid} (python3 (x) y) S {ppid} 1 1 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000 10"


def _fake_proc(root: Path, entries: dict[int, tuple[int, int]]) -> Path:
    """pid -> (ppid, starttime)"""
    for pid, (ppid, start) in entries.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(STAT.format(pid=pid, ppid=ppid, start=start))
    (root / "self").mkdir()
    return root


def test_stat_fields_survive_odd_command_names() -> None:
    line = STAT.format(pid=7, ppid=3, start=4242)
    assert procs.parse_stat_start_time(line) == 4242
    assert procs.parse_stat_ppid(line) == 3


def test_pid_file_round_trip_and_reuse_detection(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "proc", {100: (1, 555)})
    rec = procs.PidRecord(100, 555)
    assert procs.PidRecord.parse(rec.render()) == rec
    assert procs.alive(rec, proc)
    # same pid, other start time: a different process took the pid; never signal it
    assert not procs.alive(procs.PidRecord(100, 556), proc)
    assert not procs.alive(procs.PidRecord(101, 555), proc)
    for junk in ("", "12", "a b", "1 2 3"):
        assert procs.PidRecord.parse(junk) is None


def test_write_and_read_pid_file_of_a_real_process(tmp_path: Path) -> None:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        rec = procs.write_pid_file(tmp_path / "run" / "x.pid", p.pid)
        assert procs.read_pid_file(tmp_path / "run" / "x.pid") == rec
        assert procs.alive(rec)
        assert procs.terminate({p.pid}, grace=5) == set()
        assert not procs.alive(rec)
    finally:
        p.kill()
        p.wait()
    assert procs.read_pid_file(tmp_path / "missing.pid") is None


def test_process_tree_follows_children(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "proc", {10: (1, 1), 11: (10, 1), 12: (11, 1), 13: (1, 1), 14: (13, 1)})
    assert procs.process_tree({10}, proc) == {10, 11, 12}
    assert procs.process_tree({13, 11}, proc) == {11, 12, 13, 14}


def test_component_argv_enters_only_the_network_namespace() -> None:
    argv = procs.component_argv("na-c-n1", ["kubelet", "--node-name", "c-n1"], python="/py")
    assert argv == ["nsenter", "--net=/var/run/netns/na-c-n1", "--", "/py", "-m", "nodeagent",
                    "kubelet", "--node-name", "c-n1"]
    assert procs.component_argv(None, ["cluster", "forward"], python="/py")[:3] == ["/py", "-m", "nodeagent"]


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
100 22 0:50 / /var/lib/nodeagent/clusters/c/c-n1/containerd/state/x/rootfs rw shared:2 - overlay overlay rw
101 22 0:51 / /var/lib/nodeagent/clusters/c/c-n1/containerd/state/x/shm rw shared:3 - tmpfs shm rw
102 22 0:52 / /var/lib/nodeagent/clusters/c-other/a rw shared:4 - tmpfs t rw
103 22 0:4 net:[4026532] /run/netns/cni-1234 rw shared:5 - nsfs nsfs rw
104 22 0:53 / /var/lib/nodeagent/clusters/c/with\\040space rw - tmpfs t rw
"""


def test_mounts_under_a_cluster_dir_only_deepest_first() -> None:
    entries = parse_mountinfo(MOUNTINFO)
    assert entries[4] == MountEntry("/run/netns/cni-1234", "nsfs", "rw")
    got = cleanup.mounts_under(Path("/var/lib/nodeagent/clusters/c"), entries)
    assert got == [
        "/var/lib/nodeagent/clusters/c/c-n1/containerd/state/x/shm",
        "/var/lib/nodeagent/clusters/c/c-n1/containerd/state/x/rootfs",
        "/var/lib/nodeagent/clusters/c/with space",
    ]  # not the prefix-sharing sibling c-other


CGROUP_MOUNTS = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,xattr,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
"""
CG = Path("/sys/fs/cgroup")


def _roots() -> dict[frozenset[str], Path]:
    return cleanup.cgroup_roots(parse_mountinfo(CGROUP_MOUNTS), {"cpu", "cpuacct", "memory"})


def test_cgroup_hierarchies_of_a_hybrid_host() -> None:
    roots = _roots()
    assert roots == {frozenset({"cpu", "cpuacct"}): CG / "cpu,cpuacct", frozenset({"memory"}): CG / "memory",
                     frozenset({"name=systemd"}): CG / "systemd", frozenset(): CG / "unified"}
    text = "4:memory:/k8s.io/abc\n2:cpuacct,cpu:/k8s.io/abc\n1:name=systemd:/k8s.io/abc\n0::/k8s.io/abc\n"
    assert cleanup.parse_cgroup_file(text, roots) == [CG / "memory/k8s.io/abc", CG / "cpu,cpuacct/k8s.io/abc",
                                                      CG / "systemd/k8s.io/abc", CG / "unified/k8s.io/abc"]


def test_cgroup_removal_keeps_shared_and_root_cgroups() -> None:
    roots = list(_roots().values())
    mem = CG / "memory"
    keep = {mem, mem / "k8s.io", mem / "user.slice"}
    dirs = cleanup.cgroup_dirs_to_remove([mem / "k8s.io/pod/abc", mem / "k8s.io/pod/def", Path("/elsewhere/x")],
                                         keep, roots)
    assert dirs == [mem / "k8s.io/pod/def", mem / "k8s.io/pod/abc", mem / "k8s.io/pod"]
    # an unshared parent goes too, the hierarchy root never
    assert cleanup.cgroup_dirs_to_remove([mem / "k8s.io/x"], {mem}, roots) == [mem / "k8s.io/x", mem / "k8s.io"]


def test_cgroups_in_use_includes_ancestors(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, cg in ((1, "/init.scope"), (2, "/a/b/c"), (3, "/x/y")):
        (proc / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "cgroup").write_text(f"0::{cg}\n4:memory:{cg}\n")
    u, m = CG / "unified", CG / "memory"
    got = cleanup.cgroups_in_use({3}, proc, _roots())
    assert {u / "init.scope", u / "a", u / "a/b", u / "a/b/c", m / "a/b/c", m} <= got
    assert u / "x" not in got and m / "x/y" not in got


def test_netns_inode_of_missing_path() -> None:
    assert procs.netns_inode("/nonexistent/ns") is None
    assert procs.netns_inode("/proc/self/ns/net") == os.stat("/proc/self/ns/net").st_ino
