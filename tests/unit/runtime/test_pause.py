"""The pause program: stays up, exits 0 on SIGTERM and SIGINT, reports its version."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Literal

import pytest

from nodeagent.runtime import images

pytestmark = pytest.mark.skipif(not shutil.which("gcc"), reason="needs gcc (make setup installs it)")


@pytest.fixture(scope="module")
def pause_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("pause")
    data = images.compile_pause(cache)
    path = cache / "pause"
    path.write_bytes(data)
    path.chmod(0o755)
    return path


def test_version(pause_bin: Path) -> None:
    out = subprocess.run([str(pause_bin), "-v"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "nodeagent-pause 1"


def program_header_types(elf: bytes) -> list[int]:
    assert elf[:4] == b"\x7fELF" and elf[4] == 2  # 64-bit
    order: Literal["little", "big"] = "little" if elf[5] == 1 else "big"
    phoff = int.from_bytes(elf[0x20:0x28], order)
    phentsize = int.from_bytes(elf[0x36:0x38], order)
    phnum = int.from_bytes(elf[0x38:0x3A], order)
    return [int.from_bytes(elf[phoff + i * phentsize:phoff + i * phentsize + 4], order) for i in range(phnum)]


def test_is_static(pause_bin: Path) -> None:
    # No PT_INTERP (3) and no PT_DYNAMIC (2): it runs in an image holding nothing but itself.
    types = program_header_types(pause_bin.read_bytes())
    assert types and 3 not in types and 2 not in types


def caught_signals(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exits_zero_on_stop_signals(pause_bin: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen([str(pause_bin)], stderr=subprocess.PIPE)
    try:
        for _ in range(200):  # wait until its handlers are installed
            if caught_signals(proc.pid) & (1 << (sig - 1)):
                break
            time.sleep(0.01)
        assert caught_signals(proc.pid) & (1 << (signal.SIGCHLD - 1))  # the reaper is in place too
        assert proc.poll() is None  # still holding on
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr is not None
        assert b"stopping on signal" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_compiled_once_per_source(pause_bin: Path) -> None:
    cache = pause_bin.parent
    before = sorted(p for p in (cache / "pause-bin").rglob("pause"))
    assert images.compile_pause(cache) == pause_bin.read_bytes()
    assert sorted(p for p in (cache / "pause-bin").rglob("pause")) == before
