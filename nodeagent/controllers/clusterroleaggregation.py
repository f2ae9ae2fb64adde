"""ClusterRole aggregation (upstream pkg/controller/clusterroleaggregation): a ClusterRole with an
aggregationRule always holds the rules of the ClusterRoles its selectors match (admin, edit and
view collect the system:aggregate-to-* roles, and any role labelled aggregate-to-* later)."""

from __future__ import annotations

from typing import Any

from nodeagent.controllers.base import Context, Controller
from nodeagent.machinery.kinds import CLUSTERROLES
from nodeagent.machinery.rbac import aggregated_rules, is_aggregated

Obj = dict[str, Any]


class ClusterRoleAggregationController(Controller):
    name = "clusterrole-aggregation"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.roles = ctx.informers.get(CLUSTERROLES)
        # any change may feed an aggregated role: look at all of them (there are few)
        self.roles.add_handlers(on_add=lambda _r: self._all(), on_update=lambda _o, _n: self._all(),
                                on_delete=lambda _r: self._all())

    def _all(self) -> None:
        for r in self.roles.list():
            if is_aggregated(r):
                self.queue.add(r["metadata"]["name"])

    async def reconcile(self, key: str) -> None:
        role = self.roles.get(key)
        if role is None or not is_aggregated(role):
            return
        rules = aggregated_rules(role, self.roles.list())
        if rules != (role.get("rules") or []):
            await self.client.update(CLUSTERROLES, {**role, "rules": rules})
