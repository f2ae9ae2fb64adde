"""The embedded apiserver (`nodeagent apiserver`), issue 2.

Modules, from the wire inwards:
  command.py        the `apiserver` and `kubeconfig` subcommands
  server.py         aiohttp app: TLS, authn (tokens.py), authz (authz.py), content negotiation, verbs
  requestinfo.py    URL -> (group, version, namespace, resource, name, subresource, verb)
  discovery.py      /api, /apis (legacy and aggregated v2); openapi.py: the OpenAPI v3 kubectl needs
  tables.py         server-side Table output; protobuf.py: kubectl's protobuf request bodies
  kubelet_proxy.py  pods/log, pods/exec, pods/attach and pods/portforward forwarded to the pod's kubelet
  registry.py       object semantics: defaulting/validation (defaults.py, validation.py), status,
                    scale and binding subresources, graceful deletion, finalizers, list and watch
  apply.py          server-side apply (simplified)
  allocators.py     ClusterIP and NodePort allocation
  store.py          the Store protocol; sqlite_store.py: the default kine-like SQLite back end
  pki.py, tokens.py, kubeconfig.py, metrics.py, gcpolicy.py, errors.py

Kinds, quantities, selectors and patches live in nodeagent.machinery, shared with the components;
no component imports this package (cli.py and tests excepted). Keep this file import-free.
"""
