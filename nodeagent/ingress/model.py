"""From Ingresses, Services, EndpointSlices and Secrets to what the proxy must do: pure data, no I/O.

The routing rules are those of the Ingress spec (networking.k8s.io/v1 docs, "Path types" and
"Hostname wildcards"), with ingress-nginx's choices where the spec leaves room:

- A request's host (the Host header, lower case, port stripped) picks one host group: an exact
  host first, else a `*.suffix` wildcard that matches exactly one label, else the rules without a
  host. Inside the group, the longest matching path wins and, at equal length, Exact beats Prefix
  beats ImplementationSpecific; Prefix matches per path element (/a matches /a, /a/ and /a/x, not
  /ab); ImplementationSpecific is a plain string prefix, as nginx's `location /a`, or a PCRE
  regex with the annotation nodeagent.io/use-regex: "true" (as ingress-nginx's use-regex).
- A request no path of its group matches goes to that host's fallback: the defaultBackend of the
  oldest Ingress with rules for the host and a defaultBackend, else the cluster's default (the
  defaultBackend of the oldest Ingress that has one), else a 404.
- Backends are a Service port by number or name, resolved to the EndpointSlice port of that
  name, and served from the ready endpoints' pod IPs directly (as ingress-nginx does), not
  through the ClusterIP. A missing Service, port or Secret is an Error on that Ingress (an Event),
  never a reason to drop the rest: its paths answer 503 (no endpoints) or use the default
  certificate.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

ANNOTATION_USE_REGEX = "nodeagent.io/use-regex"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PATH_TYPE_ORDER = {"Exact": 0, "Prefix": 1, "ImplementationSpecific": 2}


@dataclass(frozen=True)
class Problem:
    """Something wrong with one Ingress: an Event on it (reason, message) and a metric."""

    ingress: str  # ns/name
    reason: str
    message: str


@dataclass
class Backend:
    """One HAProxy backend: an Ingress's reference to a Service port, and its servers."""

    name: str
    namespace: str
    ingress: str
    service: str
    port: str                      # "80" or "http" as written in the Ingress
    servers: list[tuple[str, int]] = field(default_factory=list)


@dataclass(frozen=True)
class Route:
    path: str          # normalised (a Prefix has no trailing slash, "/" stays "/")
    path_type: str     # Exact | Prefix | ImplementationSpecific
    regex: bool
    backend: str       # Backend.name
    ingress: str       # ns/name, for precedence ties and errors


@dataclass
class HostGroup:
    host: str                      # "" for rules without a host
    wildcard: bool
    routes: list[Route] = field(default_factory=list)
    fallback: str | None = None    # Backend.name; None: the default backend or 404
    tls: bool = False              # covered by an Ingress's tls section: HTTP is redirected


@dataclass(frozen=True)
class Certificate:
    name: str                      # ns_secret (a file name)
    pem: bytes                     # certificate chain then key
    hosts: tuple[str, ...]         # SNI filters; empty: the certificate's own names

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.pem).hexdigest()[:12]


