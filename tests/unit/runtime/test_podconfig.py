"""podconfig: Pod dict -> CRI sandbox and container configs (shapes of upstream kuberuntime)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nodeagent.runtime import podconfig as pc
from nodeagent.runtime.cri import pb


def make_pod(**spec: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop", "uid": "uid-123",
                     "labels": {"app": "web"}, "annotations": {"note": "x"}},
        "spec": {"containers": [{"name": "app", "image": "nodeagent.local/toolbox:1"}]},
    }
    pod["spec"].update(spec)
    return pod


def test_sandbox_metadata_labels_annotations_and_log_dir() -> None:
    pod = make_pod()
    cfg = pc.sandbox_config(pod, log_directory="/d/logs/pods/shop_web-1_uid-123", attempt=2,
                            cgroup_parent="/kubepods/besteffort/poduid-123")
    assert (cfg.metadata.name, cfg.metadata.namespace, cfg.metadata.uid, cfg.metadata.attempt) == \
        ("web-1", "shop", "uid-123", 2)
    assert cfg.hostname == "web-1"
    assert cfg.log_directory == "/d/logs/pods/shop_web-1_uid-123"
    assert dict(cfg.labels) == {"app": "web", "io.kubernetes.pod.name": "web-1",
                                "io.kubernetes.pod.namespace": "shop", "io.kubernetes.pod.uid": "uid-123"}
    assert dict(cfg.annotations) == {"note": "x"}
    assert cfg.linux.cgroup_parent == "/kubepods/besteffort/poduid-123"
    assert not cfg.HasField("dns_config")


def test_pod_log_directory_and_container_log_path_follow_upstream_layout() -> None:
    assert pc.pod_log_directory("/d/logs/pods/", make_pod()) == "/d/logs/pods/shop_web-1_uid-123"
    assert pc.container_log_path("app", 3) == "app/3.log"


def test_namespace_options_default_pid_is_container_not_pod() -> None:
    # NamespaceMode 0 is POD: leaving pid unset would share the sandbox's PID namespace.
    ns = pc.sandbox_config(make_pod(), log_directory="/l").linux.security_context.namespace_options
    assert (ns.network, ns.ipc, ns.pid) == (pb.POD, pb.POD, pb.CONTAINER)


def test_namespace_options_share_process_namespace_and_host_modes() -> None:
    ns = pc.namespace_options(make_pod(shareProcessNamespace=True))
    assert ns.pid == pb.POD
    ns = pc.namespace_options(make_pod(hostNetwork=True, hostIPC=True, hostPID=True))
    assert (ns.network, ns.ipc, ns.pid) == (pb.NODE, pb.NODE, pb.NODE)


def test_host_network_pod_keeps_node_hostname() -> None:
    cfg = pc.sandbox_config(make_pod(hostNetwork=True), log_directory="/l")
    assert cfg.hostname == ""
    assert cfg.linux.security_context.namespace_options.network == pb.NODE


def test_hostname_from_spec_and_truncated() -> None:
    assert pc.pod_hostname(make_pod(hostname="db-0")) == "db-0"
    pod = make_pod()
    pod["metadata"]["name"] = "a" * 62 + "-b" + "c" * 10
    name = pc.pod_hostname(pod)
    assert len(name) <= 63 and not name.endswith("-") and name == "a" * 62


def test_dns_config_from_dict_or_message() -> None:
    dns = {"servers": ["10.96.0.10"], "searches": ["shop.svc.cluster.local", "svc.cluster.local"],
           "options": ["ndots:5"]}
    cfg = pc.sandbox_config(make_pod(), log_directory="/l", dns_config=dns)
    assert list(cfg.dns_config.servers) == ["10.96.0.10"]
    assert list(cfg.dns_config.searches) == ["shop.svc.cluster.local", "svc.cluster.local"]
    assert list(cfg.dns_config.options) == ["ndots:5"]
    msg = pb.DNSConfig(servers=["1.1.1.1"])
    assert list(pc.sandbox_config(make_pod(), log_directory="/l", dns_config=msg).dns_config.servers) == ["1.1.1.1"]


def test_port_mappings_from_container_ports() -> None:
    pod = make_pod(containers=[
        {"name": "a", "image": "i", "ports": [{"containerPort": 80, "hostPort": 8080},
                                             {"containerPort": 53, "protocol": "UDP"}]},
        {"name": "b", "image": "i", "ports": [{"containerPort": 9000, "hostPort": 9000, "hostIP": "10.0.0.1",
                                              "protocol": "SCTP"}]},
    ])
    pms = [(p.protocol, p.container_port, p.host_port, p.host_ip) for p in pc.port_mappings(pod)]
    assert pms == [(pb.TCP, 80, 8080, ""), (pb.UDP, 53, 0, ""), (pb.SCTP, 9000, 9000, "10.0.0.1")]
    bad = make_pod(containers=[{"name": "a", "image": "i", "ports": [{"containerPort": 1, "protocol": "ICMP"}]}])
    with pytest.raises(ValueError, match="ICMP"):
        pc.port_mappings(bad)


def test_sandbox_security_context_and_sysctls() -> None:
    pod = make_pod(securityContext={"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000,
                                    "supplementalGroups": [4000],
                                    "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]})
    cfg = pc.sandbox_config(pod, log_directory="/l")
    sec = cfg.linux.security_context
    assert sec.run_as_user.value == 1000 and sec.run_as_group.value == 2000
    assert list(sec.supplemental_groups) == [4000, 3000]
    assert dict(cfg.linux.sysctls) == {"net.ipv4.ip_unprivileged_port_start": "0"}
    assert not sec.privileged


def test_sandbox_is_privileged_when_any_container_is() -> None:
    pod = make_pod(initContainers=[{"name": "init", "image": "i", "securityContext": {"privileged": True}}])
    assert pc.sandbox_config(pod, log_directory="/l").linux.security_context.privileged


@pytest.mark.parametrize(("quantity", "milli"), [
    ("500m", 500), ("1", 1000), ("0.5", 500), ("2", 2000), (1, 1000), ("1.0001", 1001), ("100u", 1),
])
def test_parse_cpu(quantity: str | int, milli: int) -> None:
    assert pc.parse_cpu(quantity) == milli


@pytest.mark.parametrize(("quantity", "value"), [
    ("128Mi", 128 * 2**20), ("1Gi", 2**30), ("1G", 10**9), ("500k", 500_000), ("1e3", 1000),
    ("2E", 2 * 10**18), ("1Ki", 1024), (4096, 4096), ("0.5Ki", 512),
])
def test_parse_memory(quantity: str | int, value: int) -> None:
    assert pc.parse_memory(quantity) == value


def test_linux_resources_request_and_limit() -> None:
    c = {"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                                   "limits": {"cpu": "500m", "memory": "128Mi"}}}
    r = pc.linux_resources(c)
    assert r.cpu_shares == 256  # 250 * 1024 / 1000
    assert (r.cpu_period, r.cpu_quota) == (100_000, 50_000)
    assert r.memory_limit_in_bytes == 128 * 2**20


def test_linux_resources_limit_only_sets_shares_from_limit() -> None:
    r = pc.linux_resources({"name": "a", "resources": {"limits": {"cpu": "2"}}})
    assert r.cpu_shares == 2048 and r.cpu_quota == 200_000 and r.memory_limit_in_bytes == 0


def test_linux_resources_best_effort_and_minimums() -> None:
    r = pc.linux_resources({"name": "a"})
    assert (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes) == (2, 0, 0)
    r = pc.linux_resources({"name": "a", "resources": {"requests": {"cpu": "1m"}, "limits": {"cpu": "1m"}}})
    assert r.cpu_shares == 2  # 1 * 1024 / 1000 rounds to 1, raised to the minimum of 2
    assert r.cpu_quota == 1000  # 100 us would be below the kernel's minimum; raised to 1 ms


def test_container_config_fields() -> None:
    pod = make_pod(terminationGracePeriodSeconds=5)
    container = {"name": "app", "image": "nodeagent.local/toolbox:1", "command": ["sh", "-c"],
                 "args": ["echo $A"], "workingDir": "/tmp", "tty": True, "stdin": True,
                 "ports": [{"name": "http", "containerPort": 80}],
                 "resources": {"limits": {"memory": "32Mi"}}}
    cfg = pc.container_config(pod, container, attempt=3,
                              env=[("A", "1"), {"name": "B", "value": "two"}],
                              mounts=[{"container_path": "/data", "host_path": "/host/data", "readonly": True},
                                      pb.Mount(container_path="/etc/hosts", host_path="/h")],
                              image="sha256:abc")
    assert (cfg.metadata.name, cfg.metadata.attempt) == ("app", 3)
    assert cfg.image.image == "sha256:abc"
    assert cfg.image.user_specified_image == "nodeagent.local/toolbox:1"
    assert list(cfg.command) == ["sh", "-c"] and list(cfg.args) == ["echo $A"]
    assert cfg.working_dir == "/tmp" and cfg.tty and cfg.stdin and not cfg.stdin_once
    assert [(e.key, e.value) for e in cfg.envs] == [("A", "1"), ("B", "two")]
    assert [(m.container_path, m.host_path, m.readonly) for m in cfg.mounts] == \
        [("/data", "/host/data", True), ("/etc/hosts", "/h", False)]
    assert cfg.log_path == "app/3.log"
    assert dict(cfg.labels) == {"io.kubernetes.pod.name": "web-1", "io.kubernetes.pod.namespace": "shop",
                                "io.kubernetes.pod.uid": "uid-123", "io.kubernetes.container.name": "app"}
    ann = dict(cfg.annotations)
    assert ann["io.kubernetes.container.restartCount"] == "3"
    assert ann["io.kubernetes.pod.terminationGracePeriod"] == "5"
    assert ann["io.kubernetes.container.terminationMessagePath"] == "/dev/termination-log"
    assert ann["io.kubernetes.container.ports"] == '[{"name":"http","containerPort":80}]'
    assert ann["io.kubernetes.container.hash"] == pc.container_hash(container)
    assert cfg.linux.resources.memory_limit_in_bytes == 32 * 2**20
    assert cfg.linux.security_context.namespace_options.pid == pb.CONTAINER


def test_container_hash_changes_with_spec_only() -> None:
    a = {"name": "app", "image": "x", "command": ["a"]}
    b = copy.deepcopy(a)
    assert pc.container_hash(a) == pc.container_hash(b)
    b["command"] = ["b"]
    assert pc.container_hash(a) != pc.container_hash(b)


def test_container_security_context() -> None:
    pod = make_pod(securityContext={"runAsUser": 1000}, shareProcessNamespace=True)
    container = {"name": "app", "image": "i", "securityContext": {
        "runAsUser": 0, "privileged": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}
    sec = pc.container_config(pod, container).linux.security_context
    assert sec.run_as_user.value == 0  # the container's setting wins over the pod's
    assert sec.privileged and sec.readonly_rootfs and sec.no_new_privs
    assert list(sec.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(sec.capabilities.drop_capabilities) == ["ALL"]
    assert sec.namespace_options.pid == pb.POD


def test_container_without_image_is_an_error_naming_pod_and_container() -> None:
    with pytest.raises(ValueError, match="shop/web-1 container app: no image"):
        pc.container_config(make_pod(), {"name": "app"})


def test_configs_serialize_round_trip() -> None:
    pod = make_pod()
    sc = pc.sandbox_config(pod, log_directory="/l")
    cc = pc.container_config(pod, pod["spec"]["containers"][0])
    assert pb.PodSandboxConfig.FromString(sc.SerializeToString()) == sc
    assert pb.ContainerConfig.FromString(cc.SerializeToString()) == cc
