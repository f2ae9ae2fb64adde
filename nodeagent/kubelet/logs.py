"""Read container logs in the CRI log format (upstream pkg/kubelet/kuberuntime/logs/logs.go).

Each line the runtime writes is `<RFC3339Nano timestamp> <stream> <tag> <content>`, where stream is
stdout or stderr and tag is F (a full line) or P (a partial line to be joined with the next).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class LogLine:
    timestamp: str
    stream: str
    partial: bool
    content: bytes


def parse_cri_line(raw: bytes) -> LogLine | None:
    """One line of a CRI log file (without its trailing newline); None if malformed."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3:
        return None
    ts, stream, tag = parts[0], parts[1], parts[2]
    content = parts[3] if len(parts) == 4 else b""
    if stream not in (b"stdout", b"stderr"):
        return None
    return LogLine(ts.decode(), stream.decode(), tag.split(b":")[0] == b"P", content)


def _parse_ts(ts: str) -> float:
    # RFC3339Nano: trim to microseconds for datetime
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", ts)
    if not m:
        return 0.0
    frac = (m.group(2) or ".0")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(m.group(1) + frac + tz).timestamp()


@dataclass
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    timestamps: bool = False
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: float | None = None


def render(line: LogLine, timestamps: bool) -> bytes:
    out = line.content if line.partial else line.content + b"\n"
    if timestamps:
        out = line.timestamp.encode() + b" " + out
    return out


def _tail_start(data: bytes, n: int) -> int:
    """Offset of the start of the last n full (F) lines of data."""
    if n <= 0:
        return len(data)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    count = 0
    offset = sum(len(line) + 1 for line in lines)
    for line in reversed(lines):
        parsed = parse_cri_line(line)
        if parsed is not None and not parsed.partial:
            if count == n:
                break
            count += 1
        offset -= len(line) + 1
    return max(offset, 0)


async def read_logs(path: str, opts: LogOptions,
                    still_running: Callable[[], Awaitable[bool]] | None = None,
                    poll: float = 0.2) -> AsyncIterator[bytes]:
    """Yield rendered log chunks from a CRI log file; with follow, keep reading until the
    container stops (still_running() is False) and the file has no more data."""
    since = opts.since_time
    if since is None and opts.since_seconds:
        since = datetime.datetime.now(datetime.UTC).timestamp() - opts.since_seconds
    sent = 0

    def budget(chunk: bytes) -> bytes | None:
        nonlocal sent
        if opts.limit_bytes is None:
            return chunk
        left = opts.limit_bytes - sent
        if left <= 0:
            return None
        chunk = chunk[:left]
        sent += len(chunk)
        return chunk

    f = open(path, "rb")  # noqa: ASYNC230, SIM115 - local file, small reads; reopened on rotation
    try:
        data = f.read()
        start = _tail_start(data, opts.tail_lines) if opts.tail_lines is not None else 0
        pending = data[start:]
        while True:
            *complete, pending = pending.split(b"\n")
            out = []
            for raw in complete:
                line = parse_cri_line(raw)
                if line is None:
                    continue
                if since is not None and _parse_ts(line.timestamp) < since:
                    continue
                out.append(render(line, opts.timestamps))
            if out:
                chunk = budget(b"".join(out))
                if chunk is None:
                    return
                if chunk:
                    yield chunk
                if opts.limit_bytes is not None and sent >= opts.limit_bytes:
                    return
            if not opts.follow:
                return
            more = f.read()
            if more:
                pending += more
                continue
            if _rotated(path, f):
                # The kubelet rotated the file (rotate_if_needed): the runtime writes to a new one.
                try:
                    nf = open(path, "rb")  # noqa: ASYNC230, SIM115
                except FileNotFoundError:  # renamed, not yet reopened by the runtime
                    if still_running is not None and not await still_running():
                        return
                    await asyncio.sleep(poll)
                    continue
                f.close()
                f = nf
                continue
            if still_running is not None and not await still_running():
                more = f.read()
                if not more:
                    return
                pending += more
                continue
            await asyncio.sleep(poll)
            pending += f.read()
    finally:
        f.close()


def _rotated(path: str, f: Any) -> bool:
    try:
        return os.stat(path).st_ino != os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return True


def log_files(log_dir: str, container: str) -> list[tuple[int, str]]:
    """(attempt, path) of a container's log files under the pod's log directory, newest first."""
    d = os.path.join(log_dir, container)
    out = []
    try:
        names = os.listdir(d)
    except OSError:
        return []
    for n in names:
        stem, _, ext = n.partition(".")
        if ext == "log" and stem.isdigit():
            out.append((int(stem), os.path.join(d, n)))
    return sorted(out, reverse=True)


def rotate_if_needed(path: str, max_bytes: int, max_files: int, now: float) -> bool:
    """Rotate a container's log file past max_bytes: rename it to <path>.<timestamp> and keep at
    most max_files files in all (upstream's container log manager, containerLogMaxSize 10Mi and
    containerLogMaxFiles 5). The caller then asks the runtime to reopen the log."""
    try:
        size = os.path.getsize(path)
    except OSError:
        return False
    if size <= max_bytes:
        return False
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y%m%d-%H%M%S.%f")
    os.rename(path, f"{path}.{stamp}")
    d, base = os.path.split(path)
    rotated = sorted(n for n in os.listdir(d) if n.startswith(base + "."))
    for old in rotated[: max(0, len(rotated) - (max_files - 1))]:
        try:
            os.unlink(os.path.join(d, old))
        except OSError:
            pass
    return True
