"""An asyncio CRI v1 client (grpc.aio) over a unix socket: RuntimeService and ImageService.

Calls return protobuf messages from `api_pb2` (re-exported here as `api_pb2` and `pb`), or the
useful part of the response (an id, a list) as each method's docstring says. Every call has a
deadline; UNAVAILABLE (the runtime is not up yet, or restarting) is retried with exponential
backoff; any other gRPC failure becomes a `CRIError` naming the call, the object and the status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from nodeagent.runtime.stubs import ensure_stubs

ensure_stubs()

from nodeagent.runtime.pb import api_pb2, api_pb2_grpc  # noqa: E402 - generated just above

pb = api_pb2

__all__ = ["CRIError", "ExecResult", "RuntimeClient", "api_pb2", "pb", "normalize_endpoint"]

log = logging.getLogger(__name__)

# The CRI API version we speak (VersionRequest.version), as the kubelet sends it.
CRI_API_VERSION = "v1"
# gRPC message size limit, as the kubelet's (16 MiB): big ListContainers answers on busy nodes.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

_IMAGE_CALLS = frozenset({"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"})


class CRIError(Exception):
    """A CRI call failed: `call` (e.g. "CreateContainer"), `target` (the pod/container/image it was
    about), `code` (grpc.StatusCode) and `details` (the runtime's message)."""

    def __init__(self, call: str, target: str, code: grpc.StatusCode, details: str, endpoint: str = ""):
        self.call = call
        self.target = target
        self.code = code
        self.details = details
        self.endpoint = endpoint
        what = f" {target}" if target else ""
        hint = ""
        if code == grpc.StatusCode.UNAVAILABLE:
            hint = f" (is containerd running and serving {endpoint or 'the CRI socket'}?)"
        elif code == grpc.StatusCode.UNIMPLEMENTED:
            hint = " (the runtime does not implement this call)"
        super().__init__(f"CRI {call}{what} failed: {code.name}: {details}{hint}")

    @property
    def not_found(self) -> bool:
        return self.code == grpc.StatusCode.NOT_FOUND


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


def normalize_endpoint(endpoint: str) -> str:
    """Accept "unix:///path", "unix:/path" or a bare "/path"; return the gRPC target."""
    if endpoint.startswith("unix://"):
        return endpoint
    if endpoint.startswith("unix:"):
        return "unix://" + endpoint[len("unix:"):]
    if endpoint.startswith("/"):
        return "unix://" + endpoint
    raise ValueError(f"CRI endpoint {endpoint!r} is not a unix socket (want unix:///path/to.sock)")


def _labels(selector: Mapping[str, str] | None) -> dict[str, str]:
    return dict(selector or {})


class RuntimeClient:
    """One connection to a CRI runtime. Create it inside the event loop that will use it."""

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.1,
        max_backoff: float = 2.0,
    ) -> None:
        self.endpoint = normalize_endpoint(endpoint)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._channel: grpc.aio.Channel | None = None
        self._runtime: Any = None
        self._images: Any = None

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> None:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                self.endpoint,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ],
            )
            self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
            self._images = api_pb2_grpc.ImageServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def __aenter__(self) -> RuntimeClient:
        self._connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, call: str, request: Any, *, target: str = "", timeout: float | None = None) -> Any:
        self._connect()
        stub = self._images if call in _IMAGE_CALLS else self._runtime
        method = getattr(stub, call)
        deadline = timeout if timeout is not None else self.timeout
        delay = self.backoff
        for attempt in range(self.retries + 1):
            start = time.monotonic()
            try:
                response = await method(request, timeout=deadline)
            except grpc.aio.AioRpcError as e:
                code = e.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self.retries:
                    log.debug("cri retry call=%s target=%s attempt=%d delay=%.2f details=%s",
                              call, target, attempt + 1, delay, e.details())
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                raise CRIError(call, target, code, e.details() or "", self.endpoint) from None
            log.debug("cri call=%s target=%s seconds=%.3f", call, target, time.monotonic() - start)
            return response
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ runtime

    async def version(self) -> api_pb2.VersionResponse:
        return await self._call("Version", api_pb2.VersionRequest(version=CRI_API_VERSION))

    async def status(self, verbose: bool = False) -> api_pb2.StatusResponse:
        """Runtime conditions (RuntimeReady, NetworkReady) and, when verbose, the runtime's config."""
        return await self._call("Status", api_pb2.StatusRequest(verbose=verbose))

    async def runtime_config(self) -> api_pb2.RuntimeConfigResponse:
        return await self._call("RuntimeConfig", api_pb2.RuntimeConfigRequest())

    async def update_runtime_config(self, pod_cidr: str) -> None:
        req = api_pb2.UpdateRuntimeConfigRequest(
            runtime_config=api_pb2.RuntimeConfig(network_config=api_pb2.NetworkConfig(pod_cidr=pod_cidr))
        )
        await self._call("UpdateRuntimeConfig", req, target=pod_cidr)

    # ------------------------------------------------------------------ sandboxes

    async def run_pod_sandbox(
        self, config: api_pb2.PodSandboxConfig, runtime_handler: str = "", timeout: float | None = None
    ) -> str:
        """Create and start the sandbox (pause container + network via CNI); returns its id."""
        req = api_pb2.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        # CNI ADD runs inside this call: give it more than a plain call.
        resp = await self._call("RunPodSandbox", req, target=_pod_name(config),
                                timeout=timeout or max(self.timeout, 120.0))
        return str(resp.pod_sandbox_id)

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        """Stop every container of the sandbox and tear its network down (idempotent)."""
        await self._call("StopPodSandbox", api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_sandbox_id),
                         target=pod_sandbox_id, timeout=max(self.timeout, 120.0))

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        await self._call("RemovePodSandbox",
                         api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_sandbox_id),
                         target=pod_sandbox_id, timeout=max(self.timeout, 60.0))

    async def pod_sandbox_status(self, pod_sandbox_id: str, verbose: bool = False) -> api_pb2.PodSandboxStatusResponse:
        return await self._call("PodSandboxStatus",
                                api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id, verbose=verbose),
                                target=pod_sandbox_id)

    async def list_pod_sandbox(
        self,
        *,
        id: str | None = None,  # noqa: A002 - the CRI's field name
        state: int | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> list[api_pb2.PodSandbox]:
        """Sandboxes matching every filter given (state: pb.SANDBOX_READY / pb.SANDBOX_NOTREADY)."""
        flt = api_pb2.PodSandboxFilter(id=id or "", label_selector=_labels(label_selector))
        if state is not None:
            flt.state.CopyFrom(api_pb2.PodSandboxStateValue(state=state))  # type: ignore[arg-type]
        resp = await self._call("ListPodSandbox", api_pb2.ListPodSandboxRequest(filter=flt))
        return list(resp.items)

    # ------------------------------------------------------------------ containers

    async def create_container(
        self,
        pod_sandbox_id: str,
        config: api_pb2.ContainerConfig,
        sandbox_config: api_pb2.PodSandboxConfig,
    ) -> str:
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=pod_sandbox_id, config=config,
                                             sandbox_config=sandbox_config)
        target = f"{_pod_name(sandbox_config)}/{config.metadata.name}"
        resp = await self._call("CreateContainer", req, target=target, timeout=max(self.timeout, 60.0))
        return str(resp.container_id)

    async def start_container(self, container_id: str) -> None:
        await self._call("StartContainer", api_pb2.StartContainerRequest(container_id=container_id),
                         target=container_id, timeout=max(self.timeout, 60.0))

    async def stop_container(self, container_id: str, timeout: int) -> None:
        """Send the stop signal, wait `timeout` seconds, then SIGKILL (the CRI's contract)."""
        req = api_pb2.StopContainerRequest(container_id=container_id, timeout=int(timeout))
        await self._call("StopContainer", req, target=container_id, timeout=self.timeout + max(timeout, 0))

    async def remove_container(self, container_id: str) -> None:
        await self._call("RemoveContainer", api_pb2.RemoveContainerRequest(container_id=container_id),
                         target=container_id)

    async def list_containers(
        self,
        *,
        id: str | None = None,  # noqa: A002 - the CRI's field name
        state: int | None = None,
        pod_sandbox_id: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> list[api_pb2.Container]:
        """Containers matching every filter given (state: pb.CONTAINER_CREATED/RUNNING/EXITED/UNKNOWN)."""
        flt = api_pb2.ContainerFilter(id=id or "", pod_sandbox_id=pod_sandbox_id or "",
                                      label_selector=_labels(label_selector))
        if state is not None:
            flt.state.CopyFrom(api_pb2.ContainerStateValue(state=state))  # type: ignore[arg-type]
        resp = await self._call("ListContainers", api_pb2.ListContainersRequest(filter=flt))
        return list(resp.containers)

    async def container_status(self, container_id: str, verbose: bool = False) -> api_pb2.ContainerStatusResponse:
        return await self._call("ContainerStatus",
                                api_pb2.ContainerStatusRequest(container_id=container_id, verbose=verbose),
                                target=container_id)

    async def reopen_container_log(self, container_id: str) -> None:
        await self._call("ReopenContainerLog", api_pb2.ReopenContainerLogRequest(container_id=container_id),
                         target=container_id)

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 10) -> ExecResult:
        """Run cmd in the container and wait; a non-zero exit is a result, not an error."""
        req = api_pb2.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=int(timeout))
        # The runtime enforces `timeout`; our deadline only guards against a hung runtime.
        deadline = self.timeout + timeout if timeout > 0 else None
        resp = await self._call("ExecSync", req, target=container_id,
                                timeout=deadline if deadline is not None else 24 * 3600.0)
        return ExecResult(exit_code=int(resp.exit_code), stdout=bytes(resp.stdout), stderr=bytes(resp.stderr))

    async def exec(
        self,
        container_id: str,
        cmd: list[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str:
        """Prepare a streaming exec; returns the runtime's streaming-server URL to connect to."""
        req = api_pb2.ExecRequest(container_id=container_id, cmd=cmd, tty=tty, stdin=stdin,
                                  stdout=stdout, stderr=stderr and not tty)
        resp = await self._call("Exec", req, target=container_id)
        return str(resp.url)

    async def attach(self, container_id: str, *, tty: bool = False, stdin: bool = False,
                     stdout: bool = True, stderr: bool = True) -> str:
        """Prepare an attach to the container's main process; returns the streaming-server URL. `tty`
        must match the container's config (a process's terminal is fixed when it starts)."""
        req = api_pb2.AttachRequest(container_id=container_id, tty=tty, stdin=stdin, stdout=stdout,
                                    stderr=stderr and not tty)
        resp = await self._call("Attach", req, target=container_id)
        return str(resp.url)

    async def port_forward(self, pod_sandbox_id: str, ports: list[int]) -> str:
        req = api_pb2.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=ports)
        resp = await self._call("PortForward", req, target=pod_sandbox_id)
        return str(resp.url)

    # ------------------------------------------------------------------ stats and events

    async def container_stats(self, container_id: str) -> api_pb2.ContainerStats:
        resp = await self._call("ContainerStats", api_pb2.ContainerStatsRequest(container_id=container_id),
                                target=container_id)
        return resp.stats

    async def list_container_stats(
        self,
        *,
        id: str | None = None,  # noqa: A002 - the CRI's field name
        pod_sandbox_id: str | None = None,
        label_selector: Mapping[str, str] | None = None,
    ) -> list[api_pb2.ContainerStats]:
        flt = api_pb2.ContainerStatsFilter(id=id or "", pod_sandbox_id=pod_sandbox_id or "",
                                           label_selector=_labels(label_selector))
        resp = await self._call("ListContainerStats", api_pb2.ListContainerStatsRequest(filter=flt))
        return list(resp.stats)

    async def get_container_events(self) -> AsyncIterator[api_pb2.ContainerEventResponse]:
        """Stream container lifecycle events. containerd 1.6 does not implement this call: the
        first iteration raises CRIError(code=UNIMPLEMENTED); relist instead."""
        self._connect()
        stream = self._runtime.GetContainerEvents(api_pb2.GetEventsRequest())
        try:
            async for event in stream:
                yield event
        except grpc.aio.AioRpcError as e:
            raise CRIError("GetContainerEvents", "", e.code(), e.details() or "", self.endpoint) from None
        finally:
            stream.cancel()

    # ------------------------------------------------------------------ images

    async def list_images(self, image: str | None = None) -> list[api_pb2.Image]:
        """Images the runtime holds; with `image`, only those it names (tag, digest or id)."""
        flt = api_pb2.ImageFilter(image=api_pb2.ImageSpec(image=image)) if image else None
        resp = await self._call("ListImages", api_pb2.ListImagesRequest(filter=flt))
        found = list(resp.images)
        if image:
            # containerd 1.6 ignores the filter: apply it here too.
            found = [i for i in found if image == i.id or image in i.repo_tags or image in i.repo_digests]
        return found

    async def image_status(self, image: str) -> api_pb2.Image | None:
        """The image, or None when the runtime does not have it."""
        resp = await self._call("ImageStatus",
                                api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=image)), target=image)
        return resp.image if resp.HasField("image") and resp.image.id else None

    async def pull_image(self, image: str, sandbox_config: api_pb2.PodSandboxConfig | None = None) -> str:
        """Pull (or resolve a local) image; returns its image_ref (the image id)."""
        req = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image), sandbox_config=sandbox_config)
        resp = await self._call("PullImage", req, target=image, timeout=max(self.timeout, 300.0))
        return str(resp.image_ref)

    async def remove_image(self, image: str) -> None:
        await self._call("RemoveImage", api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image)),
                         target=image)

    async def image_fs_info(self) -> api_pb2.ImageFsInfoResponse:
        return await self._call("ImageFsInfo", api_pb2.ImageFsInfoRequest())


def _pod_name(config: api_pb2.PodSandboxConfig) -> str:
    md = config.metadata
    return f"{md.namespace}/{md.name}" if md.namespace else md.name
