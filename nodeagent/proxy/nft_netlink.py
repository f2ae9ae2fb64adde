"""Map and set elements of our nftables table written straight over netlink, as one transaction.

Why not `nft -f` for these: before applying anything nft dumps the table (chains, sets, and the
elements of every interval map it touches) to check the input against it: at 10k Services that is
~35 ms for a few hash-map elements and ~350 ms for interval elements (nft 1.0.6, measured with
benchmarks/proxy.py), against ~1 ms for the same change as one netlink batch. nft stays the writer
of chains, rules and whole-table syncs; this module only adds and deletes elements of maps whose
layout nftables.py defines, encoding keys and data exactly as nft does (checked by
tests/integration/proxy/test_nft_netlink.py, which lists elements written both ways).

Wire format (include/uapi/linux/netfilter/nf_tables.h, nfnetlink.h): a batch is
NFNL_MSG_BATCH_BEGIN, then NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM messages, then
NFNL_MSG_BATCH_END, sent in one sendmsg; the kernel applies all of it or none. Every concatenated
field is padded to 4 bytes; addresses and ports are in network order, numgen keys of interval maps
too (nft byte-swaps numgen's host-order result before the lookup). An interval lo-hi is two
elements: `lo` carrying the data and `hi + 1` flagged NFT_SET_ELEM_INTERVAL_END.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Sequence

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFT_MSG_NEWSETELEM = 12
NFT_MSG_DELSETELEM = 14
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_CREATE = 0x400
NLMSG_ERROR = 0x2
NLA_F_NESTED = 0x8000
NFTA_SET_ELEM_LIST_TABLE = 1
NFTA_SET_ELEM_LIST_SET = 2
NFTA_SET_ELEM_LIST_ELEMENTS = 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_SET_ELEM_DATA = 2
NFTA_SET_ELEM_FLAGS = 3
NFTA_DATA_VALUE = 1
NFTA_DATA_VERDICT = 2
NFTA_VERDICT_CODE = 1
NFTA_VERDICT_CHAIN = 2
NFT_SET_ELEM_INTERVAL_END = 1
VERDICTS = {"drop": 0, "accept": 1, "jump": -3, "goto": -4, "return": -5}
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
MAX_ELEMENTS_BYTES = 48 * 1024  # an attribute's length is 16 bits: split bigger element lists


class NftNetlinkError(OSError):
    pass


def _attr(kind: int, payload: bytes) -> bytes:
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def _nest(kind: int, *parts: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(parts))


def _string(kind: int, text: str) -> bytes:
    return _attr(kind, text.encode() + b"\0")


def _ip(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def _word(value: int, size: int) -> bytes:
    """A big-endian field of `size` bytes padded to the 4-byte register width."""
    return value.to_bytes(size, "big") + b"\0" * (4 - size)


def _field(text: str) -> bytes:
    """One field of a concatenation, from how nftables.py prints it."""
    if text in PROTOCOLS:
        return _word(PROTOCOLS[text], 1)
    if "." in text:
        return _ip(text)
    return _word(int(text), 2)  # a port


def encode_key(key: str) -> bytes:
    """`10.96.0.1 . tcp . 80`, `tcp . 30080`, `10.0.0.1 . 10.0.0.1`."""
    return b"".join(_field(f) for f in key.split(" . "))


def encode_verdict(text: str) -> bytes:
    word, _, chain = text.partition(" ")
    parts = [_attr(NFTA_VERDICT_CODE, struct.pack(">i", VERDICTS[word]))]
    if chain:
        parts.append(_string(NFTA_VERDICT_CHAIN, chain))
    return _nest(NFTA_SET_ELEM_DATA, _nest(NFTA_DATA_VERDICT, *parts))


def _value(kind: int, raw: bytes) -> bytes:
    return _nest(kind, _attr(NFTA_DATA_VALUE, raw))


def _element(key: bytes, data: bytes = b"", flags: int = 0) -> bytes:
    parts = [_value(NFTA_SET_ELEM_KEY, key), data]
    if flags:
        parts.append(_attr(NFTA_SET_ELEM_FLAGS, struct.pack(">I", flags)))
    return _nest(NFTA_LIST_ELEM, *parts)


def elements(key: str, value: str | None) -> list[bytes]:
    """The netlink elements of one element as nftables.py writes it for `nft -f`: a key (an
    interval `lo-hi` in the endpoint-slots maps) and its data (a verdict, `ip . port`, or None
    in a set). For a delete `value` is None: the kernel matches by key (and interval flag)."""
    if "-" in key:  # an interval of an endpoint-slots map (never reaching 2^32 - 1: nft_slots)
        lo, hi = (int(x) for x in key.split("-"))
        data = _value(NFTA_SET_ELEM_DATA, encode_key(value)) if value is not None else b""
        return [_element(lo.to_bytes(4, "big"), data),
                _element((hi + 1).to_bytes(4, "big"), flags=NFT_SET_ELEM_INTERVAL_END)]
    if value is None:
        return [_element(encode_key(key))]
    if value.split(" ", 1)[0] in VERDICTS:
        return [_element(encode_key(key), encode_verdict(value))]
    return [_element(encode_key(key), _value(NFTA_SET_ELEM_DATA, encode_key(value)))]


class ElementBatch:
    """Element changes collected for one transaction, sent in order (so a key deleted then added
    again is replaced)."""

    def __init__(self, family: int, table: str) -> None:
        self.family = family
        self.table = table
        self._ops: list[tuple[int, str, list[bytes]]] = []  # (message type, set, elements)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def _add_op(self, msg: int, set_name: str, elems: list[bytes]) -> None:
        if self._ops and self._ops[-1][:2] == (msg, set_name):
            self._ops[-1][2].extend(elems)
        else:
            self._ops.append((msg, set_name, elems))

    def delete(self, set_name: str, keys: Iterable[str]) -> None:
        elems = [e for k in keys for e in elements(k, None)]
        if elems:
            self._add_op(NFT_MSG_DELSETELEM, set_name, elems)

    def add(self, set_name: str, items: Iterable[tuple[str, str | None]]) -> None:
        elems = [e for k, v in items for e in elements(k, v)]
        if elems:
            self._add_op(NFT_MSG_NEWSETELEM, set_name, elems)

    def messages(self, seq: int) -> list[bytes]:
        out = [_message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq, socket.AF_UNSPEC,
                        NFNL_SUBSYS_NFTABLES, b"")]
        for msg, set_name, elems in self._ops:
            for chunk in _chunks(elems):
                seq += 1
                flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE if msg == NFT_MSG_NEWSETELEM else 0)
                body = (_string(NFTA_SET_ELEM_LIST_TABLE, self.table) + _string(NFTA_SET_ELEM_LIST_SET, set_name)
                        + _nest(NFTA_SET_ELEM_LIST_ELEMENTS, *chunk))
                out.append(_message(NFNL_SUBSYS_NFTABLES << 8 | msg, flags, seq, self.family, 0, body))
        out.append(_message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq + 1, socket.AF_UNSPEC,
                            NFNL_SUBSYS_NFTABLES, b""))
        return out


def _chunks(elems: list[bytes]) -> Iterable[list[bytes]]:
    chunk: list[bytes] = []
    size = 0
    for e in elems:
        if chunk and size + len(e) > MAX_ELEMENTS_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(e)
        size += len(e)
    if chunk:
        yield chunk


def _message(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes) -> bytes:
    nfgen = struct.pack("=BBH", family, 0, socket.htons(res_id))
    return struct.pack("=IHHII", 16 + len(nfgen) + len(body), kind, flags, seq, 0) + nfgen + body


def _netns_id() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


class Transport:
    """One netlink socket, kept open: closing a socket that committed deletions waits for the
    kernel's transaction clean-up (nft_rcv_nl_event flushes the destroy work, an RCU grace
    period: 8-15 ms measured, more than the transaction itself). A socket belongs to the network
    namespace it was opened in, so a thread in another namespace gets a socket of its own."""

    def __init__(self) -> None:
        self._socks: dict[int, socket.socket] = {}
        self._seq = int.from_bytes(os.urandom(3), "big") << 4

    def _socket(self) -> socket.socket:
        ns = _netns_id()
        sock = self._socks.get(ns)
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock.bind((0, 0))
            sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)  # acks without our message echoed
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._socks[ns] = sock
        return sock

    def send(self, batch: ElementBatch) -> None:
        """Apply `batch` as one transaction in the calling thread's network namespace; raise
        NftNetlinkError (nothing applied) if the kernel refuses any of it."""
        if not batch:
            return
        sock = self._socket()
        msgs = batch.messages(self._seq)
        self._seq += len(msgs) + 1
        wanted = len(msgs) - 2  # each element message asks for an ack (or gets an error)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, max(1 << 20, 2 * sum(map(len, msgs))))
        errors: list[str] = []
        acked = 0
        try:
            sock.sendmsg(msgs)
            # the kernel handles the batch inside sendmsg, so every answer is queued by now; a
            # failed commit answers once for the whole batch: stop at the first error
            while acked < wanted and not errors:
                acked += _parse_acks(sock.recv(1 << 20), errors)
        except OSError:
            self.close()  # a socket in an unknown state is not reused
            raise
        if errors:
            self.close()  # drops the answers not read
            raise NftNetlinkError(errno.EINVAL, f"nftables element transaction refused: {'; '.join(errors)}")

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


def _parse_acks(data: bytes, errors: list[str]) -> int:
    acks = 0
    off = 0
    while off + 16 <= len(data):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data, off)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, off + 16)
            acks += 1
            if code:
                errors.append(f"message {seq}: {os.strerror(-code)}")
        off += max((length + 3) & ~3, 16)
    return acks


def apply(transport: Transport, family: int, table: str, deletes: Sequence[tuple[str, str]],
          adds: Sequence[tuple[str, str, str | None]]) -> None:
    """Delete then add elements ((set, key) / (set, key, value)) in one transaction."""
    batch = ElementBatch(family, table)
    for set_name, key in deletes:
        batch.delete(set_name, [key])
    for set_name, key, value in adds:
        batch.add(set_name, [(key, value)])
    transport.send(batch)
