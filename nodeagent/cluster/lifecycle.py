"""`nodeagent cluster up|down|status`: a local multi-node cluster made of network namespaces."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import select
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
from nodeagent.cluster.topology import API_PORT, BASE_DIR, CONTROL_PLANE_IP, SERVICE_CIDR, ClusterPlan
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


class NodeWatch:
    """`kubectl get --raw '/api/v1/nodes?watch=1'`: one kubectl for the whole wait, its events
    read as they come (no poll interval between a node turning Ready and us seeing it)."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.proc = subprocess.Popen(kubectl.argv("get", "--raw", "/api/v1/nodes?watch=1&allowWatchBookmarks=false"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        self._out = self.proc.stdout
        os.set_blocking(self._out.fileno(), False)
        self._buf = b""
        self.error = ""

    def events(self, timeout: float) -> list[dict[str, Any]]:
        """The objects of the events that arrived within `timeout` seconds (maybe none)."""
        if select.select([self._out], [], [], timeout)[0]:
            chunk = self._out.read() or b""
            if not chunk and self.proc.poll() is not None:
                self.error = (self.proc.stderr.read() or b"").decode(errors="replace").strip() \
                    if self.proc.stderr else ""
            self._buf += chunk
        out = []
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if isinstance(ev, dict) and isinstance(ev.get("object"), dict):
                out.append(ev["object"])
        return out

    @property
    def ended(self) -> bool:
        return self.proc.poll() is not None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def wait_nodes(plan: ClusterPlan, kubectl: Kubectl, comps: list[Component], progress: Progress,
               timeout: float, since: float | None = None) -> list[dict[str, Any]]:
    """Wait until every node is registered, Ready and has a podCIDR; keep the cp's routes to the
    pod CIDRs (host-gw via each node) in step as they appear. Each node's milestones are noted
    with their time since `since` (when the node processes were started)."""
    want = {m.name: m for m in plan.node_members}
    since = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    nodes: dict[str, dict[str, Any]] = {}
    seen: dict[str, dict[str, float]] = {n: {} for n in want}  # node -> milestone -> seconds
    routed: dict[str, str] = {}
    shown = ""
    watch = NodeWatch(kubectl)
    try:
        while True:
            _check_alive(plan, comps)
            if watch.ended:  # the apiserver closed the watch (a timeout): open another
                watch.close()
                watch = NodeWatch(kubectl)
            for n in watch.events(0.5):
                name = n.get("metadata", {}).get("name", "")
                if name not in want:
                    continue
                nodes[name] = n
                t = round(time.monotonic() - since, 1)
                seen[name].setdefault("registered", t)
                if (n.get("spec") or {}).get("podCIDR"):
                    seen[name].setdefault("podCIDR", t)
                if node_ready(n):
                    if "Ready" not in seen[name]:
                        seen[name]["Ready"] = t
                        progress.note(f"{name}: " + ", ".join(f"{k} +{v:.1f}s" for k, v in seen[name].items()))
            routes = {n["spec"]["podCIDR"]: want[name].ip for name, n in nodes.items()
                      if (n.get("spec") or {}).get("podCIDR")}
            if routes != routed:
                underlay.add_pod_cidr_routes(plan.control_plane.netns, routes)
                routed = routes
            ready = [n for n in nodes.values() if node_ready(n)]
            line = (f"registered {len(nodes)}/{len(want)}, Ready {len(ready)}/{len(want)}, "
                    f"podCIDR {len(routes)}/{len(want)}")
            if line != shown and len(ready) < len(want):
                progress.note(line)
                shown = line
            if len(ready) == len(want) and len(routes) == len(want):
                progress.note(line)
                return list(nodes.values())
            if time.monotonic() > deadline:
                raise ClusterError(f"cluster {plan.name!r}: nodes not Ready after {timeout:.0f}s ({line}"
                                   f"{'; kubectl: ' + watch.error if watch.error else ''}); "
                                   f"see the logs in {plan.log_dir}")
    finally:
        watch.close()


