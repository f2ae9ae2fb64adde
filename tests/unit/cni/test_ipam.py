"""The allocator against the in-memory store, and the on-disk store's host-local layout."""

from __future__ import annotations

import ipaddress
import multiprocessing
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from nodeagent.cni.config import IPAMConfig, parse_ipam
from nodeagent.cni.errors import CNIError
from nodeagent.cni.ipam.allocator import Allocator
from nodeagent.cni.ipam.store import DiskStore, MemoryStore, Reservation


def ipam(ranges: list[list[dict[str, str]]], data_dir: str = "/nonexistent") -> IPAMConfig:
    return parse_ipam({"type": "host-local", "ranges": ranges, "dataDir": data_dir})


def ip(s: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(s)


def test_defaults_follow_host_local() -> None:
    (r,), = ipam([[{"subnet": "10.1.2.0/24"}]]).range_sets
    assert (str(r.range_start), str(r.range_end), str(r.gateway)) == ("10.1.2.1", "10.1.2.254", "10.1.2.1")


def test_sequential_allocation_skips_gateway_and_continues_after_last() -> None:
    a = Allocator(ipam([[{"subnet": "10.1.2.0/24"}]]), MemoryStore())
    got = [str(a.allocate(f"c{i}", "eth0")[0].ip) for i in range(3)]
    assert got == ["10.1.2.2", "10.1.2.3", "10.1.2.4"]
    a.release("c0", "eth0")
    # host-local keeps walking forward from last_reserved_ip instead of reusing .2 at once
    assert str(a.allocate("c3", "eth0")[0].ip) == "10.1.2.5"


def test_range_start_end_and_wrap_around() -> None:
    store = MemoryStore()
    a = Allocator(ipam([[{"subnet": "10.1.2.0/24", "rangeStart": "10.1.2.10", "rangeEnd": "10.1.2.12"}]]), store)
    assert [str(a.allocate(c, "eth0")[0].ip) for c in "abc"] == ["10.1.2.10", "10.1.2.11", "10.1.2.12"]
    with pytest.raises(CNIError) as e:
        a.allocate("d", "eth0")
    assert e.value.code == 100 and "10.1.2.0/24" in e.value.details
    a.release("a", "eth0")
    assert str(a.allocate("d", "eth0")[0].ip) == "10.1.2.10"  # wrapped


def test_same_attachment_gets_its_address_back() -> None:
    a = Allocator(ipam([[{"subnet": "10.1.2.0/24"}]]), MemoryStore())
    first = a.allocate("c1", "eth0")[0].ip
    assert a.allocate("c1", "eth0")[0].ip == first  # a retried ADD does not leak a second address
    assert a.allocate("c1", "eth1")[0].ip != first


def test_exhausted_set_reclaims_stale_reservations() -> None:
    store = MemoryStore()
    a = Allocator(ipam([[{"subnet": "10.1.2.0/30"}]]), store)  # only .2 besides the gateway
    assert str(a.allocate("gone", "eth0")[0].ip) == "10.1.2.2"
    with pytest.raises(CNIError):
        a.allocate("new", "eth0", is_stale=lambda r: False)
    seen: list[Reservation] = []

    def gone(r: Reservation) -> bool:
        seen.append(r)
        return r.container_id == "gone"

    got = a.allocate("new", "eth0", is_stale=gone)
    assert str(got[0].ip) == "10.1.2.2" and [r.container_id for r in seen] == ["gone"]


def test_multiple_range_sets_are_all_or_nothing() -> None:
    store = MemoryStore()
    conf = ipam([[{"subnet": "10.1.0.0/24"}], [{"subnet": "10.2.0.0/30"}]])
    a = Allocator(conf, store)
    got = a.allocate("c1", "eth0")
    assert [str(x.ip) for x in got] == ["10.1.0.2", "10.2.0.2"]
    with pytest.raises(CNIError):
        a.allocate("c2", "eth0")  # second set is full
    assert sorted(map(str, store.ips)) == ["10.1.0.2", "10.2.0.2"]  # c2's first address rolled back


def test_two_ranges_in_one_set_are_walked_in_order() -> None:
    a = Allocator(ipam([[{"subnet": "10.1.0.0/30"}, {"subnet": "10.9.0.0/30"}]]), MemoryStore())
    assert [str(a.allocate(c, "eth0")[0].ip) for c in "ab"] == ["10.1.0.2", "10.9.0.2"]


def test_release_unless_keeps_valid_attachments() -> None:
    store = MemoryStore()
    a = Allocator(ipam([[{"subnet": "10.1.0.0/24"}]]), store)
    for c in ("keep", "leak1", "leak2"):
        a.allocate(c, "eth0")
    freed = a.release_unless(lambda r: (r.container_id, r.ifname) == ("keep", "eth0"))
    assert sorted(r.container_id for r in freed) == ["leak1", "leak2"]
    assert list(store.ips.values()) == [("keep", "eth0")]


def test_disk_store_layout_is_host_local(tmp_path: Path) -> None:
    s = DiskStore(str(tmp_path), "net1")
    with s.lock():
        assert s.reserve("abc ", "eth0", ip("10.0.0.2"), "0")
        assert not s.reserve("other", "eth0", ip("10.0.0.2"), "0")
    d = tmp_path / "net1"
    assert (d / "10.0.0.2").read_bytes() == b"abc\r\neth0"
    assert (d / "last_reserved_ip.0").read_text() == "10.0.0.2"
    assert (d / "lock").exists()
    # a file written by an old host-local (container ID only) still belongs to the container
    (d / "10.0.0.3").write_text("old")
    assert s.get_by_id("old", "eth0") == [ip("10.0.0.3")]
    assert sorted(map(str, s.release_by_id("old", "eth0"))) == ["10.0.0.3"]
    assert s.get_by_id("abc", "eth0") == [ip("10.0.0.2")] and s.last_reserved_ip("0") == ip("10.0.0.2")


def test_fifty_concurrent_threads_get_distinct_addresses(tmp_path: Path) -> None:
    conf = ipam([[{"subnet": "10.5.0.0/24"}]], str(tmp_path))
    store = DiskStore(str(tmp_path), "net1")

    def one(i: int) -> str:
        return str(Allocator(conf, store).allocate(f"c{i}", "eth0")[0].ip)

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(50)))
    assert len(set(got)) == 50
    assert len([f for f in os.listdir(tmp_path / "net1") if f[0].isdigit()]) == 50


def _proc_alloc(args: tuple[str, int]) -> str:
    data_dir, i = args
    conf = ipam([[{"subnet": "10.6.0.0/24"}]], data_dir)
    return str(Allocator(conf, DiskStore(data_dir, "net1")).allocate(f"p{i}", "eth0")[0].ip)


def test_fifty_concurrent_processes_get_distinct_addresses(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(8) as pool:
        got = pool.map(_proc_alloc, [(str(tmp_path), i) for i in range(50)])
    assert len(set(got)) == 50
