"""/proc/self/mountinfo, parsed once for everyone who unmounts what they made (the managed
containerd's clean-up and `cluster down`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MountEntry:
    mount_point: str
    fstype: str
    super_options: str = ""


def _unescape(field_: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo."""
    out, i = [], 0
    while i < len(field_):
        if field_[i] == "\\" and len(field_[i + 1:i + 4]) == 3 and field_[i + 1:i + 4].isdigit():
            out.append(chr(int(field_[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field_[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 10 or "-" not in parts:
            continue
        sep = parts.index("-")
        entries.append(MountEntry(_unescape(parts[4]), parts[sep + 1], parts[sep + 3] if len(parts) > sep + 3 else ""))
    return entries


def read_mountinfo() -> list[MountEntry]:
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text())
