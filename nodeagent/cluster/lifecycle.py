"""`nodeagent cluster up|down|status`: a local multi-node cluster made of network namespaces."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from nodeagent.cluster import addons, cleanup, components, procs, underlay
from nodeagent.cluster.components import Component, Options
from nodeagent.cluster.forwarder import free_loopback_port
from nodeagent.cluster.kube import Kubectl, KubectlError, node_ready
from nodeagent.cluster.topology import API_PORT, BASE_DIR, CONTROL_PLANE_IP, ClusterPlan, Member
from nodeagent.mountinfo import read_mountinfo

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    pass


@dataclass
class ClusterState:
    """cluster.json: what `down`, `status` and `kubeconfig` need to find a running cluster."""

    name: str
    nodes: int
    api_port: int
    base_dir: str
    created: float

    @property
    def plan(self) -> ClusterPlan:
        return ClusterPlan(self.name, self.nodes, Path(self.base_dir))

    def save(self) -> None:
        p = self.plan.state_file
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, name: str, base_dir: Path = BASE_DIR) -> ClusterState | None:
        try:
            data = json.loads((base_dir / name / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(**data)


class Progress:
    """One line per step on the terminal: what is being done, then how long it took."""

    def __init__(self, out: TextIO = sys.stdout, total: int = 0) -> None:
        self.out, self.total, self.n = out, total, 0
        self.open_line = False  # a step's "..." waits for its result on the same line

    def step(self, text: str) -> Callable[..., None]:
        self.n += 1
        start = time.monotonic()
        prefix = f"[{self.n}/{self.total}] " if self.total else "- "
        self.out.write(f"{prefix}{text} ...")
        self.out.flush()
        self.open_line = True

        def done(result: str = "ok") -> None:
            took = f"{result} ({time.monotonic() - start:.1f}s)\n"
            self.out.write(f" {took}" if self.open_line else f"      {took}")
            self.out.flush()
            self.open_line = False

        return done

    def note(self, text: str) -> None:
        self.out.write(f"{chr(10) if self.open_line else ''}      {text}\n")
        self.out.flush()
        self.open_line = False


def _nodeagent(*args: str, netns: str | None = None) -> None:
    argv = procs.component_argv(netns, list(args))
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise ClusterError(f"`nodeagent {' '.join(args)}` failed ({p.returncode}): {p.stderr.strip()[-2000:]}")


def write_control_plane_credentials(plan: ClusterPlan, data: str) -> None:
    """Client certificates for the controller manager and the scheduler; a token of the kube-dns
    service account (a year long: the DNS server is a host process here, not a pod whose kubelet
    would refresh it) for the DNS server."""
    import yaml

    server = plan.api_url_internal
    for component, user in (("controller-manager", components.CONTROLLER_MANAGER_USER),
                            ("scheduler", components.SCHEDULER_USER)):
        _nodeagent("kubeconfig", "--data-dir", data, "--server", server, "--user", user,
                   "-o", str(components.control_plane_kubeconfig(plan, component)))
    ns, sa = components.DNS_SERVICE_ACCOUNT
    kubectl = Kubectl(plan.kubeconfig)
    if kubectl.run("get", "serviceaccount", "-n", ns, sa, check=False).returncode != 0:
        kubectl.run("create", "serviceaccount", "-n", ns, sa)
    token = kubectl.run("create", "token", "-n", ns, sa, "--duration", "8760h").stdout.strip()
    doc = yaml.safe_load(plan.internal_kubeconfig.read_text())
    doc["users"] = [{"name": f"{ns}:{sa}", "user": {"token": token}}]
    doc["contexts"][0]["context"]["user"] = f"{ns}:{sa}"
    out = components.control_plane_kubeconfig(plan, "dns")
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(doc, f, default_flow_style=False, sort_keys=False)


def write_node_credentials(plan: ClusterPlan, m: Member, data: str) -> None:
    """One identity per node process: the kubelet's token (system:node:NAME) and serving certificate,
    kube-proxy's, the CNI daemon's, the ingress controller's and the speaker's client certificates."""
    from nodeagent.api.pki import PkiPaths, issue_key_pair

    server = plan.api_url_internal
    _nodeagent("kubeconfig", "--data-dir", data, "--server", server, "--user", "node", m.name,
               "-o", str(components.node_kubeconfig(plan, m)))
    _nodeagent("kubeconfig", "--data-dir", data, "--server", server, "--user", components.PROXY_USER,
               "-o", str(components.proxy_kubeconfig(m)))
    _nodeagent("kubeconfig", "--data-dir", data, "--server", server, "--user", components.CNI_USER,
               "-o", str(components.cni_kubeconfig(m)))
    _nodeagent("kubeconfig", "--data-dir", data, "--server", server, "--user", components.INGRESS_USER,
               "-o", str(components.ingress_kubeconfig(m)))
    _nodeagent("kubeconfig", "--data-dir", data, "--server", server, "--user", components.SPEAKER_USER,
               "-o", str(components.speaker_kubeconfig(m)))
    crt, key = components.kubelet_serving_cert(m)
    issue_key_pair(PkiPaths(Path(data) / "pki"), crt, key, f"system:node:{m.name}", ("system:nodes",),
                   server=True, dns=(m.name,), ips=(m.ip,))


def _start(plan: ClusterPlan, comp: Component) -> procs.PidRecord:
    return procs.spawn(procs.component_argv(comp.member.netns, comp.args), comp.log_file(plan), comp.pid_file(plan))


def _check_alive(plan: ClusterPlan, comps: list[Component]) -> None:
    for c in comps:
        rec = procs.read_pid_file(c.pid_file(plan))
        if rec is None or not procs.alive(rec):
            tail = _tail(c.log_file(plan))
            raise ClusterError(f"{c.id} exited; last lines of {c.log_file(plan)}:\n{tail}")


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_apiserver(plan: ClusterPlan, port: int, comps: list[Component], timeout: float = 60.0) -> None:
    ca = components.apiserver_data_dir(plan) / "pki" / "ca.crt"
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        _check_alive(plan, comps)
        if ca.exists():
            try:
                ctx = ssl.create_default_context(cafile=str(ca))
                with urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", context=ctx, timeout=3) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                last = e
        time.sleep(0.2)
    raise ClusterError(f"apiserver of cluster {plan.name!r} not ready after {timeout:.0f}s ({last}); "
                       f"see {plan.log_dir}/cp-apiserver.log")


def wait_nodes(plan: ClusterPlan, kubectl: Kubectl, comps: list[Component], progress: Progress,
               timeout: float) -> list[dict[str, Any]]:
    """Wait until every node is registered, Ready and has a podCIDR; keep the cp's routes to the
    pod CIDRs (host-gw via each node) in step as they appear."""
    want = {m.name: m for m in plan.node_members}
    deadline = time.monotonic() + timeout
    routed: dict[str, str] = {}
    shown = ""
    while True:
        _check_alive(plan, comps)
        try:
            nodes = [n for n in kubectl.items("/api/v1/nodes") if n["metadata"]["name"] in want]
        except KubectlError:
            nodes = []
        routes = {n["spec"]["podCIDR"]: want[n["metadata"]["name"]].ip
                  for n in nodes if (n.get("spec") or {}).get("podCIDR")}
        if routes != routed:
            underlay.add_pod_cidr_routes(plan.control_plane.netns, routes)
            routed = routes
        ready = [n for n in nodes if node_ready(n)]
        line = f"registered {len(nodes)}/{len(want)}, Ready {len(ready)}/{len(want)}, podCIDR {len(routes)}/{len(want)}"
        if line != shown:
            progress.note(line)
            shown = line
        if len(ready) == len(want) and len(routes) == len(want):
            return nodes
        if time.monotonic() > deadline:
            raise ClusterError(f"cluster {plan.name!r}: nodes not Ready after {timeout:.0f}s ({line}); "
                               f"see the logs in {plan.log_dir}")
        time.sleep(0.5)


def up(name: str, nodes: int, opts: Options, out: TextIO = sys.stdout, base_dir: Path = BASE_DIR,
       build_images: bool = True, timeout: float = 240.0) -> ClusterState:
    plan = ClusterPlan(name, nodes, base_dir)
    if plan.state_file.exists():
        raise ClusterError(f"cluster {name!r} already exists ({plan.dir}); "
                           f"`nodeagent cluster down --name {name}` removes it")
    progress = Progress(out, total=8 if build_images else 7)
    state = ClusterState(name, nodes, free_loopback_port(), str(base_dir), time.time())
    try:
        if build_images:
            done = progress.step("building images (nodeagent images build)")
            _nodeagent("images", "build")
            done()
        done = progress.step(f"creating namespaces {', '.join(plan.netns_names)} on switch {plan.switch_netns}/br0")
        for d in (plan.run_dir, plan.log_dir, *(m.data_dir for m in plan.members)):
            d.mkdir(parents=True, exist_ok=True)
        state.save()
        underlay.create(plan)
        done()

        done = progress.step(f"starting apiserver in {plan.control_plane.netns} ({CONTROL_PLANE_IP}:{API_PORT}), "
                             f"forwarded to 127.0.0.1:{state.api_port}")
        fwd = forwarder_component(plan, state.api_port)
        procs.spawn(fwd[1], plan.log_dir / "host-forwarder.log", plan.run_dir / "host-forwarder.pid")
        api = components.apiserver(plan, opts)
        _start(plan, api)
        wait_apiserver(plan, state.api_port, [api])
        done()

        done = progress.step("writing kubeconfigs (admin, one per node)")
        data = str(components.apiserver_data_dir(plan))
        _nodeagent("kubeconfig", "--data-dir", data, "--server", f"https://127.0.0.1:{state.api_port}",
                   "--user", "admin", "-o", str(plan.kubeconfig))
        _nodeagent("kubeconfig", "--data-dir", data, "--server", plan.api_url_internal,
                   "--user", "admin", "-o", str(plan.internal_kubeconfig))
        for m in plan.node_members:
            write_node_credentials(plan, m, data)
        write_control_plane_credentials(plan, data)
        done()

        cp = components.control_plane(plan, opts)
        done = progress.step("starting controllers and dns in " + plan.control_plane.netns)
        for c in cp:
            _start(plan, c)
        done()

        node_comps = [c for m in plan.node_members for c in components.node(plan, m, opts)]
        done = progress.step(f"starting {nodes} node(s): cni-daemon, kubelet (+ containerd), proxy, ingress, speaker")
        for c in node_comps:
            _start(plan, c)
        done()

        done = progress.step("waiting for nodes to be Ready")
        wait_nodes(plan, Kubectl(plan.kubeconfig), [api, *cp, *node_comps], progress, timeout)
        done()

        done = progress.step(f"creating the default IngressClass {addons.INGRESS_CLASS!r}")
        Kubectl(plan.kubeconfig).apply(addons.INGRESS_CLASS_MANIFEST)
        done()
    except BaseException:
        out.write(f"\ncluster {name!r} failed to start; logs are in {plan.log_dir}. "
                  f"Remove it with `nodeagent cluster down --name {name}"
                  f"{'' if base_dir == BASE_DIR else ' --base-dir ' + str(base_dir)}`.\n")
        raise
    return state


def forwarder_component(plan: ClusterPlan, port: int) -> tuple[str, list[str]]:
    return "forwarder", procs.component_argv(None, [
        "cluster", "forward", "--netns", plan.control_plane.netns, "--port", str(port),
        "--target", f"{CONTROL_PLANE_IP}:{API_PORT}",
    ])


def _pid_files(plan: ClusterPlan) -> list[Path]:
    """Nodes first (kubelets stop before the apiserver they report to), the forwarder last."""
    files = sorted(plan.run_dir.glob("*.pid")) if plan.run_dir.exists() else []
    return sorted(files, key=_stop_order)


def _stop_order(p: Path) -> int:
    if p.name.startswith("host-"):
        return 3
    if p.name.startswith("cp-apiserver"):
        return 2
    if p.name.startswith("cp-"):
        return 1
    return 0


def down(name: str, base_dir: Path = BASE_DIR, out: TextIO = sys.stdout) -> bool:
    """Remove everything of cluster `name`; true when nothing is left."""
    state = ClusterState.load(name, base_dir)
    plan = state.plan if state else _plan_from_disk(name, base_dir)
    progress = Progress(out)
    netns_inodes = {i for n in plan.netns_names if (i := procs.netns_inode(f"/var/run/netns/{n}")) is not None}

    done = progress.step(f"stopping the processes of cluster {name!r}")
    # 1. our components, by pid file, in groups (nodes, control plane, apiserver, forwarder)
    groups: dict[int, set[int]] = {}
    for p in _pid_files(plan):
        rec = procs.read_pid_file(p)
        if rec and procs.alive(rec):
            groups.setdefault(_stop_order(p), set()).add(rec.pid)
    # 2. everything else in the cluster's namespaces (containerd, shims) and their children
    #    (containers, in pod namespaces); snapshot them first to find their mounts and cgroups
    recorded = set().union(*groups.values()) if groups else set()
    everything = procs.process_tree(procs.pids_in_netns(netns_inodes) | recorded)
    snap = cleanup.snapshot(everything, netns_inodes)
    keep_cgroups = cleanup.cgroups_in_use(everything)
    for order in sorted(groups):
        procs.terminate(groups[order], grace=10)
    rest = procs.process_tree(procs.pids_in_netns(netns_inodes)) | (everything - recorded)
    # containers are pid 1 of their pid namespace and ignore SIGTERM without a handler; their pods
    # go away with the cluster, so they get SIGKILL at once (containerd and shims get SIGTERM)
    in_cluster = procs.pids_in_netns(netns_inodes)
    procs.signal_all(rest - in_cluster, signal.SIGKILL)
    left = procs.terminate(rest, grace=3)
    done("ok" if not left else f"{len(left)} left: {sorted(left)}")

    done = progress.step("unmounting and removing namespaces, cgroups and files")
    cleanup.remove_netns_mounts(cleanup.netns_mounts_with_inodes(snap.pod_netns_inodes))
    cleanup.unmount_under(plan.dir)
    failed = underlay.destroy(plan.netns_names)
    cleanup.remove_cgroups(snap.cgroups, keep_cgroups)
    leftover_mounts = cleanup.mounts_under(plan.dir, read_mountinfo())
    if not leftover_mounts:
        shutil.rmtree(plan.dir, ignore_errors=True)
    done("ok" if not (failed or leftover_mounts or left) else
         f"left: netns={failed} mounts={leftover_mounts} pids={sorted(left)}")
    return not (failed or leftover_mounts or left)


def _plan_from_disk(name: str, base_dir: Path) -> ClusterPlan:
    """A plan covering whatever of cluster `name` exists when cluster.json is gone."""
    n = 0
    for entry in os.listdir(underlay.NETNS_RUN_DIR) if os.path.isdir(underlay.NETNS_RUN_DIR) else []:
        prefix = f"na-{name}-n"
        if entry.startswith(prefix) and entry[len(prefix):].isdigit():
            n = max(n, int(entry[len(prefix):]))
    d = base_dir / name
    if d.is_dir():
        for sub in d.iterdir():
            prefix = f"{name}-n"
            if sub.name.startswith(prefix) and sub.name[len(prefix):].isdigit():
                n = max(n, int(sub.name[len(prefix):]))
    return ClusterPlan(name, max(n, 1), base_dir)


def list_clusters(base_dir: Path = BASE_DIR) -> list[str]:
    names = set()
    if base_dir.is_dir():
        names |= {p.name for p in base_dir.iterdir() if p.is_dir()}
    if os.path.isdir(underlay.NETNS_RUN_DIR):
        for entry in os.listdir(underlay.NETNS_RUN_DIR):
            if entry.startswith("na-") and entry.endswith("-sw"):
                names.add(entry[3:-3])
    return sorted(names)


def status(name: str, base_dir: Path = BASE_DIR, out: TextIO = sys.stdout) -> int:
    state = ClusterState.load(name, base_dir)
    if state is None:
        out.write(f"cluster {name!r}: not found (no {base_dir / name / 'cluster.json'})\n")
        return 1
    plan = state.plan
    out.write(f"cluster {name}: {state.nodes} node(s), apiserver https://127.0.0.1:{state.api_port}, "
              f"kubeconfig {plan.kubeconfig}\n")
    bad = 0
    for p in sorted(plan.run_dir.glob("*.pid")):
        rec = procs.read_pid_file(p)
        ok = rec is not None and procs.alive(rec)
        bad += not ok
        out.write(f"  {p.stem:28} {'running pid ' + str(rec.pid) if ok and rec else 'NOT RUNNING'}\n")
    for n in plan.netns_names:
        ok = underlay.netns_exists(n)
        bad += not ok
        out.write(f"  netns {n:22} {'present' if ok else 'MISSING'}\n")
    try:
        for node in Kubectl(plan.kubeconfig, timeout=10).items("/api/v1/nodes"):
            out.write(f"  node {node['metadata']['name']:23} {'Ready' if node_ready(node) else 'NotReady'} "
                      f"podCIDR={(node.get('spec') or {}).get('podCIDR', '-')}\n")
    except KubectlError as e:
        bad += 1
        out.write(f"  apiserver unreachable: {e}\n")
    return 1 if bad else 0


def stop_component(plan: ClusterPlan, component_id: str) -> None:
    """Stop one component (e2e: a node's kubelet) by its pid file."""
    rec = procs.read_pid_file(plan.run_dir / f"{component_id}.pid")
    if rec is None or not procs.alive(rec):
        raise ClusterError(f"{component_id} of cluster {plan.name!r} is not running")
    os.kill(rec.pid, signal.SIGTERM)
    procs.terminate({rec.pid}, grace=10)
