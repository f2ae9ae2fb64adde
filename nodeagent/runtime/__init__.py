"""nodeagent.runtime: the container runtime layer (CRI v1 client, managed containerd, local images).

The layers (.importlinter checks them): cli > cluster > the apiserver | the components > runtime >
client > machinery; of the components only the kubelet imports this package.

API summary (names are stable; the kubelet codes against them)
----------------------------------------------------------------
Stubs: `proto/runtime/v1/api.proto` (package runtime.v1, upstream message and field numbers) is
compiled with grpcio-tools into `nodeagent/runtime/pb/` (gitignored). `nodeagent.runtime.stubs.
ensure_stubs()` regenerates them when the .proto's hash changed; importing `nodeagent.runtime.cri`
calls it, so the protobuf module is always importable as::

    from nodeagent.runtime.cri import api_pb2 as pb   # the runtime.v1 messages and enums

nodeagent.runtime.cri
    RuntimeClient(endpoint: str, *, timeout: float = 10.0, retries: int = 5)
        endpoint is "unix:///path/to/containerd.sock". asyncio (grpc.aio). Use as
        `async with RuntimeClient(ep) as rt:` or call `await rt.close()`.
        Every call has a deadline (`timeout`, larger for pulls/stop/exec), UNAVAILABLE is retried
        with exponential backoff, and any other gRPC error raises `CRIError`.
        Calls return the protobuf *response* messages' useful part, as noted:
          version() -> pb.VersionResponse
          status(verbose=False) -> pb.StatusResponse
          run_pod_sandbox(config: pb.PodSandboxConfig, runtime_handler="") -> str (sandbox id)
          stop_pod_sandbox(pod_sandbox_id) -> None
          remove_pod_sandbox(pod_sandbox_id) -> None
          pod_sandbox_status(pod_sandbox_id, verbose=False) -> pb.PodSandboxStatusResponse
          list_pod_sandbox(*, id=None, state=None, label_selector=None) -> list[pb.PodSandbox]
              state: pb.SANDBOX_READY | pb.SANDBOX_NOTREADY
          create_container(pod_sandbox_id, config: pb.ContainerConfig,
                           sandbox_config: pb.PodSandboxConfig) -> str (container id)
          start_container(container_id) -> None
          stop_container(container_id, timeout: int) -> None   # seconds of grace, then SIGKILL
          remove_container(container_id) -> None
          list_containers(*, id=None, state=None, pod_sandbox_id=None,
                          label_selector=None) -> list[pb.Container]
              state: pb.CONTAINER_CREATED | CONTAINER_RUNNING | CONTAINER_EXITED | CONTAINER_UNKNOWN
          container_status(container_id, verbose=False) -> pb.ContainerStatusResponse
          exec_sync(container_id, cmd: list[str], timeout: int = 10) -> ExecResult
              ExecResult(exit_code: int, stdout: bytes, stderr: bytes)   (a dataclass)
          exec(container_id, cmd, *, tty=False, stdin=False, stdout=True, stderr=True) -> str (URL)
              e.g. http://127.0.0.1:PORT/exec/TOKEN on containerd's streaming server; it speaks
              SPDY and WebSocket (subprotocol v4.channel.k8s.io: first byte of each binary frame
              is the stream, 0 stdin, 1 stdout, 2 stderr, 3 a metav1.Status JSON at the end;
              tests/integration/runtime/test_pods.py websocket_exec shows a client)
          container_stats(container_id) -> pb.ContainerStats
          list_container_stats(*, id=None, pod_sandbox_id=None, label_selector=None)
              -> list[pb.ContainerStats]
          image_status(image: str) -> pb.Image | None      (None when absent)
          list_images(image: str | None = None) -> list[pb.Image]
          pull_image(image: str, sandbox_config=None) -> str (image ref)
          remove_image(image: str) -> None
          attach(container_id, ...) -> str (URL); port_forward(pod_sandbox_id, ports) -> str (URL)
          reopen_container_log(container_id) -> None; image_fs_info() -> pb.ImageFsInfoResponse
          update_runtime_config(pod_cidr) -> None
          runtime_config() -> pb.RuntimeConfigResponse  (UNIMPLEMENTED on containerd 1.6)
          get_container_events() -> AsyncIterator[pb.ContainerEventResponse]
              (checked: containerd 1.6.20 answers UNIMPLEMENTED -- the first iteration raises
               CRIError(code=UNIMPLEMENTED); relist instead)
        Errors seen on containerd 1.6: a missing image at CreateContainer, a missing binary at
        StartContainer or ExecSync are CRIError (code UNKNOWN/NOT_FOUND, details name the object);
        a non-zero exit of an ExecSync command is a result (ExecResult.exit_code), not an error.
        Verbose statuses carry containerd's JSON in resp.info["info"] (with "pid").
    CRIError(Exception): .call (e.g. "CreateContainer"), .target (pod/container id or name),
        .code (grpc.StatusCode), .details (str). `CRIError.not_found` property for NOT_FOUND.

nodeagent.runtime.podconfig (pure functions, no I/O; Pod is a plain JSON dict)
    sandbox_config(pod, *, attempt=0, log_directory, dns_config=None (pb.DNSConfig or dict with
                   servers/searches/options), cgroup_parent="", hostname=None) -> pb.PodSandboxConfig
    container_config(pod, container (dict from spec.containers), *, attempt=0,
                     env=[(name, value)] or [{"name":, "value":}],
                     mounts=[pb.Mount or dict(container_path, host_path, readonly)],
                     restart_count=None (= attempt), image=None (overrides container.image, e.g. with
                     the id ImageStatus/PullImage gave), oom_score_adj=None,
                     spec_hash=None (the io.kubernetes.container.hash annotation; default
                     container_hash(container); the kubelet passes the hash its plan compares))
                     -> pb.ContainerConfig
    port_mappings(pod) -> every declared container port (host_port 0 when unset), as upstream
    namespace_options(pod), linux_resources(container), container_hash(container) -> hex
    container_log_path(container_name, attempt) -> "<name>/<attempt>.log" (relative to the
        sandbox's log_directory); pod_log_directory(logs_root, pod) ->
        "<logs_root>/<ns>_<name>_<uid>"
    Labels: io.kubernetes.pod.{name,namespace,uid}, io.kubernetes.container.name; annotations
        io.kubernetes.container.{hash,restartCount,terminationMessagePath,...}.
    parse_cpu(q) -> millicores, parse_memory(q) -> bytes (Kubernetes quantities).

nodeagent.runtime.containerd
    ManagedContainerd(data_dir, netns: str | None = None, cni_bin_dir=..., cni_conf_dir=...,
                      sandbox_image="nodeagent.local/pause:1", stream_address="127.0.0.1",
                      stream_port=0)
        await start(timeout=60); .endpoint ("unix://<data_dir>/containerd/containerd.sock");
        .socket (Path); .config_path; .log_path; .running. start() imports the images from the
        image cache when containerd lacks them (building the cache if needed) and waits until
        the CRI shows them. cni dirs default to <data_dir>/cni/{bin,net.d}.
        await stop(cleanup=True): StopPodSandbox+RemovePodSandbox for every pod (CNI DEL runs),
            SIGTERM containerd, kill leftover shims/containers, unmount everything under data_dir.
        await stop(cleanup=False): only containerd stops; pods keep running and a later start()
            on the same data_dir finds them again (a kubelet restart keeps its pods).
        Everything (root, state, runc root, sockets, pod netns mounts) lives under
        data_dir/containerd, so many can run at once. The data dir must be short (socket path
        <= 100 bytes). The exec/attach streaming server listens on stream_address:stream_port
        INSIDE the netns containerd runs in (port 0: any free port; Exec returns the real URL).

nodeagent.runtime.images
    PAUSE_IMAGE = "nodeagent.local/pause:1"; TOOLBOX_IMAGE = "nodeagent.local/toolbox:1"
    build_all(cache_dir=None) -> dict[name, BuiltImage]   (idempotent, content addressed)
        BuiltImage: name, layout, archive (tar for ctr import), manifest_digest, config_digest
        (= the CRI image id), changed
    built_images(cache_dir=None) -> dict[name, BuiltImage] | None   (read the cache, no build)
    await import_images(address (socket path or unix://), names=None) -> list of names imported
        (ctr -n k8s.io images import; skipped when containerd has the same digest)
    image_cache_dir() -> Path ($NODEAGENT_IMAGE_CACHE, default <repo>/build/images)

Toolbox image commands (busybox applets in /bin: sh, httpd, nc, wget, ip, nslookup, sleep, cat,
    echo, ls, ps, hostname, env, ...). Default CMD ["sh"].
    /bin/web [PORT]: writes `$(hostname)` to /www/index.html, then `exec httpd -f -p PORT -h /www`
    (PORT defaults to 80), so each backend answers with its own pod name.
"""
