"""`nodeagent proxy --config FILE`: upstream's KubeProxyConfiguration
(kubeproxy.config.k8s.io/v1alpha1, YAML or JSON) read into the settings our flags carry.

Pure: text in, a frozen `FileConfig` or a `ConfigError` naming the field out. Facts from upstream
(staging/src/k8s.io/kube-proxy/config/v1alpha1/types.go, pkg/proxy/apis/config/v1alpha1/defaults.go
and conversion.go):
- each mode reads its own section's syncPeriod/minSyncPeriod (ipvs -> ipvs, nftables -> nftables,
  anything else -> iptables);
- a zero or absent syncPeriod is 30s; a zero or absent iptables/nftables minSyncPeriod is 1s (so
  "0s" there means 1s, as upstream), an IPVS one stays 0;
- metricsBindAddress defaults to 127.0.0.1:10249 and healthzBindAddress to 0.0.0.0:10256, an
  address without a port gets the default port;
- clusterCIDR is a comma-separated dual-stack pair; detectLocalMode "" means ClusterCIDR.

Where we differ, on purpose: a field this schema does not know is an error (upstream's v1alpha1
decoder retries leniently and only logs a warning), because a misspelt field silently doing nothing
is the failure operators cannot see. Known upstream fields we do not implement are accepted and
listed in `FileConfig.ignored`, except values that would change traffic and that we cannot honour
(nodePortAddresses keywords "primary"/"localhost", detectLocalMode other than ClusterCIDR,
masqueradeAll: true), which are errors.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

API_VERSION = "kubeproxy.config.k8s.io/v1alpha1"
KIND = "KubeProxyConfiguration"
MODES = ("iptables", "nftables", "ipvs")  # = command.MODES (the parser must not import the command)

DEFAULT_METRICS = ("127.0.0.1", 10249)  # upstream ports.ProxyStatusPort
DEFAULT_HEALTHZ = ("0.0.0.0", 10256)  # upstream ports.ProxyHealthzPort
DEFAULT_SYNC_PERIOD = 30.0
DEFAULT_MIN_SYNC_PERIOD = 1.0

# The v1alpha1 schema: a nested dict is a struct whose keys are checked, None a leaf.
# featureGates and logging are maps upstream hands to other packages: taken as leaves.
_CLIENT = {"kubeconfig": None, "acceptContentTypes": None, "contentType": None, "qps": None, "burst": None}
_IPTABLES = {"masqueradeBit": None, "masqueradeAll": None, "localhostNodePorts": None, "snatNodeInternalIP": None,
             "syncPeriod": None, "minSyncPeriod": None}
_IPVS = {"syncPeriod": None, "minSyncPeriod": None, "scheduler": None, "excludeCIDRs": None, "strictARP": None,
         "tcpTimeout": None, "tcpFinTimeout": None, "udpTimeout": None}
_NFTABLES = {"masqueradeBit": None, "masqueradeAll": None, "syncPeriod": None, "minSyncPeriod": None}
_WINKERNEL = {"networkName": None, "sourceVip": None, "enableDSR": None, "rootHnsEndpointName": None,
              "forwardHealthCheckVip": None}
# conntrack.max and udpIdleTimeout left the API, but configs written by older kubeadms still carry them
_CONNTRACK = {"maxPerCore": None, "min": None, "max": None, "tcpEstablishedTimeout": None,
              "tcpCloseWaitTimeout": None, "tcpBeLiberal": None, "udpTimeout": None, "udpStreamTimeout": None}
SCHEMA: dict[str, Any] = {
    "apiVersion": None, "kind": None, "featureGates": None, "clientConnection": _CLIENT, "logging": None,
    "hostnameOverride": None, "bindAddress": None, "healthzBindAddress": None, "metricsBindAddress": None,
    "bindAddressHardFail": None, "enableProfiling": None, "showHiddenMetricsForVersion": None, "mode": None,
    "iptables": _IPTABLES, "ipvs": _IPVS, "nftables": _NFTABLES, "winkernel": _WINKERNEL,
    "detectLocalMode": None, "detectLocal": {"bridgeInterface": None, "interfaceNamePrefix": None},
    "clusterCIDR": None, "nodePortAddresses": None, "oomScoreAdj": None, "conntrack": _CONNTRACK,
    "configSyncPeriod": None, "portRange": None, "windowsRunAsService": None, "udpIdleTimeout": None,
}
# the leaves this proxy reads in every mode (plus the chosen mode's section, see parse); every
# other leaf set to a non-zero value is reported as ignored
USED = frozenset({
    "apiVersion", "kind", "clientConnection.kubeconfig", "hostnameOverride", "healthzBindAddress",
    "metricsBindAddress", "mode", "detectLocalMode", "clusterCIDR", "nodePortAddresses",
})


class ConfigError(ValueError):
    """The file is not a KubeProxyConfiguration this proxy can run with; the message names the field."""


@dataclass(frozen=True)
class BindAddress:
    host: str
    port: int  # 0 = off (our flags' convention)


@dataclass(frozen=True)
class FileConfig:
    mode: str
    kubeconfig: str  # "" when the file names none
    hostname_override: str  # "" = use the hostname
    cluster_cidr: str | None  # the IPv4 CIDR of clusterCIDR; None = no local-traffic detection
    nodeport_addresses: tuple[str, ...]  # () = every local address
    metrics: BindAddress
    healthz: BindAddress
    sync_period: float  # seconds
    min_sync_period: float
    ignored: tuple[str, ...] = ()  # upstream fields set in the file that this proxy does not implement


# -- Go durations (time.ParseDuration, as metav1.Duration unmarshals) ---------------------------
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_TERM = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds from a Go duration: "30s", "1m0s", "1h2m3.5s", "500ms", "-1s", "0". Raises ValueError."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"invalid duration {text!r}")
    s = text
    sign = -1.0 if s[0] == "-" else 1.0
    if s[0] in "+-":
        s = s[1:]
    if s == "0":  # the one unitless value Go accepts
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(s):
        m = _TERM.match(s, pos)
        # Go needs digits before or after the dot; "5" alone is "missing unit"
        if m is None or not (m.group(1) or m.group(2)):
            unitless = re.fullmatch(r"[\d.]+", s[pos:]) is not None
            raise ValueError(f"{'missing unit in' if unitless else 'invalid'} duration {text!r}")
        whole, frac, unit = m.groups()
        total += float(f"{whole or '0'}.{frac or '0'}") * _UNITS[unit]
        pos = m.end()
    return sign * total


# -- reading ------------------------------------------------------------------------------------
def load(path: str) -> FileConfig:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"--config {path}: {e.strerror or e}") from None
    return parse(text, source=path)


def parse(text: str, source: str = "config") -> FileConfig:
    doc = _decode(text, source)
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ConfigError(f"{source}: apiVersion/kind is {doc.get('apiVersion')!r}/{doc.get('kind')!r}; "
                          f"want {API_VERSION}/{KIND}")
    leaves = _check_fields(doc, SCHEMA, "", source)

    def get(path: str, default: Any = None) -> Any:
        value = leaves.get(path)
        return default if value is None else value

    mode = _string(get("mode", ""), "mode", source) or "iptables"  # upstream's Linux default
    if mode not in MODES:
        raise ConfigError(f"{source}: mode: {mode!r} is not supported; use one of {', '.join(MODES)}")
    # upstream's conversion: the section of the chosen mode; ipvs' masqueradeAll lives in iptables
    section = mode if mode in ("ipvs", "nftables") else "iptables"
    masq_section = "nftables" if mode == "nftables" else "iptables"
    masquerade_all = get(f"{masq_section}.masqueradeAll", False)
    if masquerade_all is not False:
        raise ConfigError(f"{source}: {masq_section}.masqueradeAll: {masquerade_all!r} is not supported (this "
                          "proxy masquerades only traffic from outside clusterCIDR); remove it or set false")
    sync = _duration(get(f"{section}.syncPeriod"), f"{section}.syncPeriod", source) or DEFAULT_SYNC_PERIOD
    min_sync = _duration(get(f"{section}.minSyncPeriod"), f"{section}.minSyncPeriod", source)
    if not min_sync and section != "ipvs":
        min_sync = DEFAULT_MIN_SYNC_PERIOD  # upstream defaults a zero iptables/nftables value
    if sync <= 0:
        raise ConfigError(f"{source}: {section}.syncPeriod must be greater than 0")
    if min_sync < 0:
        raise ConfigError(f"{source}: {section}.minSyncPeriod must not be negative")

    local_mode = _string(get("detectLocalMode", ""), "detectLocalMode", source)
    if local_mode not in ("", "ClusterCIDR"):
        raise ConfigError(f"{source}: detectLocalMode: {local_mode!r} is not supported; this proxy detects "
                          "local traffic by clusterCIDR only (use ClusterCIDR or leave it empty)")

    # another mode's section is ignored as upstream ignores it: reported when set
    used = USED | {f"{section}.syncPeriod", f"{section}.minSyncPeriod", f"{masq_section}.masqueradeAll"}
    ignored = tuple(sorted(p for p, v in leaves.items() if p not in used and not _is_zero(v)))
    return FileConfig(
        mode=mode,
        kubeconfig=_string(get("clientConnection.kubeconfig", ""), "clientConnection.kubeconfig", source),
        # upstream's GetHostname: trimmed and lower-cased
        hostname_override=_string(get("hostnameOverride", ""), "hostnameOverride", source).strip().lower(),
        cluster_cidr=_cluster_cidr(_string(get("clusterCIDR", ""), "clusterCIDR", source), source),
        nodeport_addresses=_nodeport_addresses(get("nodePortAddresses", []), source),
        metrics=_bind_address(get("metricsBindAddress", ""), DEFAULT_METRICS, "metricsBindAddress", source),
        healthz=_bind_address(get("healthzBindAddress", ""), DEFAULT_HEALTHZ, "healthzBindAddress", source),
        sync_period=sync,
        min_sync_period=min_sync,
        ignored=ignored,
    )


def _decode(text: str, source: str) -> dict[str, Any]:
    try:
        # JSON first when it looks like JSON: PyYAML (YAML 1.1) trips on tabs that JSON allows
        doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"{source}: not valid YAML or JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: want a {KIND} object, got {type(doc).__name__}")
    return doc


def _check_fields(obj: dict[str, Any], schema: dict[str, Any], prefix: str, source: str) -> dict[str, Any]:
    """The leaves of `obj` by dotted path; an unknown field is an error naming it."""
    leaves: dict[str, Any] = {}
    for key, value in obj.items():
        path = f"{prefix}{key}"
        if not isinstance(key, str) or key not in schema:
            raise ConfigError(f"{source}: unknown field {path!r} (not in {API_VERSION} {KIND})")
        sub = schema[key]
        if sub is None:
            leaves[path] = value
        elif value is None:
            continue  # `iptables: null` is an empty struct
        elif not isinstance(value, dict):
            raise ConfigError(f"{source}: {path}: want an object, got {type(value).__name__}")
        else:
            leaves.update(_check_fields(value, sub, f"{path}.", source))
    return leaves


def _is_zero(value: Any) -> bool:
    """Go's zero values, which is what an untouched field of a generated config holds."""
    if value in (None, "", 0, False, [], {}):
        return True
    if isinstance(value, str):
        try:
            return parse_duration(value) == 0
        except ValueError:
            return False
    if isinstance(value, dict):  # e.g. logging: {options: {json: {infoBufferSize: "0"}}}
        return all(_is_zero(v) for v in value.values())
    return False


