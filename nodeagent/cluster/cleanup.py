"""What `cluster down` removes besides namespaces and processes: mounts and cgroups.

containerd leaves overlay rootfs mounts, shm mounts and (unless told otherwise) pod netns bind
mounts under /run/netns; runc leaves empty cgroups when its processes are killed. We find ours by
path (anything mounted under the cluster's dir) and by identity (pod netns inodes and cgroups of
processes we recorded before killing them).
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nodeagent.mountinfo import MountEntry, read_mountinfo

log = logging.getLogger(__name__)

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def mounts_under(root: Path, entries: Iterable[MountEntry]) -> list[str]:
    """Mount points at or below root, deepest first (the order to unmount them)."""
    prefix = str(root).rstrip("/") + "/"
    found = {e.mount_point for e in entries if e.mount_point == str(root) or e.mount_point.startswith(prefix)}
    return sorted(found, key=lambda p: (p.count("/"), p), reverse=True)


def umount(path: str) -> bool:
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        log.warning("umount failed path=%s err=%s", path, os.strerror(err))
        return False
    return True


def unmount_under(root: Path) -> list[str]:
    """Unmount everything mounted under root; repeat because a path can be mounted twice."""
    done: list[str] = []
    for _ in range(5):
        paths = mounts_under(root, read_mountinfo())
        if not paths:
            break
        for p in paths:
            if umount(p):
                done.append(p)
    return done


def netns_mounts_with_inodes(inodes: set[int], netns_dir: Path = Path("/run/netns")) -> list[str]:
    """nsfs bind mounts under /run/netns that pin one of `inodes` (pod namespaces we recorded)."""
    out = []
    for e in read_mountinfo():
        if e.fstype != "nsfs" or not e.mount_point.startswith(str(netns_dir) + "/"):
            continue
        try:
            if os.stat(e.mount_point).st_ino in inodes:
                out.append(e.mount_point)
        except OSError:
            continue
    return out


def remove_netns_mounts(paths: Iterable[str]) -> None:
    for p in paths:
        umount(p)
        try:
            os.unlink(p)
        except OSError:
            pass


@dataclass
class Snapshot:
    """Identities of a cluster's processes, taken before they are killed."""

    pod_netns_inodes: set[int] = field(default_factory=set)
    cgroups: set[Path] = field(default_factory=set)  # absolute cgroup directories, every hierarchy


def _controllers() -> set[str]:
    try:
        lines = Path("/proc/cgroups").read_text().splitlines()
    except OSError:
        return set()
    return {ln.split()[0] for ln in lines if ln and not ln.startswith("#")}


def cgroup_roots(entries: Iterable[MountEntry], controllers: set[str] | None = None) -> dict[frozenset[str], Path]:
    """Mount point of each cgroup hierarchy, keyed as /proc/PID/cgroup names it: the v2 one by the
    empty set, a v1 one by its controllers (or name=...), e.g. {"cpu", "cpuacct"}. Hybrid hosts
    (this one: v1 controllers plus a v2 "unified" tree) have both."""
    known = _controllers() if controllers is None else controllers
    roots: dict[frozenset[str], Path] = {}
    for e in entries:
        if e.fstype == "cgroup2":
            roots.setdefault(frozenset(), Path(e.mount_point))
        elif e.fstype == "cgroup":
            opts = {o for o in e.super_options.split(",") if o in known or o.startswith("name=")}
            roots.setdefault(frozenset(opts), Path(e.mount_point))
    return roots


def parse_cgroup_file(text: str, roots: dict[frozenset[str], Path]) -> list[Path]:
    """The directories of a /proc/PID/cgroup ("ID:controllers:path" per hierarchy)."""
    out = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        key = frozenset(c for c in parts[1].split(",") if c)
        root = roots.get(key)
        if root is not None:
            out.append(root / parts[2].strip().lstrip("/"))
    return out


def snapshot(pids: Iterable[int], cluster_netns_inodes: set[int],
             roots: dict[frozenset[str], Path] | None = None) -> Snapshot:
    """Record the pod namespaces and container cgroups among `pids`: processes outside the
    cluster's own namespaces are pod containers (children of shims), in cgroups runc made."""
    roots = cgroup_roots(read_mountinfo()) if roots is None else roots
    snap = Snapshot()
    for pid in pids:
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            cgs = parse_cgroup_file(Path(f"/proc/{pid}/cgroup").read_text(), roots)
        except OSError:
            continue
        if ino in cluster_netns_inodes:
            continue
        snap.pod_netns_inodes.add(ino)
        snap.cgroups.update(cgs)
    return snap


def cgroups_in_use(exclude: set[int], proc: Path = Path("/proc"),
                   roots: dict[frozenset[str], Path] | None = None) -> set[Path]:
    """Cgroup dirs (and all their ancestors) of every process not in `exclude`: never removed."""
    roots = cgroup_roots(read_mountinfo()) if roots is None else roots
    keep: set[Path] = set(roots.values())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            cgs = parse_cgroup_file((entry / "cgroup").read_text(), roots)
        except OSError:
            continue
        for cg in cgs:
            while cg not in keep and cg != cg.parent:
                keep.add(cg)
                cg = cg.parent
    return keep


def cgroup_dirs_to_remove(cgroups: Iterable[Path], keep: set[Path], roots: Iterable[Path]) -> list[Path]:
    """Each recorded cgroup and its parents, deepest first, never a hierarchy's root nor a cgroup
    in keep (those the host's other processes use)."""
    stop = set(roots) | keep
    out: set[Path] = set()
    for cg in cgroups:
        if not any(cg.is_relative_to(r) for r in roots):
            continue
        while cg not in stop and cg != cg.parent:
            out.add(cg)
            cg = cg.parent
    return sorted(out, key=lambda p: (len(p.parts), str(p)), reverse=True)


def remove_cgroups(cgroups: Iterable[Path], keep: set[Path], roots: Iterable[Path] | None = None) -> int:
    """rmdir fails with EBUSY on a cgroup that still has processes or children: that is the point,
    only empty ones go (a parent shared with another cluster stays while it has members)."""
    roots = list(cgroup_roots(read_mountinfo()).values()) if roots is None else list(roots)
    removed = 0
    for d in cgroup_dirs_to_remove(cgroups, keep, roots):
        try:
            os.rmdir(d)
            removed += 1
        except OSError:
            pass
    return removed
