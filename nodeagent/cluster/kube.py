"""kubectl, as the operator would run it, for the cluster commands, the demo and the e2e tests.

The cluster commands are front ends for people: they talk to the cluster exactly as a user does,
with /usr/bin/kubectl and the generated kubeconfig, so every step they take can be copied by hand.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class KubectlError(RuntimeError):
    pass


class Kubectl:
    def __init__(self, kubeconfig: Path | str, binary: str | None = None, timeout: float = 30.0) -> None:
        self.kubeconfig = str(kubeconfig)
        self.binary = binary or shutil.which("kubectl") or "/usr/bin/kubectl"
        self.timeout = timeout

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--kubeconfig", self.kubeconfig, *args]

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        try:
            p = subprocess.run(self.argv(*args), input=input, capture_output=True, text=True,
                               timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired as e:
            raise KubectlError(f"`kubectl {' '.join(args)}` timed out after {e.timeout}s") from e
        except FileNotFoundError as e:
            raise KubectlError(f"kubectl not found at {self.binary}; install kubectl 1.32 "
                               "(https://kubernetes.io/docs/tasks/tools/)") from e
        if check and p.returncode != 0:
            raise KubectlError(f"`kubectl {' '.join(args)}` failed ({p.returncode}): {p.stderr.strip()}")
        return p

    def raw(self, path: str) -> dict[str, Any]:
        """GET an API path (no discovery involved)."""
        out: dict[str, Any] = json.loads(self.run("get", "--raw", path).stdout)
        return out

    def items(self, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.raw(path).get("items") or []
        return items

    def apply(self, manifest: str) -> str:
        return self.run("apply", "--validate=false", "-f", "-", input=manifest).stdout

    def get_json(self, args: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.run("get", *args, "-o", "json").stdout)
        return out


def condition(obj: dict[str, Any], ctype: str) -> str | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return str(c.get("status"))
    return None


def node_ready(node: dict[str, Any]) -> bool:
    return condition(node, "Ready") == "True"


def pod_ready(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and condition(pod, "Ready") == "True"
