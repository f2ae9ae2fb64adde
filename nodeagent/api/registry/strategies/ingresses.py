"""Ingresses and IngressClasses (networking.k8s.io/v1): validation as upstream's
pkg/apis/networking/validation/validation.go, kubectl's columns as pkg/printers/internalversion
printIngress/printIngressClass, the status reset on create and kept by the main resource
(pkg/registry/networking/ingress/strategy.go).

The default class (annotation ingressclass.kubernetes.io/is-default-class) is set by the
DefaultIngressClass admission plugin (nodeagent/api/defaultingressclass.py), not here: a strategy
sees one object, the plugin needs the IngressClasses."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from nodeagent.api import errors
from nodeagent.api import tables as t
from nodeagent.api.registry.options import WriteContext, deep_copy
from nodeagent.api.registry.strategy import Strategy
from nodeagent.api.validation import (
    Cause,
    dns1035_label_errors,
    dns1123_subdomain_errors,
    path_segment_errors,
)

Obj = dict[str, Any]
Row = list[Any]

ANNOTATION_INGRESS_CLASS = "kubernetes.io/ingress.class"
ANNOTATION_DEFAULT_CLASS = "ingressclass.kubernetes.io/is-default-class"
PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
_INVALID_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_SUFFIXES = ("/..", "/.")
_WILDCARD = r"\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_RE_WILDCARD = re.compile(f"^{_WILDCARD}$")
_RE_PORT_NAME_CHARS = re.compile(r"^[-a-z0-9]+$")
_RE_DOMAIN_PREFIXED = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/\S+$")


def _q(v: Any) -> str:
    return json.dumps(v)


def _invalid(fld: str, value: Any, msg: str) -> Cause:
    return (fld, "FieldValueInvalid", f"Invalid value: {_q(value)}: {msg}")


def wildcard_errors(host: str) -> list[str]:
    """k8s.io/apimachinery IsWildcardDNS1123Subdomain."""
    errs = ["must be no more than 253 characters"] if len(host) > 253 else []
    if not _RE_WILDCARD.match(host):
        errs.append("a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, "
                    "which must consist of lower case alphanumeric characters, '-' or '.' and end with an "
                    f"alphanumeric character (e.g. '*.example.com', regex used for validation is '{_WILDCARD}')")
    return errs


def port_name_errors(name: str) -> list[str]:
    """k8s.io/apimachinery IsValidPortName (an IANA_SVC_NAME)."""
    errs = []
    if len(name) > 15:
        errs.append("must be no more than 15 characters")
    if not _RE_PORT_NAME_CHARS.match(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def _backend_causes(b: Any, fld: str) -> list[Cause]:
    """validateIngressBackend: a service (name, port name XOR number) or a resource, not both."""
    if not isinstance(b, dict):
        return [_invalid(fld, "", "resource or service backend is required")]
    svc, res = b.get("service"), b.get("resource")
    if svc is not None and res is not None:
        return [_invalid(fld, "", "cannot set both resource and service backends")]
    if res is not None:
        if not isinstance(res, dict):
            return [_invalid(f"{fld}.resource", res, "must be an object")]
        causes: list[Cause] = []
        for key in ("kind", "name"):
            v = res.get(key)
            if not v:
                causes.append((f"{fld}.resource.{key}", "FieldValueRequired", "Required value"))
            else:
                causes += [_invalid(f"{fld}.resource.{key}", v, m) for m in path_segment_errors(str(v))]
        return causes
    if not isinstance(svc, dict):
        return [_invalid(fld, "", "resource or service backend is required")]
    causes = []
    name = svc.get("name")
    if not name:
        causes.append((f"{fld}.service.name", "FieldValueRequired", "Required value"))
    else:
        causes += [_invalid(f"{fld}.service.name", name, m) for m in dns1035_label_errors(str(name))]
    raw_port = svc.get("port")
    port: Obj = raw_port if isinstance(raw_port, dict) else {}
    pname, pnum = port.get("name") or "", port.get("number") or 0
    if pname and pnum:
        causes.append(_invalid(fld, "", "cannot set both port name & port number"))
    elif pname:
        causes += [_invalid(f"{fld}.service.port.name", pname, m) for m in port_name_errors(str(pname))]
    elif pnum:
        if not isinstance(pnum, int) or not 0 < pnum < 65536:
            causes.append(_invalid(f"{fld}.service.port.number", pnum, "must be between 1 and 65535, inclusive"))
    else:
        causes.append((fld, "FieldValueRequired", "Required value: port name or number is required"))
    return causes


def _path_causes(p: Any, fld: str) -> list[Cause]:
    """validateHTTPIngressPath."""
    if not isinstance(p, dict):
        return [_invalid(fld, p, "must be an object")]
    ptype = p.get("pathType")
    path = p.get("path") or ""
    causes: list[Cause] = []
    if ptype is None:
        return [(f"{fld}.pathType", "FieldValueRequired", "Required value: pathType must be specified")]
    if ptype in ("Exact", "Prefix"):
        if not path.startswith("/"):
            causes.append(_invalid(f"{fld}.path", path, "must be an absolute path"))
        causes += [_invalid(f"{fld}.path", path, f"must not contain '{s}'") for s in _INVALID_SEQUENCES if s in path]
        causes += [_invalid(f"{fld}.path", path, f"cannot end with '{s}'") for s in _INVALID_SUFFIXES
                   if path.endswith(s)]
    elif ptype == "ImplementationSpecific":
        if path and not path.startswith("/"):
            causes.append(_invalid(f"{fld}.path", path, "must be an absolute path"))
    else:
        supported = ", ".join(_q(x) for x in PATH_TYPES)
        causes.append((f"{fld}.pathType", "FieldValueNotSupported",
                       f"Unsupported value: {_q(ptype)}: supported values: {supported}"))
    return causes + _backend_causes(p.get("backend"), f"{fld}.backend")


def _host_causes(host: str, fld: str) -> list[Cause]:
    if "*" in host:
        return [_invalid(fld, host, m) for m in wildcard_errors(host)]
    return [_invalid(fld, host, m) for m in dns1123_subdomain_errors(host)]


def validate_ingress_spec(spec: Any) -> list[Cause]:
    """ValidateIngressSpec."""
    if not isinstance(spec, dict):
        return [("spec", "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    rules = spec.get("rules") or []
    if not isinstance(rules, list):
        return [_invalid("spec.rules", rules, "must be a list")]
    if not rules and spec.get("defaultBackend") is None:
        causes.append(_invalid("spec", None, "either `defaultBackend` or `rules` must be specified"))
    if spec.get("defaultBackend") is not None:
        causes += _backend_causes(spec["defaultBackend"], "spec.defaultBackend")
    for i, r in enumerate(rules):
        fld = f"spec.rules[{i}]"
        if not isinstance(r, dict):
            causes.append(_invalid(fld, r, "must be an object"))
            continue
        host = r.get("host") or ""
        if host:
            if _is_ip(host):
                causes.append(_invalid(f"{fld}.host", host, "must be a DNS name, not an IP address"))
            causes += _host_causes(host, f"{fld}.host")
        http = r.get("http")
        if http is not None:
            paths = (http or {}).get("paths") if isinstance(http, dict) else None
            if not paths:
                causes.append((f"{fld}.http.paths", "FieldValueRequired", "Required value"))
            for j, p in enumerate(paths or []):
                causes += _path_causes(p, f"{fld}.http.paths[{j}]")
    for i, tls in enumerate(spec.get("tls") or []):
        if not isinstance(tls, dict):
            causes.append(_invalid(f"spec.tls[{i}]", tls, "must be an object"))
            continue
        for j, h in enumerate(tls.get("hosts") or []):
            causes += _host_causes(str(h), f"spec.tls[{i}].hosts[{j}]")
        secret = tls.get("secretName") or ""
        if secret:
            causes += [_invalid(f"spec.tls[{i}].secretName", secret, m) for m in dns1123_subdomain_errors(secret)]
    cls = spec.get("ingressClassName")
    if cls is not None:
        causes += [_invalid("spec.ingressClassName", cls, m) for m in dns1123_subdomain_errors(str(cls))]
    return causes


def validate_load_balancer_status(status: Any, fld: str = "status.loadBalancer") -> list[Cause]:
    """ValidateIngressLoadBalancerStatus (the same rules hold for a Service's status)."""
    causes: list[Cause] = []
    lb = (status or {}).get("loadBalancer") if isinstance(status, dict) else None
    for i, ing in enumerate((lb or {}).get("ingress") or []):
        if not isinstance(ing, dict):
            causes.append(_invalid(f"{fld}.ingress[{i}]", ing, "must be an object"))
            continue
        ip, hostname = ing.get("ip") or "", ing.get("hostname") or ""
        if ip and not _is_ip(str(ip)):
            causes.append(_invalid(f"{fld}.ingress[{i}].ip", ip, "must be a valid IP address, (e.g. 10.9.8.7 or "
                                                                   "2001:db8::ffff)"))
        if hostname:
            causes += [_invalid(f"{fld}.ingress[{i}].hostname", hostname, m)
                       for m in dns1123_subdomain_errors(str(hostname))]
            if _is_ip(str(hostname)):
                causes.append(_invalid(f"{fld}.ingress[{i}].hostname", hostname,
                                       "must be a DNS name, not an IP address"))
    return causes


# --- kubectl columns (printers.go) -------------------------------------------------------------
def format_hosts(rules: list[Any]) -> str:
    """formatHosts: up to three hosts, '*' when none names one."""
    hosts: list[str] = []
    more = False
    for r in rules:
        if len(hosts) == 3:
            more = True
        if not more and isinstance(r, dict) and r.get("host"):
            hosts.append(str(r["host"]))
    if not hosts:
        return "*"
    out = ",".join(hosts)
    return f"{out} + {len(rules) - 3} more..." if more else out


def load_balancer_addresses(status: Any) -> str:
    """ingressLoadBalancerStatusStringer with wide output (the server prints wide, kubectl hides)."""
    lb = (status.get("loadBalancer") or {}) if isinstance(status, dict) else {}
    seen = {str(i.get("ip") or i.get("hostname")) for i in lb.get("ingress") or []
            if isinstance(i, dict) and (i.get("ip") or i.get("hostname"))}
    return ",".join(sorted(seen))


def _ingress_row(o: Obj) -> Row:
    spec = o.get("spec") or {}
    return [t.name(o), spec.get("ingressClassName") or "<none>", format_hosts(spec.get("rules") or []),
            load_balancer_addresses(o.get("status")), "80, 443" if spec.get("tls") else "80", t.created(o)]


def _class_row(o: Obj) -> Row:
    spec = o.get("spec") or {}
    params = spec.get("parameters")
    cell = "<none>"
    if isinstance(params, dict):
        cell = str(params.get("kind", ""))
        if params.get("apiGroup"):
            cell += "." + str(params["apiGroup"])
        cell += "/" + str(params.get("name", ""))
    return [t.name(o), spec.get("controller") or "", cell, t.created(o)]


class IngressStrategy(Strategy):
    generation = True
    printer = t.Printer((("Name", "string", 0), ("Class", "string", 0), ("Hosts", "string", 0),
                         ("Address", "string", 0), ("Ports", "string", 0), ("Age", "string", 0)), _ingress_row)

    def prepare_for_create(self, obj: Obj, ctx: WriteContext) -> None:
        obj["status"] = {"loadBalancer": {}}

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        causes = validate_ingress_spec(obj.get("spec"))
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        cls = (obj.get("spec") or {}).get("ingressClassName") if isinstance(obj.get("spec"), dict) else None
        ann = annotations.get(ANNOTATION_INGRESS_CLASS) if isinstance(annotations, dict) else None
        if ann is not None and cls is not None and ann != cls:
            causes.append(_invalid(f"annotations.{ANNOTATION_INGRESS_CLASS}", ann,
                                   "must match `ingressClassName` when both are specified"))
        return causes

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        return validate_ingress_spec(new.get("spec"))

    def prepare_for_status_update(self, new: Obj, old: Obj) -> Obj:
        causes = validate_load_balancer_status(new.get("status"))
        if causes:
            meta = old.get("metadata") or {}
            raise errors.invalid(self.kind.kind, self.kind.group, str(meta.get("name", "")), causes)
        result = deep_copy(old)
        result["status"] = new.get("status") if new.get("status") is not None else {}
        return result


class IngressClassStrategy(Strategy):
    generation = True
    printer = t.Printer((("Name", "string", 0), ("Controller", "string", 0), ("Parameters", "string", 0),
                         ("Age", "string", 0)), _class_row)

    def validate(self, obj: Obj, ctx: WriteContext) -> list[Cause]:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [("spec.controller", "FieldValueRequired", "Required value")]
        controller = spec.get("controller") or ""
        causes: list[Cause] = []
        if not controller:
            causes.append(("spec.controller", "FieldValueRequired", "Required value"))
        else:
            if len(controller) > 250:
                causes.append(("spec.controller", "FieldValueTooLong", "Too long: may not be more than 250 bytes"))
            if not _RE_DOMAIN_PREFIXED.match(str(controller)):
                causes.append(_invalid("spec.controller", controller,
                                       'must be a domain-prefixed path (such as "acme.io/foo")'))
        params = spec.get("parameters")
        if params is not None:
            if not isinstance(params, dict):
                return causes + [_invalid("spec.parameters", params, "must be an object")]
            for key in ("kind", "name"):
                if not params.get(key):
                    causes.append((f"spec.parameters.{key}", "FieldValueRequired", "Required value"))
            scope = params.get("scope")
            if scope is None:
                causes.append(("spec.parameters.scope", "FieldValueRequired", "Required value"))
            elif scope not in ("Cluster", "Namespace"):
                causes.append(("spec.parameters.scope", "FieldValueNotSupported",
                               f'Unsupported value: {_q(scope)}: supported values: "Cluster", "Namespace"'))
            elif scope == "Namespace" and not params.get("namespace"):
                causes.append(("spec.parameters.namespace", "FieldValueRequired",
                               "Required value: `parameters.scope` is set to 'Namespace'"))
            elif scope == "Cluster" and params.get("namespace") is not None:
                causes.append(("spec.parameters.namespace", "FieldValueForbidden",
                               "Forbidden: `parameters.scope` is set to 'Cluster'"))
        return causes

    def validate_update(self, new: Obj, old: Obj, ctx: WriteContext) -> list[Cause]:
        causes = self.validate(new, ctx)
        new_c = (new.get("spec") or {}).get("controller") if isinstance(new.get("spec"), dict) else None
        if new_c != (old.get("spec") or {}).get("controller"):
            causes.append(_invalid("spec.controller", new_c, "field is immutable"))
        return causes
