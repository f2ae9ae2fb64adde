"""Controller expectations (pkg/controller/controller_utils.go ControllerExpectations).

After a ReplicaSet creates or deletes pods, its informer cache is briefly behind its own writes; a
reconcile in that window would count too few pods and create more. So a controller records what it
expects to see, the informer handlers count the arrivals, and the controller does not act on a key
again until they all arrived or the expectations expired (5 minutes upstream).
"""

from __future__ import annotations

from dataclasses import dataclass

from nodeagent.clock import Clock

EXPECTATIONS_TIMEOUT = 300.0


@dataclass
class _Expect:
    adds: int
    dels: int
    at: float
    deleted_uids: set[str]


class Expectations:
    def __init__(self, clock: Clock, timeout: float = EXPECTATIONS_TIMEOUT) -> None:
        self.clock = clock
        self.timeout = timeout
        self._e: dict[str, _Expect] = {}

    def satisfied(self, key: str) -> bool:
        e = self._e.get(key)
        if e is None:
            return True
        if (e.adds <= 0 and e.dels <= 0) or self.clock.now() - e.at > self.timeout:
            del self._e[key]
            return True
        return False

    def expect(self, key: str, adds: int = 0, deleted_uids: set[str] | None = None) -> None:
        uids = set(deleted_uids or ())
        self._e[key] = _Expect(adds, len(uids), self.clock.now(), uids)

    def creation_observed(self, key: str) -> None:
        e = self._e.get(key)
        if e is not None:
            e.adds -= 1

    def creation_failed(self, key: str) -> None:
        self.creation_observed(key)

    def deletion_observed(self, key: str, uid: str) -> None:
        e = self._e.get(key)
        if e is not None and uid in e.deleted_uids:
            e.deleted_uids.discard(uid)
            e.dels -= 1

    def forget(self, key: str) -> None:
        self._e.pop(key, None)
