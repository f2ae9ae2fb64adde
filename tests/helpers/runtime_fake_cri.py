"""A small in-process CRI server (grpc.aio on a unix socket) for unit tests of RuntimeClient.

It records every request and can be told to fail the next N calls of a method with a status code.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from nodeagent.runtime.cri import api_pb2 as pb
from nodeagent.runtime.pb import api_pb2_grpc


class FakeCRI(api_pb2_grpc.RuntimeServiceServicer, api_pb2_grpc.ImageServiceServicer):
    def __init__(self) -> None:
        self.requests: list[tuple[str, Any]] = []
        self.failures: dict[str, list[tuple[grpc.StatusCode, str]]] = defaultdict(list)
        self.sandboxes: dict[str, pb.PodSandbox] = {}
        self.images: dict[str, pb.Image] = {}
        self.delay: dict[str, float] = {}  # method -> seconds to wait before answering

    def fail(self, method: str, code: grpc.StatusCode, details: str = "injected", times: int = 1) -> None:
        self.failures[method].extend([(code, details)] * times)

    async def _enter(self, method: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.requests.append((method, request))
        if method in self.delay:
            await asyncio.sleep(self.delay[method])
        if self.failures[method]:
            code, details = self.failures[method].pop(0)
            await context.abort(code, details)

    def calls(self, method: str) -> list[Any]:
        return [r for m, r in self.requests if m == method]

    async def Version(self, request: Any, context: Any) -> pb.VersionResponse:  # noqa: N802
        await self._enter("Version", request, context)
        return pb.VersionResponse(version="0.1.0", runtime_name="fake", runtime_version="1",
                                  runtime_api_version="v1")

    async def RunPodSandbox(self, request: Any, context: Any) -> pb.RunPodSandboxResponse:  # noqa: N802
        await self._enter("RunPodSandbox", request, context)
        sid = f"sb{len(self.sandboxes) + 1}"
        self.sandboxes[sid] = pb.PodSandbox(id=sid, metadata=request.config.metadata,
                                            labels=request.config.labels)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sid)

    async def ListPodSandbox(self, request: Any, context: Any) -> pb.ListPodSandboxResponse:  # noqa: N802
        await self._enter("ListPodSandbox", request, context)
        sel = dict(request.filter.label_selector)
        items = [s for s in self.sandboxes.values()
                 if all(s.labels.get(k) == v for k, v in sel.items())]
        return pb.ListPodSandboxResponse(items=items)

    async def RemovePodSandbox(self, request: Any, context: Any) -> pb.RemovePodSandboxResponse:  # noqa: N802
        await self._enter("RemovePodSandbox", request, context)
        if request.pod_sandbox_id not in self.sandboxes:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"sandbox {request.pod_sandbox_id} not found")
        del self.sandboxes[request.pod_sandbox_id]
        return pb.RemovePodSandboxResponse()

    async def ListContainers(self, request: Any, context: Any) -> pb.ListContainersResponse:  # noqa: N802
        await self._enter("ListContainers", request, context)
        return pb.ListContainersResponse()

    async def StopContainer(self, request: Any, context: Any) -> pb.StopContainerResponse:  # noqa: N802
        await self._enter("StopContainer", request, context)
        return pb.StopContainerResponse()

    async def ExecSync(self, request: Any, context: Any) -> pb.ExecSyncResponse:  # noqa: N802
        await self._enter("ExecSync", request, context)
        return pb.ExecSyncResponse(stdout=" ".join(request.cmd).encode(), stderr=b"e", exit_code=7)

    async def ImageStatus(self, request: Any, context: Any) -> pb.ImageStatusResponse:  # noqa: N802
        await self._enter("ImageStatus", request, context)
        img = self.images.get(request.image.image)
        return pb.ImageStatusResponse(image=img) if img else pb.ImageStatusResponse()


class FakeCRIServer:
    """Serve a FakeCRI on unix://<short tmp dir>/cri.sock (pytest's tmp paths can be too long)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="na-rt-cri-", dir="/tmp"))
        self.socket = self.dir / "cri.sock"
        self.endpoint = f"unix://{self.socket}"
        self.fake = FakeCRI()
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.server = grpc.aio.server()
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(self.fake, self.server)
        api_pb2_grpc.add_ImageServiceServicer_to_server(self.fake, self.server)
        self.server.add_insecure_port(self.endpoint)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(grace=None)
        shutil.rmtree(self.dir, ignore_errors=True)