def _string(value: Any, path: str, source: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {path}: want a string, got {value!r}")
    return value


def _duration(value: Any, path: str, source: str) -> float:
    if value is None:
        return 0.0
    if not isinstance(value, str):
        raise ConfigError(f"{source}: {path}: want a duration string such as \"30s\", got {value!r}")
    try:
        return parse_duration(value)
    except ValueError as e:
        raise ConfigError(f"{source}: {path}: {e} (examples: \"30s\", \"1m0s\", \"500ms\")") from None


def _cluster_cidr(text: str, source: str) -> str | None:
    """The IPv4 member of clusterCIDR (this proxy is IPv4 only; an IPv6 member is for upstream's
    IPv6 proxier, which we do not have)."""
    found: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            net = ipaddress.ip_network(part, strict=False)
        except ValueError as e:
            raise ConfigError(f"{source}: clusterCIDR: {e}") from None
        if net.version == 4:
            found.append(str(net))
    if len(found) > 1:
        raise ConfigError(f"{source}: clusterCIDR: more than one IPv4 CIDR ({', '.join(found)}); "
                          "upstream takes at most one per family")
    return found[0] if found else None


def _nodeport_addresses(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: nodePortAddresses: want a list of CIDRs, got {value!r}")
    if "all" in value:  # upstream's keyword for what an empty list means in iptables and ipvs mode
        return ()
    out: list[str] = []
    for item in value:
        if item in ("primary", "localhost"):
            raise ConfigError(f"{source}: nodePortAddresses: the keyword {item!r} is not supported; list the "
                              "node's CIDRs instead (or leave it empty for every local address)")
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError as e:
            raise ConfigError(f"{source}: nodePortAddresses: {e}") from None
        if net.version != 4:
            raise ConfigError(f"{source}: nodePortAddresses: {item} is not IPv4 (this proxy is IPv4 only)")
        out.append(str(net))
    return tuple(out)


def _bind_address(value: Any, default: tuple[str, int], path: str, source: str) -> BindAddress:
    """"ip:port", "[ipv6]:port" or a bare IP (the default port is appended, as upstream's
    AppendPortIfNeeded); empty = the default."""
    text = _string(value, path, source).strip()
    if not text:
        return BindAddress(*default)
    host, port = text, default[1]
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text) or re.fullmatch(r"([^:]+):(\d+)", text)
    if m:
        host, port = m.group(1), int(m.group(2)) if m.group(2) else default[1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"{source}: {path}: {text!r} is not IP:port") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{source}: {path}: port {port} is out of range")
    return BindAddress(host, port)