def write_credentials(plan: ClusterPlan, api_port: int) -> None:
    """The cluster CA, the apiserver's certificate and the credentials of every process but DNS,
    written before any process starts (the apiserver finds them in place), so that all of them can
    start at once: the admin kubeconfigs, the controller manager's and the scheduler's client
    certificates, and per node the kubelet's token (system:node:NAME) and serving certificate,
    kube-proxy's, the CNI daemon's, the ingress controller's and the speaker's client certificates."""
    from nodeagent.api.kubeconfig import write_cert_kubeconfig, write_kubeconfig
    from nodeagent.api.pki import PkiPaths, ensure_pki, issue_key_pair

    data = components.apiserver_data_dir(plan)
    data.mkdir(parents=True, exist_ok=True)
    # the SANs the apiserver would ask for (components.apiserver's --tls-san and --advertise-address,
    # and the first Service IP, the `kubernetes` Service), so that it keeps this certificate
    first_service_ip = str(ipaddress.ip_network(SERVICE_CIDR)[1])
    ensure_pki(data, ["127.0.0.1", "localhost", first_service_ip, CONTROL_PLANE_IP])
    server = plan.api_url_internal
    write_kubeconfig(data, f"https://127.0.0.1:{api_port}", plan.kubeconfig)
    write_kubeconfig(data, server, plan.internal_kubeconfig)
    for component, user in (("controller-manager", components.CONTROLLER_MANAGER_USER),
                            ("scheduler", components.SCHEDULER_USER)):
        write_cert_kubeconfig(data, server, components.control_plane_kubeconfig(plan, component), user, ())
    for m in plan.node_members:
        write_kubeconfig(data, server, components.node_kubeconfig(plan, m), node=m.name)
        write_cert_kubeconfig(data, server, components.proxy_kubeconfig(m), components.PROXY_USER, ())
        write_cert_kubeconfig(data, server, components.cni_kubeconfig(m), components.CNI_USER, ())
        write_cert_kubeconfig(data, server, components.ingress_kubeconfig(m), components.INGRESS_USER, ())
        write_cert_kubeconfig(data, server, components.speaker_kubeconfig(m), components.SPEAKER_USER, ())
        crt, key = components.kubelet_serving_cert(m)
        issue_key_pair(PkiPaths(data / "pki"), crt, key, f"system:node:{m.name}", ("system:nodes",),
                       server=True, dns=(m.name,), ips=(m.ip,))


def write_dns_credentials(plan: ClusterPlan) -> None:
    """A token of the kube-dns service account for the DNS server (a year long: the DNS server is a
    host process here, not a pod whose kubelet would refresh it); it needs the running apiserver
    (TokenRequest), as an operator would do it with kubectl."""
    import yaml

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
            from nodeagent.runtime import images

            images.build_all()
            done()
        done = progress.step(f"creating namespaces {', '.join(plan.netns_names)} on switch {plan.switch_netns}/br0")
        for d in (plan.run_dir, plan.log_dir, *(m.data_dir for m in plan.members)):
            d.mkdir(parents=True, exist_ok=True)
        state.save()
        underlay.create(plan)
        done()

        done = progress.step("writing the cluster CA and credentials (admin, controllers, each node's processes)")
        write_credentials(plan, state.api_port)
        done()

        # Every process but DNS at once: Python's start-up is most of each one's first second, and
        # they all wait for the apiserver the same way (their informers, the kubelet's registration
        # and the controllers' service account credentials retry within a fraction of a second).
        api = components.apiserver(plan, opts)
        controllers, dns = components.control_plane(plan, opts)
        node_comps = [c for m in plan.node_members for c in components.node(plan, m, opts)]
        done = progress.step(f"starting apiserver and controllers in {plan.control_plane.netns}, "
                             f"{nodes} node(s): cni-daemon, kubelet (+ containerd), proxy, ingress, speaker")
        fwd = forwarder_component(plan, state.api_port)
        procs.spawn(fwd[1], plan.log_dir / "host-forwarder.log", plan.run_dir / "host-forwarder.pid")
        started = time.monotonic()
        for c in [api, controllers, *node_comps]:
            _start(plan, c)
        done()

        done = progress.step(f"waiting for the apiserver ({CONTROL_PLANE_IP}:{API_PORT}, forwarded to "
                             f"127.0.0.1:{state.api_port}), then starting dns with its service account token")
        wait_apiserver(plan, state.api_port, [api])
        write_dns_credentials(plan)
        _start(plan, dns)
        done()
        cp = [controllers, dns]

        done = progress.step("waiting for nodes to be Ready")
        wait_nodes(plan, Kubectl(plan.kubeconfig), [api, *cp, *node_comps], progress, timeout, since=started)
        done(f"ok, {time.monotonic() - started:.1f}s after the processes started")

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
