"""The plugin doing the work itself, in this process: what the shim falls back to when no daemon
answers on the thick-plugin socket (`python -m nodeagent.cni.main`, env + stdin as CNI gives them)."""

from __future__ import annotations

import logging
import os
import sys


def run_standalone(env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    from nodeagent.cni.dispatcher import dispatch
    from nodeagent.cni.plugin import BridgePlugin

    plugin = BridgePlugin()
    try:
        return dispatch(env, stdin, plugin)
    finally:
        plugin.close()


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="nodeagent-bridge %(levelname)s %(message)s")
    code, out = run_standalone(dict(os.environ), sys.stdin.buffer.read())
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
