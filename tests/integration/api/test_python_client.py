"""The official `kubernetes` Python client against `nodeagent apiserver`."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.helpers.apiserver import ApiServerProcess


@pytest.fixture
def api(apiserver: ApiServerProcess) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=str(apiserver.kubeconfig))
    try:
        yield c
    finally:
        c.close()


def _pod(name: str) -> client.V1Pod:
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels={"app": "py"}),
                        spec=client.V1PodSpec(containers=[client.V1Container(name="c",
                                                                             image="nodeagent.local/toolbox:1")]))


def test_create_list_replace_conflict(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created: Any = core.create_namespaced_pod("default", _pod("py1"))
    assert created.metadata.uid and created.spec.restart_policy == "Always"
    pods: Any = core.list_namespaced_pod("default", label_selector="app=py")
    assert [p.metadata.name for p in pods.items] == ["py1"]
    assert int(pods.metadata.resource_version) >= int(created.metadata.resource_version)
    created.metadata.labels["v"] = "2"
    replaced: Any = core.replace_namespaced_pod("py1", "default", created)
    assert replaced.metadata.labels["v"] == "2"
    created.metadata.labels["v"] = "3"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("py1", "default", created)
    assert err.value.status == 409
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", _pod("py1"))
    assert err.value.status == 409 and "AlreadyExists" in str(err.value.body)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("nope", "default")
    assert err.value.status == 404


def test_watch_stream(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    listing: Any = core.list_namespaced_config_map("default")
    rv = listing.metadata.resource_version
    seen: list[tuple[str, str]] = []
    w = watch.Watch()

    def run() -> None:
        for ev in w.stream(core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=20):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm1"), data={"a": "1"})
    core.create_namespaced_config_map("default", cm)
    core.patch_namespaced_config_map("cm1", "default", {"data": {"a": "2"}})
    core.delete_namespaced_config_map("cm1", "default")
    t.join(timeout=30)
    assert not t.is_alive()
    assert seen == [("ADDED", "cm1"), ("MODIFIED", "cm1"), ("DELETED", "cm1")]


def test_apps_and_scale(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="d1"),
        spec=client.V1DeploymentSpec(
            replicas=1, selector=client.V1LabelSelector(match_labels={"app": "d1"}),
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels={"app": "d1"}),
                                              spec=client.V1PodSpec(containers=[client.V1Container(
                                                  name="c", image="nodeagent.local/toolbox:1")]))))
    apps.create_namespaced_deployment("default", dep)
    apps.patch_namespaced_deployment_scale("d1", "default", {"spec": {"replicas": 4}})
    scale: Any = apps.read_namespaced_deployment_scale("d1", "default")
    assert scale.spec.replicas == 4 and scale.status.selector == "app=d1"
    got: Any = apps.read_namespaced_deployment("d1", "default")
    assert got.spec.strategy.type == "RollingUpdate" and got.spec.revision_history_limit == 10
