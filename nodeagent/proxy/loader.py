"""Feed a rule loader (`iptables-restore`, `nft -f -`) on stdin while the rules are still being
rendered: the loader parses each chunk as it arrives, so rendering and loading overlap."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable


def stream_to(argv: list[str], text: str | Iterable[str]) -> tuple[int, str]:
    """Run argv with text (one string or an iterable of chunks) on stdin; (exit code, stderr)."""
    chunks = [text] if isinstance(text, str) else text
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errf)
        assert proc.stdin is not None
        try:
            for chunk in chunks:
                proc.stdin.write(chunk.encode())
        except BrokenPipeError:
            pass  # the loader failed early; its exit status and stderr say why
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            rc = proc.wait()
        errf.seek(0)
        return rc, errf.read().decode(errors="replace").strip()
