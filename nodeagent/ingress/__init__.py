"""`nodeagent ingress`: an Ingress controller on every node (host network, like kube-proxy) whose data
plane is HAProxy from Debian, configured from Ingress, IngressClass, Service, EndpointSlice and
Secret objects (model.py: the rules; render.py: the config text; haproxy.py: the process, its
checks, reloads and runtime API; controller.py: the loop; certs.py, metrics.py)."""
