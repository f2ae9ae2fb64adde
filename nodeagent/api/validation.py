"""Name and metadata validation (k8s.io/apimachinery/pkg/util/validation, apis/meta/v1/validation)."""

from __future__ import annotations

import json
import re
from typing import Any

Cause = tuple[str, str, str]  # (field, reason type, message)
Obj = dict[str, Any]

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*"
_DNS1035_LABEL = r"[a-z]([-a-z0-9]*[a-z0-9])?"
_LABEL_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = rf"({_LABEL_NAME})?"

_RE_LABEL = re.compile(f"^{_DNS1123_LABEL}$")
_RE_SUBDOMAIN = re.compile(f"^{_DNS1123_SUBDOMAIN}$")
_RE_1035 = re.compile(f"^{_DNS1035_LABEL}$")
_RE_LNAME = re.compile(f"^{_LABEL_NAME}$")
_RE_LVALUE = re.compile(f"^{_LABEL_VALUE}$")

SUBDOMAIN, LABEL, LABEL1035, PATH_SEGMENT = "subdomain", "label", "label1035", "segment"


def _name_errors(v: str, max_len: int, regex: re.Pattern[str], message: str) -> list[str]:
    """Upstream's wording: the length first, then the format (both can be reported)."""
    errs = [f"must be no more than {max_len} characters"] if len(v) > max_len else []
    if not regex.match(v):
        errs.append(message)
    return errs


def dns1123_label_errors(v: str) -> list[str]:
    return _name_errors(v, 63, _RE_LABEL, (
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
        "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
        f"regex used for validation is '{_DNS1123_LABEL}')"))


def dns1123_subdomain_errors(v: str) -> list[str]:
    return _name_errors(v, 253, _RE_SUBDOMAIN, (
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
        "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex "
        f"used for validation is '{_DNS1123_SUBDOMAIN}')"))


def dns1035_label_errors(v: str) -> list[str]:
    return _name_errors(v, 63, _RE_1035, (
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
        "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
        f"'abc-123', regex used for validation is '{_DNS1035_LABEL}')"))


def path_segment_errors(v: str) -> list[str]:
    if v in (".", ".."):
        return [f"may not be '{v}'"]
    for bad in ("/", "%"):
        if bad in v:
            return [f"may not contain '{bad}'"]
    return []


def name_errors(rule: str, v: str) -> list[str]:
    if rule == LABEL:
        return dns1123_label_errors(v)
    if rule == LABEL1035:
        return dns1035_label_errors(v)
    if rule == PATH_SEGMENT:
        return path_segment_errors(v)
    return dns1123_subdomain_errors(v)


def qualified_name_errors(key: str) -> list[str]:
    """Label/annotation keys: [prefix/]name, prefix a DNS subdomain, name <= 63."""
    parts = key.split("/")
    if len(parts) > 2 or not parts[-1]:
        return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/'"]
    errs: list[str] = []
    if len(parts) == 2:
        errs += [f"prefix part {e}" for e in dns1123_subdomain_errors(parts[0])]
    name = parts[-1]
    if len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not _RE_LNAME.match(name):
        errs.append("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
                    f"end with an alphanumeric character (regex used for validation is '{_LABEL_NAME}')")
    return errs