@dataclass
class ProxyConfig:
    """Everything the renderer needs; `servers` of each backend are the only part that may change
    without a reload."""

    groups: list[HostGroup] = field(default_factory=list)
    backends: dict[str, Backend] = field(default_factory=dict)
    default_backend: str | None = None
    certificates: list[Certificate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ingresses: list[str] = field(default_factory=list)  # ns/name of every Ingress served


def key(obj: Obj) -> str:
    md = obj.get("metadata") or {}
    return f"{md.get('namespace', '')}/{md.get('name', '')}"


def _created(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("creationTimestamp") or "")


def host_matches(pattern: str, host: str) -> bool:
    """A `*.suffix` pattern matches exactly one label before the suffix (the spec: *.foo.com matches
    bar.foo.com, not baz.bar.foo.com nor foo.com); anything else is an exact match."""
    if pattern.startswith("*."):
        suffix = pattern[1:]
        return host.endswith(suffix) and len(host) > len(suffix) and "." not in host[: -len(suffix)]
    return pattern == host


def normalise_path(path: str, path_type: str) -> str:
    if path_type == "Prefix":
        stripped = path.rstrip("/")
        return stripped or "/"
    return path or "/"


def path_matches(route: Route, path: str) -> bool:
    """What the rendered ACLs do, for tests and for `explain`: Exact is equality, Prefix is per path
    element, ImplementationSpecific a string prefix (regexes are the proxy's; not matched here)."""
    if route.path_type == "Exact":
        return path == route.path
    if route.path_type == "Prefix":
        return route.path == "/" or path == route.path or path.startswith(route.path + "/")
    return path.startswith(route.path)


def route_order(r: Route, created: dict[str, str]) -> tuple[int, int, str, str]:
    """The longest path first; at equal length Exact, then Prefix, then ImplementationSpecific; then
    the oldest Ingress (ingress-nginx resolves duplicates in favour of the oldest)."""
    return (-len(r.path), PATH_TYPE_ORDER.get(r.path_type, 3), created.get(r.ingress, ""), r.ingress)


def select(cfg: ProxyConfig, host: str, path: str) -> str | None:
    """The backend a request goes to (None: the 404 default), by the rules above; the renderer emits
    the same order, so unit tests of precedence test this and the text together."""
    host = host.split(":", 1)[0].lower()
    group = next((g for g in cfg.groups if not g.wildcard and g.host and g.host == host), None)
    group = group or next((g for g in cfg.groups if g.wildcard and host_matches(g.host, host)), None)
    group = group or next((g for g in cfg.groups if not g.host), None)
    if group is None:
        return cfg.default_backend
    for r in group.routes:
        if not r.regex and path_matches(r, path):
            return r.backend
    return group.fallback or cfg.default_backend


# --- endpoints -------------------------------------------------------------------------------
def service_port(svc: Obj, ref: Obj) -> Obj | None:
    """The Service port an Ingress backend names, by number or by name."""
    for p in (svc.get("spec") or {}).get("ports") or []:
        if ref.get("name") and p.get("name") == ref.get("name"):
            return dict(p)
        if ref.get("number") and p.get("port") == ref.get("number"):
            return dict(p)
    return None


def ready_servers(slices: list[Obj], port_name: str) -> list[tuple[str, int]]:
    """Pod IPs and target ports of the ready endpoints (conditions.ready unset counts as ready, as
    upstream's EndpointSlice consumers read it)."""
    out: set[tuple[str, int]] = set()
    for s in slices:
        if s.get("addressType", "IPv4") != "IPv4":
            continue
        port = next((p.get("port") for p in s.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if not port:
            continue
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:
                out.add((str(addr), int(port)))
    return sorted(out, key=lambda a: (ipaddress.ip_address(a[0]), a[1]))


@dataclass
class World:
    """The informers' caches, as plain dicts keyed ns/name (slices grouped by their Service)."""

    ingresses: list[Obj]
    services: dict[str, Obj]
    slices: dict[str, list[Obj]]
    secrets: dict[str, Obj]

    @staticmethod
    def slices_by_service(slices: list[Obj]) -> dict[str, list[Obj]]:
        out: dict[str, list[Obj]] = {}
        for s in slices:
            md = s.get("metadata") or {}
            svc = (md.get("labels") or {}).get(SERVICE_NAME_LABEL)
            if svc:
                out.setdefault(f"{md.get('namespace', '')}/{svc}", []).append(s)
        return out


def backend_name(ns: str, ingress: str, service: str, port: str) -> str:
    """A HAProxy proxy name: Kubernetes names have no '_', so '_' keeps the parts apart."""
    return f"{ns}_{ingress}_{service}_{port}"


class Builder:
    """One pass over the World; collects Problems instead of raising."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.cfg = ProxyConfig()
        self.created = {key(i): _created(i) for i in world.ingresses}

    def build(self) -> ProxyConfig:
        ingresses = sorted(self.world.ingresses, key=lambda i: (_created(i), key(i)))
        groups: dict[str, HostGroup] = {}
        tls_hosts: list[str] = []
        for ing in ingresses:
            k = key(ing)
            self.cfg.ingresses.append(k)
            spec = ing.get("spec") or {}
            use_regex = ((ing.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_USE_REGEX) == "true"
            default = self._backend(ing, spec["defaultBackend"], "spec.defaultBackend") \
                if spec.get("defaultBackend") else None
            if default and self.cfg.default_backend is None:
                self.cfg.default_backend = default
            for rule in spec.get("rules") or []:
                host = str(rule.get("host") or "").lower()
                g = groups.get(host)
                if g is None:
                    g = groups[host] = HostGroup(host, host.startswith("*."))
                if default and g.fallback is None and host:
                    g.fallback = default
                for p in (rule.get("http") or {}).get("paths") or []:
                    ptype = p.get("pathType") or "ImplementationSpecific"
                    path = normalise_path(str(p.get("path") or ""), ptype)
                    if "'" in path:  # a single-quoted HAProxy word cannot hold one
                        self.problem(k, "InvalidPath", f"path {path!r} contains a single quote; not served")
                        continue
                    b = self._backend(ing, p.get("backend") or {}, f"path {path}")
                    if b is None:
                        continue
                    g.routes.append(Route(path, ptype, use_regex and ptype == "ImplementationSpecific", b, k))
            for tls in spec.get("tls") or []:
                tls_hosts += [str(h).lower() for h in tls.get("hosts") or []]
                self._certificate(ing, tls)
        for g in groups.values():
            g.routes.sort(key=lambda r: route_order(r, self.created))
            g.tls = bool(g.host) and any(host_matches(t, g.host) or t == g.host for t in tls_hosts)
        # exact hosts, then wildcards (longest suffix first), then the host-less rules
        self.cfg.groups = sorted(groups.values(), key=lambda g: (not g.host, g.wildcard, -len(g.host), g.host))
        return self.cfg

    def problem(self, ingress: str, reason: str, message: str) -> None:
        self.cfg.problems.append(Problem(ingress, reason, message))

    def _backend(self, ing: Obj, ref: Obj, where: str) -> str | None:
        k = key(ing)
        ns = (ing.get("metadata") or {}).get("namespace") or ""
        svc_ref = ref.get("service")
        if not isinstance(svc_ref, dict):
            self.problem(k, "UnsupportedBackend", f"{where}: only service backends are supported")
            return None
        name = str(svc_ref.get("name") or "")
        port_ref = svc_ref.get("port") or {}
        port_label = str(port_ref.get("name") or port_ref.get("number") or "")
        bname = backend_name(ns, (ing.get("metadata") or {}).get("name", ""), name, port_label)
        if bname in self.cfg.backends:
            return bname
        b = self.cfg.backends[bname] = Backend(bname, ns, k, name, port_label)
        svc = self.world.services.get(f"{ns}/{name}")
        if svc is None:
            self.problem(k, "ServiceNotFound", f"{where}: service {ns}/{name} not found; it answers 503")
            return bname
        sp = service_port(svc, port_ref)
        if sp is None:
            self.problem(k, "ServicePortNotFound",
                         f"{where}: service {ns}/{name} has no port {port_label}; it answers 503")
            return bname
        b.servers = ready_servers(self.world.slices.get(f"{ns}/{name}", []), str(sp.get("name") or ""))
        return bname

    def _certificate(self, ing: Obj, tls: Obj) -> None:
        k = key(ing)
        ns = (ing.get("metadata") or {}).get("namespace") or ""
        secret_name = tls.get("secretName")
        if not secret_name:
            return  # served with the default certificate
        secret = self.world.secrets.get(f"{ns}/{secret_name}")
        if secret is None:
            self.problem(k, "SecretNotFound", f"secret {ns}/{secret_name} not found; using the default certificate")
            return
        try:
            pem = tls_pem(secret)
        except ValueError as e:
            self.problem(k, "InvalidSecret", f"secret {ns}/{secret_name}: {e}; using the default certificate")
            return
        name = f"{ns}_{secret_name}"
        hosts = tuple(sorted({str(h).lower() for h in tls.get("hosts") or []}))
        existing = next((c for c in self.cfg.certificates if c.name == name), None)
        if existing is not None:
            self.cfg.certificates.remove(existing)
            hosts = tuple(sorted(set(hosts) | set(existing.hosts)))
        self.cfg.certificates.append(Certificate(name, pem, hosts))


def tls_pem(secret: Obj) -> bytes:
    """tls.crt + tls.key of a kubernetes.io/tls Secret as one PEM (what HAProxy's crt takes), after
    checking that they parse and that the key belongs to the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if secret.get("type") not in ("kubernetes.io/tls", None):
        raise ValueError(f"type is {secret.get('type')!r}, not kubernetes.io/tls")
    data = secret.get("data") or {}
    try:
        crt = base64.b64decode(data.get("tls.crt") or "")
        key_pem = base64.b64decode(data.get("tls.key") or "")
    except (ValueError, TypeError) as e:
        raise ValueError(f"tls.crt or tls.key is not base64: {e}") from None
    if not crt or not key_pem:
        raise ValueError("tls.crt and tls.key are required")
    try:
        certs = x509.load_pem_x509_certificates(crt)
        private = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as e:
        raise ValueError(f"cannot parse the certificate or key: {e}") from None
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.PEM
    if certs[0].public_key().public_bytes(enc, fmt) != private.public_key().public_bytes(enc, fmt):
        raise ValueError("tls.key does not match the certificate in tls.crt")
    return crt.rstrip(b"\n") + b"\n" + key_pem.rstrip(b"\n") + b"\n"
