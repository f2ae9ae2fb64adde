"""Object semantics over the Store, shaped as upstream's generic registry and strategies.

  registry.py     Registry: one GenericStore per kind, the allocators, admission, the loops
  generic.py      GenericStore: create / update / guaranteed update / delete / list, written once
  strategy.py     Strategy: the hooks a kind fills in (prepare, validate, generation, deletion ...)
  strategies/     one module per kind or family, and STRATEGIES, the table of served kinds
  subresources.py scale, pods/binding, pods/eviction
  watch.py        WatchSession: one watch request's filtered, batched events
  loops.py        bootstrap (system namespaces, the kubernetes Service), namespace finalizer,
                  event expiry, the kubernetes endpoints reconciler
  options.py      DeleteOptions, ListOptions, WriteContext and metadata helpers

A new kind: its Kind in nodeagent/machinery/kinds.py, a module in strategies/ with its Strategy
subclass (rules, defaults, validation, table columns), one row in strategies.STRATEGIES.
"""

from nodeagent.api.registry.options import (
    DeleteOptions,
    ListOptions,
    ListResult,
    WatchEvent,
    WriteContext,
    copy_obj,
    now_rfc3339,
    resource_key,
)
from nodeagent.api.registry.registry import Registry
from nodeagent.api.registry.watch import WatchSession

__all__ = ["DeleteOptions", "ListOptions", "ListResult", "Registry", "WatchEvent", "WatchSession",
           "WriteContext", "copy_obj", "now_rfc3339", "resource_key"]
