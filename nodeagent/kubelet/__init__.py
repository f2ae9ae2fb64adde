"""nodeagent.kubelet: the node agent that runs the pods bound to its node through the CRI.

Modules, in the order a pod meets them:
    command.py / app.py   `nodeagent kubelet`: flags, then the process (runtime, node, pods, server)
    node.py               Node registration, node status (10 s on change, 5 min otherwise), Lease
    kubelet.py            pod informer (spec.nodeName=N), one worker per pod, sync_pod's steps,
                          graceful termination and delete confirmation, orphan clean-up
    actions.py            the pure plan: compute_pod_actions(pod, runtime status) -> PodActions
    pleg.py               relist every second, old/current records -> lifecycle events, pod cache
    probes.py             liveness / readiness / startup workers (exec, httpGet, tcpSocket)
    env.py, dns.py, volumes.py   what a container gets: env, resolv.conf, mounts
    status.py             the Pod status (phase, conditions, container statuses), pure
    backoff.py            CrashLoopBackOff (10 s doubling to 5 min)
    server.py, logs.py    the HTTPS endpoint: /healthz, /metrics, /containerLogs, /exec
    runtime_service.py    the runtime operations the kubelet needs (a Protocol); cri_runtime.py
                          implements it over nodeagent.runtime, the tests' fake CRI in memory
    model.py, clock.py, metrics.py, instrumented.py, config.py   records, clock, metrics, settings
"""
