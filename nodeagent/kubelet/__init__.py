"""nodeagent.kubelet: the node agent that runs the pods bound to its node through the CRI.

Modules, in the order a pod meets them:
    command.py / app.py   `nodeagent kubelet`: flags, then the process (runtime, node, pods, server)
    node.py               Node registration, node status (10 s on change, 5 min otherwise), Lease
    kubelet.py            wiring: the pod informer (spec.nodeName=N), the PLEG and the probes feed
                          the pod workers; routes each worker's sync to sync.py or termination.py
    pod_workers.py        one serialized worker per pod: wake-ups, periodic syncs, retries, the end
    sync.py               SyncPod: one runtime read, the plan, then upstream's numbered steps
    actions.py            the pure plan: compute_pod_actions(pod, runtime status) -> PodActions
                          (sandbox changes, restarts, container hash changes, init containers)
    containers.py         start a container (back-off, image, env, mounts), kill one, kill a pod
    termination.py        graceful termination and delete confirmation; teardown of removed pods
    status_manager.py     the status written after a sync (probe results, waiting reasons,
                          termination messages), only when it changed; status.py builds it, pure
    housekeeping.py       on a timer: orphaned runtime pods, running gauges, log rotation
    pleg.py, podstatus.py relist every second into lifecycle events and the pod cache; one pod's read
    probes.py             liveness / readiness / startup workers (exec, httpGet, tcpSocket)
    env.py, dns.py, volumes.py   what a container gets: env, resolv.conf, mounts
    backoff.py            CrashLoopBackOff (10 s doubling to 5 min)
    server.py, logs.py    the HTTPS endpoint: /healthz, /metrics, /containerLogs, /exec
    runtime_service.py    the runtime operations the kubelet needs (a Protocol), with a Pod and what
                          the node resolved as input; cri_runtime.py implements it over
                          nodeagent.runtime and is the only module that turns Pods into CRI configs
                          (the tests' fake CRI implements it in memory)
    model.py, metrics.py, instrumented.py, config.py   records (and the container hash),
                          metrics, settings (the clock is nodeagent/clock.py)
"""
