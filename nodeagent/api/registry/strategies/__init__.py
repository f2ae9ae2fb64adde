"""One strategy per kind (or family of kinds), each in its own module; this table is the one place
that says which kinds the apiserver stores and with which rules. Adding a kind: its Kind in
nodeagent/machinery/kinds.py (the client needs the URL too), a module here with its Strategy
subclass, and one row below."""

from __future__ import annotations

from nodeagent.api.registry.strategies.bindings import BindingStrategy
from nodeagent.api.registry.strategies.endpoints import EndpointSliceStrategy, EndpointsStrategy
from nodeagent.api.registry.strategies.events import EventStrategy
from nodeagent.api.registry.strategies.ingresses import IngressClassStrategy, IngressStrategy
from nodeagent.api.registry.strategies.leases import LeaseStrategy
from nodeagent.api.registry.strategies.namespaces import NamespaceStrategy
from nodeagent.api.registry.strategies.nodes import NodeStrategy
from nodeagent.api.registry.strategies.pods import PodStrategy
from nodeagent.api.registry.strategies.rbac import RoleBindingStrategy, RoleStrategy
from nodeagent.api.registry.strategies.runtimeclasses import RuntimeClassStrategy
from nodeagent.api.registry.strategies.secrets_configmaps import ConfigMapStrategy, SecretStrategy
from nodeagent.api.registry.strategies.serviceaccounts import ServiceAccountStrategy
from nodeagent.api.registry.strategies.services import ServiceStrategy
from nodeagent.api.registry.strategies.workloads import (
    ControllerRevisionStrategy,
    DaemonSetStrategy,
    DeploymentStrategy,
    JobStrategy,
    ReplicaSetStrategy,
)
from nodeagent.api.registry.strategy import Strategy
from nodeagent.machinery import kinds
from nodeagent.machinery.kinds import Kind

STRATEGIES: dict[Kind, type[Strategy]] = {
    kinds.NAMESPACES: NamespaceStrategy,
    kinds.NODES: NodeStrategy,
    kinds.PODS: PodStrategy,
    kinds.SERVICES: ServiceStrategy,
    kinds.ENDPOINTS: EndpointsStrategy,
    kinds.EVENTS: EventStrategy,
    kinds.CONFIGMAPS: ConfigMapStrategy,
    kinds.SECRETS: SecretStrategy,
    kinds.SERVICEACCOUNTS: ServiceAccountStrategy,
    kinds.BINDINGS: BindingStrategy,
    kinds.DEPLOYMENTS: DeploymentStrategy,
    kinds.REPLICASETS: ReplicaSetStrategy,
    kinds.DAEMONSETS: DaemonSetStrategy,
    kinds.CONTROLLERREVISIONS: ControllerRevisionStrategy,
    kinds.JOBS: JobStrategy,
    kinds.ENDPOINTSLICES: EndpointSliceStrategy,
    kinds.LEASES: LeaseStrategy,
    kinds.ROLES: RoleStrategy,
    kinds.CLUSTERROLES: RoleStrategy,
    kinds.ROLEBINDINGS: RoleBindingStrategy,
    kinds.CLUSTERROLEBINDINGS: RoleBindingStrategy,
    kinds.INGRESSES: IngressStrategy,
    kinds.INGRESSCLASSES: IngressClassStrategy,
    kinds.RUNTIME_CLASSES: RuntimeClassStrategy,
}

__all__ = ["STRATEGIES"]