def label_value_errors(v: str) -> list[str]:
    errs = []
    if len(v) > 63:
        errs.append("must be no more than 63 characters")
    if not _RE_LVALUE.match(v):
        errs.append("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                    f"'.', and must start and end with an alphanumeric character (regex used for validation is "
                    f"'{_LABEL_VALUE}')")
    return errs


def validate_metadata(meta: Any, name_rule: str) -> list[Cause]:
    causes: list[Cause] = []
    if not isinstance(meta, dict):
        return [("metadata", "FieldValueInvalid", "Invalid value: must be an object")]
    name = meta.get("name")
    if not isinstance(name, str):
        causes.append(("metadata.name", "FieldValueInvalid", "Invalid value: must be a string"))
    elif not name:
        causes.append(("metadata.name", "FieldValueRequired", "Required value: name or generateName is required"))
    else:
        causes += [("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": {e}')
                   for e in name_errors(name_rule, name)]
    labels = meta.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            causes.append(("metadata.labels", "FieldValueInvalid", "Invalid value: must be a map of strings"))
        else:
            for k, v in labels.items():
                if not isinstance(v, str):
                    causes.append((f"metadata.labels[{k}]", "FieldValueInvalid", "Invalid value: must be a string"))
                    continue
                causes += [("metadata.labels", "FieldValueInvalid", f'Invalid value: "{k}": {e}')
                           for e in qualified_name_errors(k)]
                causes += [("metadata.labels", "FieldValueInvalid", f'Invalid value: "{v}": {e}')
                           for e in label_value_errors(v)]
    ann = meta.get("annotations")
    if ann is not None:
        if not isinstance(ann, dict) or not all(isinstance(v, str) for v in ann.values()):
            causes.append(("metadata.annotations", "FieldValueInvalid", "Invalid value: must be a map of strings"))
        else:
            causes += [("metadata.annotations", "FieldValueInvalid", f'Invalid value: "{k}": {e}')
                       for k in ann for e in qualified_name_errors(k)]
            if sum(len(k) + len(v) for k, v in ann.items()) > 256 * 1024:
                causes.append(("metadata.annotations", "FieldValueTooLong",
                               "Too long: must have at most 262144 bytes"))
    for fld in ("finalizers",):
        v = meta.get(fld)
        if v is not None and (not isinstance(v, list) or not all(isinstance(x, str) for x in v)):
            causes.append((f"metadata.{fld}", "FieldValueInvalid", "Invalid value: must be a list of strings"))
    refs = meta.get("ownerReferences")
    if refs is not None:
        if not isinstance(refs, list):
            causes.append(("metadata.ownerReferences", "FieldValueInvalid", "Invalid value: must be a list"))
        else:
            controllers = 0
            for i, r in enumerate(refs):
                if not isinstance(r, dict):
                    causes.append((f"metadata.ownerReferences[{i}]", "FieldValueInvalid", "must be an object"))
                    continue
                for req in ("apiVersion", "kind", "name", "uid"):
                    if not r.get(req):
                        causes.append((f"metadata.ownerReferences[{i}].{req}", "FieldValueRequired",
                                       "Required value"))
                if r.get("controller"):
                    controllers += 1
            if controllers > 1:
                causes.append(("metadata.ownerReferences", "FieldValueInvalid",
                               "Invalid value: only one reference can have Controller set to true"))
    return causes


# --- Service external traffic (validation.go validateServiceExternalTrafficPolicy and
# validateServiceExternalTrafficFieldsUpdate) ----------------------------------------------------
EXTERNAL_TRAFFIC_POLICIES = ("Cluster", "Local")


def needs_health_check(spec: Any) -> bool:
    """Only a LoadBalancer with externalTrafficPolicy Local has a healthCheckNodePort (upstream
    pkg/api/service NeedsHealthCheck): the balancer asks each node whether it has local endpoints."""
    return isinstance(spec, dict) and spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def health_check_node_port(spec: Any) -> int:
    """The requested healthCheckNodePort, 0 when unset (a Go int32: absent, null and 0 are one value)."""
    v = spec.get("healthCheckNodePort") if isinstance(spec, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def validate_service_external_traffic(spec: Obj, old_spec: Obj | None) -> list[Cause]:
    """externalTrafficPolicy and healthCheckNodePort of a defaulted, allocated Service spec;
    old_spec is the stored spec on update. Runs after allocation, as upstream validation does."""
    causes: list[Cause] = []
    fld = "spec.healthCheckNodePort"
    etp = spec.get("externalTrafficPolicy")
    if spec.get("type") in ("NodePort", "LoadBalancer") and etp not in EXTERNAL_TRAFFIC_POLICIES:
        supported = ", ".join(f'"{p}"' for p in EXTERNAL_TRAFFIC_POLICIES)
        causes.append(("spec.externalTrafficPolicy", "FieldValueNotSupported",
                       f"Unsupported value: {json.dumps(etp)}: supported values: {supported}"))
    raw = spec.get("healthCheckNodePort")
    if raw is not None and (not isinstance(raw, int) or isinstance(raw, bool)):
        return causes + [(fld, "FieldValueInvalid", f"Invalid value: {json.dumps(raw)}: must be an integer")]
    port = health_check_node_port(spec)
    old_port = health_check_node_port(old_spec) if old_spec is not None and needs_health_check(old_spec) else 0
    if old_port and needs_health_check(spec) and port != old_port:
        causes.append((fld, "FieldValueForbidden", "Forbidden: field is immutable"))
    if not needs_health_check(spec):
        if port != 0:
            causes.append((fld, "FieldValueInvalid", f"Invalid value: {port}: may only be set when `type` is "
                                                     "'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
    elif port == 0:
        causes.append((fld, "FieldValueRequired", "Required value"))
    elif not 0 < port < 65536:
        causes.append((fld, "FieldValueInvalid", f"Invalid value: {port}: must be between 1 and 65535, inclusive"))
    return causes


def validate_node_update(old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    """Upstream ValidateNodeUpdate: a podCIDR, once set, is fixed (the node's pods and routes use it)."""
    old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
    causes: list[Cause] = []
    for fld in ("podCIDR", "podCIDRs"):
        if old_spec.get(fld) and new_spec.get(fld) != old_spec.get(fld):
            causes.append((f"spec.{fld}", "FieldValueForbidden",
                           'Forbidden: node updates may not change podCIDR except from "" to valid'))
    return causes[:1]
