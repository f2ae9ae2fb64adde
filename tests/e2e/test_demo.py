"""`nodeagent demo --down`, the README's first command, end to end (root)."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

import pytest

from nodeagent.cluster.topology import BASE_DIR

pytestmark = [pytest.mark.root, pytest.mark.e2e, pytest.mark.timeout(420)]


def test_demo_spreads_300_requests_over_3_pods_and_cleans_up() -> None:
    name = f"demo{secrets.token_hex(2)}"
    try:
        p = subprocess.run([sys.executable, "-m", "nodeagent", "demo", "--name", name, "--down"],
                           capture_output=True, text=True, timeout=400)
    finally:
        subprocess.run([sys.executable, "-m", "nodeagent", "cluster", "down", "--name", name],
                       capture_output=True, timeout=180)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    out = p.stdout
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^  (web-\S+)\s+(\d+)\s+[\d.]+%", out, re.M)}
    assert len(counts) == 3 and sum(counts.values()) == 300 and min(counts.values()) > 0, out
    assert "300 answered, 0 failed" in out
    p_value = float(re.search(r"p-value = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    assert 0 <= p_value <= 1
    # the pods ran on both nodes, the client on one of them
    nodes = set(re.findall(rf"on ({name}-n\d)$", out, re.M))
    assert nodes == {f"{name}-n1", f"{name}-n2"}, out
    # the Service's rules with one DNAT per backend, and the NodePort answered from the underlay
    assert len(re.findall(r"-j DNAT --to-destination 10\.244\.\d+\.\d+:8080", out)) == 3, out
    assert re.search(r"NodePort from the underlay .* -> web-\S+$", out, re.M), out
    # --down removed it
    assert f"removing cluster '{name}'" in out and not (BASE_DIR / name).exists()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"na-{name}-" not in netns
