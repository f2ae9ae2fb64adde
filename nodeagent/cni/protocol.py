"""The shim <-> daemon wire format on the thick-plugin unix socket.

One connection per plugin call. Request: the magic line, then each CNI_* variable as KEY=VALUE
followed by a NUL, an empty entry (a lone NUL) ending the list, then stdin up to the shim's
shutdown(SHUT_WR). Reply: the exit code in decimal and a newline, then the plugin's stdout up to
EOF. Simple enough for the C shim to speak without a JSON parser.
"""

from __future__ import annotations

MAGIC = b"NACNI1\n"


def encode_request(env: dict[str, str], stdin: bytes) -> bytes:
    parts = [MAGIC]
    for k, v in env.items():
        if k.startswith("CNI_"):
            parts.append(f"{k}={v}".encode() + b"\0")
    parts.append(b"\0")
    parts.append(stdin)
    return b"".join(parts)


def decode_request(data: bytes) -> tuple[dict[str, str], bytes]:
    if not data.startswith(MAGIC):
        raise ValueError("not a nodeagent CNI request (bad magic)")
    pos = len(MAGIC)
    env: dict[str, str] = {}
    while True:
        end = data.index(b"\0", pos)
        if end == pos:
            return env, data[end + 1 :]
        key, _, value = data[pos:end].decode().partition("=")
        env[key] = value
        pos = end + 1


def encode_reply(code: int, stdout: bytes) -> bytes:
    return f"{code}\n".encode() + stdout


def decode_reply(data: bytes) -> tuple[int, bytes]:
    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise ValueError("truncated reply from the CNI daemon")
    return int(head), rest
