"""Objects a cluster starts with besides what the apiserver makes itself: the IngressClass of
`nodeagent ingress`, marked default (as k3s's Traefik chart installs its own), so that
`kubectl create ingress` without --class is served."""

from __future__ import annotations

INGRESS_CLASS = "nodeagent"
INGRESS_CONTROLLER = "nodeagent.io/ingress"
LB_POOL = "192.168.56.224/28"  # on the underlay (192.168.56.0/24), above every node address

INGRESS_CLASS_MANIFEST = f"""\
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: {INGRESS_CLASS}
  annotations:
    ingressclass.kubernetes.io/is-default-class: "true"
spec:
  controller: {INGRESS_CONTROLLER}
"""
