"""Pod admission on the node: a new pod beyond --max-pods is rejected, as upstream's
predicateAdmitHandler (pkg/kubelet/lifecycle/predicate.go) does with the scheduler's resource fit.

A pod bound straight to the node (spec.nodeName, no scheduler) can exceed the node's `pods`
capacity; the kubelet then refuses it: a Warning event `OutOfpods` and the status phase Failed,
reason OutOfpods, message "Pod was rejected: Node didn't have enough resource: pods, requested: 1,
used: N, capacity: N" (upstream's rejectPod and InsufficientResourceError texts). Rejected pods
never run; a pod already running here (found in the runtime) is never rejected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from nodeagent.machinery.kinds import PODS

log = logging.getLogger(__name__)

TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class Rejection:
    reason: str
    message: str


def is_terminal(pod: dict[str, Any] | None) -> bool:
    return pod is not None and (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def admit_pod_count(active_pods: int, max_pods: int) -> Rejection | None:
    """The `pods` resource of the fit check: one more pod must fit in the node's capacity."""
    if active_pods + 1 <= max_pods:
        return None
    return Rejection("OutOfpods", f"Node didn't have enough resource: pods, requested: 1, used: {active_pods}, "
                                  f"capacity: {max_pods}")


async def reject_pod(client: Any, recorder: Any, pod: dict[str, Any], rejection: Rejection) -> None:
    """upstream rejectPod: the event, then the terminal status (the uid precondition keeps it off a
    re-created namesake)."""
    from nodeagent.client import NotFound

    md = pod.get("metadata") or {}
    recorder.event(pod, "Warning", rejection.reason, rejection.message)
    log.info("rejected pod pod=%s/%s reason=%s message=%s", md.get("namespace", "default"), md.get("name"),
             rejection.reason, rejection.message)
    status = {"phase": "Failed", "reason": rejection.reason, "message": "Pod was rejected: " + rejection.message}
    try:
        await client.patch(PODS, md["name"], {"metadata": {"uid": md.get("uid")}, "status": status},
                           namespace=md.get("namespace", "default"), patch_type="merge", subresource="status")
    except NotFound:
        pass
    except Exception as e:
        log.warning("writing the rejected pod's status failed pod=%s err=%s", md.get("name"), e)
