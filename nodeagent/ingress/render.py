"""ProxyConfig -> haproxy.cfg text (HAProxy 2.6, configuration.txt).

One frontend binds HTTP and HTTPS. The host group is picked by ACLs on the lower-cased Host
header without its port; inside a group the `use_backend` lines come in the model's precedence
order, so HAProxy's first match is the Ingress spec's winner; each group ends with its fallback so
that no request of a known host falls through to another group. Hosts under a tls section are
redirected from HTTP to HTTPS with 308, as ingress-nginx's ssl-redirect.

Each backend has `slots` server lines: the endpoints first, then disabled placeholders that the
runtime API fills (`set server B/sN addr IP port P; set server B/sN state ready`) when pods come, so
scaling never needs a reload until the slots run out (as the HAProxy Kubernetes Ingress
Controller's server-slots). `fingerprint` is the text without the endpoints plus the certificates'
digests: it changes exactly when a reload is needed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from nodeagent.ingress.model import Backend, HostGroup, ProxyConfig, Route

NOT_FOUND_BACKEND = "_default_404"
PLACEHOLDER = ("127.0.0.1", 1)
MIN_SLOTS = 8


@dataclass(frozen=True)
class Listen:
    address: str = "0.0.0.0"
    http_port: int = 80
    https_port: int = 443
    run_dir: Path = Path("/run/nodeagent-ingress")
    hard_stop_after: int = 30  # seconds an old worker may keep finishing requests after a reload
    maxconn: int = 4096  # ~2 fds per connection: fits a 20000-fd hard limit with room


def slot_count(n: int, current: int = 0) -> int:
    """Servers to declare for n endpoints: a power of two >= max(n, 8); kept while n fits and is
    above a quarter of it, so scaling back and forth does not reload."""
    if current and n <= current and (n > current // 4 or current == MIN_SLOTS):
        return current
    size = MIN_SLOTS
    while size < n:
        size *= 2
    return size


def quote(word: str) -> str:
    """A single-quoted HAProxy word: no escapes or variables are interpreted inside (the model drops
    paths with a single quote)."""
    return "'" + word + "'"


def wildcard_regex(host: str) -> str:
    return "^[^.]+" + re.escape(host[1:]) + "$"


def cert_path(run_dir: Path, name: str, digest: str) -> Path:
    return run_dir / "certs" / f"{name}-{digest}.pem"


def crt_list_text(cfg: ProxyConfig, run_dir: Path) -> str:
    lines = []
    for c in sorted(cfg.certificates, key=lambda c: c.name):
        lines.append(" ".join([str(cert_path(run_dir, c.name, c.digest)), *c.hosts]))
    return "\n".join(lines) + ("\n" if lines else "")


def crt_list_path(cfg: ProxyConfig, run_dir: Path) -> Path:
    digest = hashlib.sha256(crt_list_text(cfg, run_dir).encode()).hexdigest()[:12]
    return run_dir / f"crt-list-{digest}.txt"


def _path_acl(name: str, r: Route) -> list[str]:
    if r.regex:
        return [f"    acl {name} path -m reg {quote(r.path)}"]
    if r.path_type == "Exact":
        return [f"    acl {name} path -m str {quote(r.path)}"]
    if r.path_type == "Prefix":
        if r.path == "/":
            return []
        return [f"    acl {name} path -m str {quote(r.path)}", f"    acl {name} path -m beg {quote(r.path + '/')}"]
    return [] if r.path == "/" else [f"    acl {name} path -m beg {quote(r.path)}"]


def _group(i: int, g: HostGroup, default: str) -> list[str]:
    lines = [f"    # host {g.host or '*'}"]
    cond = ""
    if g.host:
        match = f"-m reg -i {quote(wildcard_regex(g.host))}" if g.wildcard else f"-m str {quote(g.host)}"
        lines.append(f"    acl h{i} var(txn.host) {match}")
        cond = f"h{i}"
        if g.tls:
            lines.append(f"    http-request redirect scheme https code 308 if !{{ ssl_fc }} {cond}")
    for j, r in enumerate(g.routes):
        acl = _path_acl(f"p{i}_{j}", r)
        lines += acl
        terms = " ".join(t for t in (cond, f"p{i}_{j}" if acl else "") if t)
        lines.append(f"    use_backend {r.backend} if {terms}" if terms else f"    use_backend {r.backend}")
    if g.host:
        lines.append(f"    use_backend {g.fallback or default} if {cond}")
    return lines


def _backend(b: Backend, slots: int, with_servers: bool) -> list[str]:
    lines = [f"backend {b.name}", f"    # ingress {b.ingress} -> service {b.namespace}/{b.service} port {b.port}",
             "    balance roundrobin"]
    servers = b.servers if with_servers else []
    for n in range(1, slots + 1):
        if n <= len(servers):
            ip, port = servers[n - 1]
            lines.append(f"    server s{n} {ip}:{port}")
        else:
            lines.append(f"    server s{n} {PLACEHOLDER[0]}:{PLACEHOLDER[1]} disabled")
    return lines


def render(cfg: ProxyConfig, listen: Listen, slots: dict[str, int], with_servers: bool = True) -> str:
    default = cfg.default_backend or NOT_FOUND_BACKEND
    run = listen.run_dir
    https = f"    bind {listen.address}:{listen.https_port} ssl crt {run / 'certs' / 'default.pem'}"
    if cfg.certificates:
        https += f" crt-list {crt_list_path(cfg, run)}"
    out = [
        "# Written by `nodeagent ingress` from Ingress objects; every change here is overwritten.",
        "global",
        f"    stats socket {run / 'haproxy.sock'} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    hard-stop-after {listen.hard_stop_after}s",
        f"    maxconn {listen.maxconn}",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2",
        "    tune.ssl.default-dh-param 2048",
        "",
        "defaults",
        "    mode http",
        "    option forwardfor",
        "    option redispatch",
        "    retries 2",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 15s",
        "    timeout queue 5s",
        "",
        "frontend ingress",
        f"    bind {listen.address}:{listen.http_port}",
        https + " alpn h2,http/1.1",
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
        "    http-request set-header X-Forwarded-Proto https if { ssl_fc }",
        "    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
    ]
    for i, g in enumerate(cfg.groups):
        out += _group(i, g, default)
    out += [f"    default_backend {default}", "",
            f"backend {NOT_FOUND_BACKEND}",
            '    http-request return status 404 content-type text/plain string "default backend - 404"', ""]
    for name in sorted(cfg.backends):
        out += _backend(cfg.backends[name], slots.get(name, MIN_SLOTS), with_servers) + [""]
    return "\n".join(out)


def fingerprint(cfg: ProxyConfig, listen: Listen, slots: dict[str, int]) -> str:
    h = hashlib.sha256(render(cfg, listen, slots, with_servers=False).encode())
    for c in sorted(cfg.certificates, key=lambda c: c.name):
        h.update(f"{c.name}:{c.digest}".encode())
    return h.hexdigest()
