"""API machinery shared by the apiserver and every component: the layer below both.

  kinds.py      the resource types served (group, version, kind, plural, scope, subresources)
  quantity.py   resource quantities ("100m", "1Gi") parsed as upstream's resource.Quantity
  selectors.py  label and field selectors: parsing and matching
  patch.py      merge, strategic merge and JSON patch

Upstream keeps these in k8s.io/apimachinery, which both the apiserver and client-go import. This
package imports nothing else of nodeagent (.importlinter, layers contract).
"""
