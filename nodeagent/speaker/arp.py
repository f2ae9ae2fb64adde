"""ARP for addresses the node does not hold (RFC 826; gratuitous ARP as RFC 5227 section 3): a raw
AF_PACKET socket on one interface answers requests for the announced addresses with this
interface's MAC, and a new address is announced with gratuitous ARP requests so that neighbours'
caches (and the switch's forwarding table) move to this node at once."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa


def arp_packet(op: int, src_mac: bytes, src_ip: str, dst_mac: bytes, dst_ip: str, eth_dst: bytes) -> bytes:
    eth = eth_dst + src_mac + struct.pack("!H", ETH_P_ARP)
    arp = _ARP.pack(1, 0x0800, 6, 4, op, src_mac, socket.inet_aton(src_ip), dst_mac, socket.inet_aton(dst_ip))
    return eth + arp


def parse_request(frame: bytes) -> tuple[bytes, str, str] | None:
    """(sender MAC, sender IP, target IP) of an Ethernet ARP request for IPv4, else None."""
    if len(frame) < 14 + _ARP.size or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, 14)
    if (htype, ptype, hlen, plen, op) != (1, 0x0800, 6, 4, 1):
        return None
    return sha, socket.inet_ntoa(spa), socket.inet_ntoa(tpa)


class Responder:
    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self.sock.bind((ifname, ETH_P_ARP))
        self.sock.setblocking(False)
        self.mac: bytes = self.sock.getsockname()[4][:6]
        self.addresses: set[str] = set()
        self.replies = 0
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def set_addresses(self, addresses: set[str]) -> None:
        new = addresses - self.addresses
        self.addresses = set(addresses)
        for ip in sorted(new):
            self.gratuitous(ip)

    def gratuitous(self, ip: str) -> None:
        pkt = arp_packet(1, self.mac, ip, b"\x00" * 6, ip, BROADCAST)
        for _ in range(2):
            try:
                self.sock.send(pkt)
            except OSError as e:
                log.warning("gratuitous ARP failed interface=%s ip=%s error=%s", self.ifname, ip, e)
                return
        log.info("gratuitous ARP sent interface=%s ip=%s", self.ifname, ip)

    def _readable(self) -> None:
        while True:
            try:
                frame = self.sock.recv(128)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("ARP socket read failed interface=%s error=%s", self.ifname, e)
                return
            req = parse_request(frame)
            if req is None:
                continue
            sha, spa, tpa = req
            if tpa not in self.addresses or sha == self.mac:
                continue
            try:
                self.sock.send(arp_packet(2, self.mac, tpa, sha, spa, sha))
                self.replies += 1
            except OSError as e:
                log.warning("ARP reply failed interface=%s ip=%s error=%s", self.ifname, tpa, e)

    def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        except RuntimeError:
            pass
        self.sock.close()


def interface_for(address: str, interfaces: dict[str, list[str]]) -> str | None:
    """The interface with a connected IPv4 network holding the address (ARP reaches only that link)."""
    ip = ipaddress.ip_address(address)
    for name, cidrs in sorted(interfaces.items()):
        for c in cidrs:
            net = ipaddress.ip_interface(c).network
            if ip in net and net.prefixlen < 32:
                return name
    return None
