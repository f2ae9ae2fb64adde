"""The CRI stubs: generated from proto/, regenerated when it changes, wire compatible with upstream."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nodeagent.runtime import stubs
from nodeagent.runtime.cri import pb


def test_generate_then_skip_then_regenerate_on_change(tmp_path: Path) -> None:
    proto = tmp_path / "api.proto"
    shutil.copy(stubs.PROTO_FILE, proto)
    pb_dir = tmp_path / "pb"
    assert stubs.ensure_stubs(proto, pb_dir) is True
    first = {n: (pb_dir / n).read_bytes() for n in stubs.GENERATED}
    assert stubs.ensure_stubs(proto, pb_dir) is False
    # Regeneration from the same .proto gives the same bytes as the checked-in generator run.
    (pb_dir / stubs.STAMP).unlink()
    assert stubs.ensure_stubs(proto, pb_dir) is True
    assert {n: (pb_dir / n).read_bytes() for n in stubs.GENERATED} == first
    proto.write_text(proto.read_text() + "\nmessage Extra { string x = 1; }\n")
    assert stubs.ensure_stubs(proto, pb_dir) is True
    assert b"_EXTRA" in (pb_dir / "api_pb2.py").read_bytes()
    assert not list(pb_dir.glob(".gen-*"))  # no temporary directories left


def test_broken_proto_is_a_clear_error(tmp_path: Path) -> None:
    proto = tmp_path / "api.proto"
    proto.write_text('syntax = "proto3";\nmessage X { strin y = 1; }\n')
    with pytest.raises(stubs.StubGenerationError, match="protoc failed"):
        stubs.ensure_stubs(proto, tmp_path / "pb")


def test_missing_proto_without_stubs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(stubs.StubGenerationError, match="no CRI stubs"):
        stubs.ensure_stubs(tmp_path / "absent.proto", tmp_path / "pb")


# Field numbers from upstream k8s.io/cri-api pkg/apis/runtime/v1/api.proto: wire compatibility
# depends on these and nothing else, so they are pinned here.
UPSTREAM_FIELDS = {
    "PodSandboxConfig": {"metadata": 1, "hostname": 2, "log_directory": 3, "dns_config": 4,
                         "port_mappings": 5, "labels": 6, "annotations": 7, "linux": 8},
    "NamespaceOption": {"network": 1, "pid": 2, "ipc": 3, "target_id": 4},
    "LinuxSandboxSecurityContext": {"namespace_options": 1, "run_as_user": 3, "run_as_group": 8,
                                    "privileged": 6},
    "ContainerConfig": {"metadata": 1, "image": 2, "command": 3, "args": 4, "working_dir": 5, "envs": 6,
                        "mounts": 7, "labels": 9, "annotations": 10, "log_path": 11, "stdin": 12,
                        "stdin_once": 13, "tty": 14, "linux": 15},
    "LinuxContainerResources": {"cpu_period": 1, "cpu_quota": 2, "cpu_shares": 3,
                                "memory_limit_in_bytes": 4, "oom_score_adj": 5},
    "ImageSpec": {"image": 1, "annotations": 2, "user_specified_image": 18, "runtime_handler": 19,
                  "image_ref": 20},
    "ContainerStatus": {"id": 1, "state": 3, "started_at": 5, "finished_at": 6, "exit_code": 7,
                        "reason": 10, "log_path": 15, "image_id": 17},
    "PodSandboxStatus": {"id": 1, "state": 3, "network": 5, "linux": 6, "runtime_handler": 9},
    "ContainerFilter": {"id": 1, "state": 2, "pod_sandbox_id": 3, "label_selector": 4},
    "ExecSyncResponse": {"stdout": 1, "stderr": 2, "exit_code": 3},
    "ExecRequest": {"container_id": 1, "cmd": 2, "tty": 3, "stdin": 4, "stdout": 5, "stderr": 6},
    "AttachRequest": {"container_id": 1, "stdin": 2, "tty": 3, "stdout": 4, "stderr": 5},
    "PortForwardRequest": {"pod_sandbox_id": 1, "port": 2},
    "ContainerStats": {"attributes": 1, "cpu": 2, "memory": 3, "writable_layer": 4},
    "ContainerEventResponse": {"container_id": 1, "container_event_type": 2, "created_at": 3,
                               "pod_sandbox_status": 4, "containers_statuses": 5},
}


@pytest.mark.parametrize("message", sorted(UPSTREAM_FIELDS))
def test_field_numbers_match_upstream(message: str) -> None:
    desc = pb.DESCRIPTOR.message_types_by_name[message]
    got = {name: desc.fields_by_name[name].number for name in UPSTREAM_FIELDS[message]}
    assert got == UPSTREAM_FIELDS[message]


def test_package_services_and_enums_match_upstream() -> None:
    assert pb.DESCRIPTOR.package == "runtime.v1"
    runtime = pb.DESCRIPTOR.services_by_name["RuntimeService"]
    assert {"RunPodSandbox", "CreateContainer", "ExecSync", "Exec", "Attach", "PortForward", "ListContainerStats",
            "GetContainerEvents", "Status"} <= set(runtime.methods_by_name)
    assert runtime.methods_by_name["ExecSync"].full_name == "runtime.v1.RuntimeService.ExecSync"
    assert {"ListImages", "ImageStatus", "PullImage", "RemoveImage"} <= \
        set(pb.DESCRIPTOR.services_by_name["ImageService"].methods_by_name)
    assert (pb.POD, pb.CONTAINER, pb.NODE, pb.TARGET) == (0, 1, 2, 3)
    assert (pb.CONTAINER_CREATED, pb.CONTAINER_RUNNING, pb.CONTAINER_EXITED, pb.CONTAINER_UNKNOWN) == (0, 1, 2, 3)
    assert (pb.SANDBOX_READY, pb.SANDBOX_NOTREADY) == (0, 1)
