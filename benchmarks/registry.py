"""CPU per write in the apiserver's registry (no HTTP): create, patch, delete of pods on a SqliteStore,
a list of them, and a create fanned out to 100 watchers; with --peer DIR the same figures for the
checkout in DIR (e.g. the main branch), rounds alternating, so a restructure of the object rules
is compared with what it replaced on the same machine at the same time.

CPU time (time.process_time, every thread of the process) rather than wall time: it does not
count the waits for a CPU that other work on a shared machine causes.

    .venv/bin/python benchmarks/registry.py [--pods 3000] [--rounds 3] [--peer /work/main]

Last line: one JSON object with the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def _pod(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"p{i}", "labels": {"app": "bench"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "nodeagent.local/toolbox:1",
                                                      "ports": [{"containerPort": 80}],
                                                      "env": [{"name": "A", "value": "1"}]}]}}


async def _measure(n: int) -> dict[str, float]:
    """One round in this process, with whatever nodeagent is first on sys.path."""
    from nodeagent.api.registry import DeleteOptions, ListOptions, Registry
    from nodeagent.api.sqlite_store import SqliteStore
    from nodeagent.machinery import kinds

    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        store = SqliteStore(Path(d) / "state.db", compact_interval=0)
        await store.start()
        reg = Registry(store)
        await reg.start()
        t0 = time.process_time()
        for i in range(n):
            await reg.create(kinds.PODS, "default", _pod(i))
        t1 = time.process_time()
        for i in range(n):
            await reg.patch(kinds.PODS, "default", f"p{i}", "merge", {"metadata": {"labels": {"x": "y"}}})
        t2 = time.process_time()
        for _ in range(20):
            await reg.list(kinds.PODS, "default", ListOptions())
        t3 = time.process_time()
        for i in range(n):
            await reg.delete(kinds.PODS, "default", f"p{i}", DeleteOptions(grace_period_seconds=0))
        t4 = time.process_time()
        delivered = [0]

        def sink(batch: list[Any]) -> bool:
            delivered[0] += len(batch)
            return True

        sessions = []
        for _ in range(100):
            s = await reg.watch(kinds.PODS, "default", ListOptions(resource_version=str(store.revision)))
            s.attach(sink)
            sessions.append(s)
        t5 = time.process_time()
        for i in range(n):
            await reg.create(kinds.PODS, "default", _pod(n + i))
        for _ in range(50):
            await asyncio.sleep(0)
        t6 = time.process_time()
        for s in sessions:
            s.close()
        await reg.close()
        await store.close()
    out["create_us"] = (t1 - t0) / n * 1e6
    out["patch_us"] = (t2 - t1) / n * 1e6
    out["list_ms"] = (t3 - t2) / 20 * 1e3
    out["delete_us"] = (t4 - t3) / n * 1e6
    out["create_100_watchers_us"] = (t6 - t5) / n * 1e6
    assert delivered[0] == 100 * n, delivered[0]
    return out


def _round(repo: Path, n: int) -> dict[str, float]:
    """One round in a fresh interpreter of `repo`'s venv, importing `repo`'s nodeagent."""
    python = repo / ".venv" / "bin" / "python"
    code = (f"import sys, asyncio, json; sys.path.insert(0, {str(repo)!r}); sys.path.insert(1, {str(HERE)!r});"
            f"from benchmarks.registry import _measure; print(json.dumps(asyncio.run(_measure({n}))))")
    res = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, cwd="/")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peer", type=Path, help="another checkout (with its .venv) to compare with")
    args = ap.parse_args()
    repos = {"ours": HERE}
    if args.peer:
        repos["peer"] = args.peer.resolve()
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in repos}
    for _ in range(args.rounds):
        for name, repo in repos.items():
            rounds[name].append(_round(repo, args.pods))
    medians = {name: {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]} for name, rs in rounds.items()}
    for k in medians["ours"]:
        line = f"{k:>24}: ours {medians['ours'][k]:9.2f}"
        if "peer" in medians:
            line += f"   peer {medians['peer'][k]:9.2f}   ratio {medians['ours'][k] / medians['peer'][k]:.2f}"
        print(line)
    print(json.dumps({"pods": args.pods, "rounds": args.rounds, **{n: m for n, m in medians.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
