"""The embedded apiserver (`nodeagent apiserver`), issue 2.

Modules, from the wire inwards:
  command.py        the `apiserver` and `kubeconfig` subcommands
  server.py         aiohttp app, TLS, the request path: authenticate and impersonate (auth/) ->
                    authorize (auth/: system:masters, Node, RBAC) -> the verb (verbs.py) ->
                    admission (admission/) -> registry; the audit log (auth/audit.py)
  auth/             users, authenticators, the Node and RBAC authorizers, bootstrap policy, service
                    account tokens, impersonation, the review APIs, audit
  verbs.py          get/list/watch/create/update/patch/delete and subresources; wire.py: request
                    bodies, options and JSON responses
  requestinfo.py    URL -> (group, version, namespace, resource, name, subresource, verb)
  discovery.py      /api, /apis (legacy and aggregated v2); openapi.py: the OpenAPI v3 kubectl needs
  tables.py         server-side Table output; protobuf.py: kubectl's protobuf request bodies
  kubelet_proxy.py  pods/log, pods/exec, pods/attach and pods/portforward forwarded to the pod's kubelet
  registry/         object semantics: a generic store and one strategy per kind (registry/__init__.py
                    says where a new kind goes), subresources, watch, the apiserver's own loops
  defaults.py, validation.py   defaulting and validation the strategies call
  apply.py          server-side apply (simplified)
  allocators.py     ClusterIP and NodePort allocation (bitmaps, one transaction per write)
  store.py          the Store protocol; memory_store.py (in memory) and sqlite_store.py (the default)
  pki.py, tokens.py, kubeconfig.py, metrics.py, gcpolicy.py, errors.py

The layers (.importlinter checks them): cli > cluster > the apiserver | the components > runtime >
client > machinery. This package imports only nodeagent.machinery (kinds, quantities, selectors,
patches) and the leaf modules (clock); nothing but cli.py, cluster/ and tests imports it. Keep this
file import-free.
"""
