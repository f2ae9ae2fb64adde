"""Following a CRI log file: new lines stream out until the container stops."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nodeagent.kubelet.logs import LogOptions, log_files, read_logs
from tests.helpers.kubelet_env import wait_for


class _Follower:
    """`read_logs(follow=True)` on a task, collecting chunks, until `running` turns False (the
    container stopped)."""

    def __init__(self, log: Path) -> None:
        self.running = True
        self.got: list[bytes] = []
        self.task = asyncio.create_task(self._consume(log))

    async def _still_running(self) -> bool:
        return self.running

    async def _consume(self, log: Path) -> None:
        async for chunk in read_logs(str(log), LogOptions(follow=True), self._still_running, poll=0.01):
            self.got.append(chunk)


def _append(path: Path, text: bytes) -> None:
    with open(path, "ab") as f:
        f.write(text)


async def test_follow_streams_until_container_stops(tmp_path: Path) -> None:
    log = tmp_path / "c" / "0.log"
    log.parent.mkdir()
    _append(log, b"2026-01-01T00:00:00Z stdout F first\n")
    f = _Follower(log)
    got, task = f.got, f.task
    await wait_for(lambda: b"".join(got) == b"first\n", what="first line")
    _append(log, b"2026-01-01T00:00:01Z stderr P par\n")
    _append(log, b"2026-01-01T00:00:01Z stderr F tial\n")
    await wait_for(lambda: b"".join(got) == b"first\npartial\n", what="joined partial line")
    assert not task.done()
    _append(log, b"2026-01-01T00:00:02Z stdout F last\n")
    f.running = False
    await asyncio.wait_for(task, 5)
    assert b"".join(got) == b"first\npartial\nlast\n"


async def test_limit_bytes_and_since(tmp_path: Path) -> None:
    log = tmp_path / "0.log"
    _append(log, b"2000-01-01T00:00:00Z stdout F old\n2099-01-01T00:00:00.5Z stdout F new\n")
    out = b"".join([c async for c in read_logs(str(log), LogOptions(since_seconds=60))])
    assert out == b"new\n"
    out = b"".join([c async for c in read_logs(str(log), LogOptions(limit_bytes=5))])
    assert out == b"old\nn"


def test_log_files_newest_first(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    for n in ("0.log", "2.log", "1.log", "x.log", "3.log.tmp"):
        (d / n).write_text("")
    assert [a for a, _ in log_files(str(tmp_path), "c")] == [2, 1, 0]


def test_rotation_keeps_max_files(tmp_path: Path) -> None:
    from nodeagent.kubelet.logs import rotate_if_needed

    log = tmp_path / "0.log"
    log.write_bytes(b"x" * 10)
    assert not rotate_if_needed(str(log), 100, 3, 1000.0)
    for i in range(4):
        log.write_bytes(b"x" * 200)
        assert rotate_if_needed(str(log), 100, 3, 1000.0 + i)
        assert not log.exists()
    rotated = sorted(p.name for p in tmp_path.iterdir())
    assert len(rotated) == 2 and all(n.startswith("0.log.") for n in rotated)  # + the live file = 3
    assert rotated == ["0.log.19700101-001642.000000", "0.log.19700101-001643.000000"]  # the newest two


async def test_follow_continues_across_rotation(tmp_path: Path) -> None:
    from nodeagent.kubelet.logs import rotate_if_needed

    log = tmp_path / "0.log"
    _append(log, b"2026-01-01T00:00:00Z stdout F before\n")
    f = _Follower(log)
    got, task = f.got, f.task
    await wait_for(lambda: b"".join(got) == b"before\n", what="first line")
    assert rotate_if_needed(str(log), 1, 5, 0.0)
    await asyncio.sleep(0.05)  # the window before the runtime reopens the file
    _append(log, b"2026-01-01T00:00:01Z stdout F after\n")  # the runtime's new file
    await wait_for(lambda: b"".join(got) == b"before\nafter\n", what="line from the new file")
    f.running = False
    await asyncio.wait_for(task, 5)
