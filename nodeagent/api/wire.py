"""The apiserver's wire format: request bodies (JSON, YAML, kubectl's protobuf), list/delete/dry-run
options from the query and body, and JSON responses, as upstream's endpoints/handlers decode them."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from nodeagent.api import errors
from nodeagent.api.errors import ApiError
from nodeagent.api.registry import DeleteOptions, ListOptions, WatchEvent, resource_key
from nodeagent.machinery.kinds import Kind
from nodeagent.machinery.selectors import SelectorError, parse_field_selector, parse_label_selector

JSON = "application/json"


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def event_line(ev: WatchEvent) -> bytes:
    """One JSON watch line: the line encoded once for all watchers when there is one, else the
    stored bytes of the object spliced in, else the object encoded here."""
    if ev.line is not None:
        return ev.line
    if ev.raw is not None:
        return b'{"type":"' + ev.type.encode() + b'","object":' + ev.raw + b"}\n"
    return dumps({"type": ev.type, "object": ev.obj}) + b"\n"


def json_response(obj: Any, status: int = 200, content_type: str = JSON) -> web.Response:
    return web.Response(body=dumps(obj), status=status, headers={"Content-Type": content_type})


def raw_response(raw: bytes, status: int = 200) -> web.Response:
    return web.Response(body=raw, status=status, headers={"Content-Type": JSON})


def error_response(err: ApiError) -> web.Response:
    resp = json_response(err.status(), err.code)
    if err.details.get("retryAfterSeconds"):
        resp.headers["Retry-After"] = str(err.details["retryAfterSeconds"])
    return resp


def bool_param(v: str | None) -> bool:
    return v is not None and v.lower() in ("1", "true", "yes", "")


# --- requests ----------------------------------------------------------------------------------
async def _read_body(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")
    data = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        data += chunk
        if len(data) > limit:
            raise ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {limit}")
    ctype = request.headers.get("Content-Type", JSON).split(";")[0].strip().lower()
    if not data:
        raise errors.bad_request("the request body is empty: send a JSON or YAML object")
    if ctype == "application/vnd.kubernetes.protobuf":
        from nodeagent.api.protobuf import ProtobufError, decode

        try:
            return decode(bytes(data))
        except (ProtobufError, UnicodeDecodeError) as e:
            raise ApiError(415, "UnsupportedMediaType", f"cannot decode the protobuf body: {e}; send it as "
                                                        "application/json or application/yaml instead "
                                                        "(e.g. kubectl create -f FILE)") from None
    if "protobuf" in ctype:
        raise ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                                    f"accepted media types include: application/json, "
                                                    f"application/yaml (got {ctype})")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise errors.bad_request("the request body is not UTF-8 text") from None
    if ctype.endswith("yaml"):
        try:
            return yaml.safe_load(text)
        except (yaml.YAMLError, RecursionError) as e:
            raise errors.bad_request(f"error converting YAML to JSON: {str(e).splitlines()[0]}") from None
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {e}") from None

async def read_object(request: web.Request, kind: Kind, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    if not isinstance(body, dict):
        raise errors.bad_request(f"the body must be a JSON object describing a {kind.kind}, not "
                                 f"{type(body).__name__}")
    check_kind(body, kind)
    for fld in ("metadata", "spec", "status"):
        if fld in body and body[fld] is not None and not isinstance(body[fld], dict):
            raise errors.bad_request(f"{kind.kind}.{fld}: expected an object, got {type(body[fld]).__name__}")
    return body

def list_options(request: web.Request, kind: Kind) -> ListOptions:
    q = request.query
    try:
        label_sel = parse_label_selector(q.get("labelSelector"))
        field_sel = parse_field_selector(q.get("fieldSelector"), resource_key(kind))
    except SelectorError as e:
        raise errors.bad_request(str(e)) from None
    try:
        limit = int(q.get("limit") or 0)
    except ValueError:
        raise errors.bad_request(f"invalid limit {q.get('limit')!r}: must be an integer") from None
    return ListOptions(label_selector=label_sel, field_selector=field_sel, limit=limit,
                       continue_token=q.get("continue") or None, resource_version=q.get("resourceVersion"),
                       resource_version_match=q.get("resourceVersionMatch") or None)

def dry_run(request: web.Request) -> bool:
    v = request.query.getall("dryRun", [])
    if any(x not in ("All",) for x in v):
        raise errors.bad_request(f"unsupported dryRun value {v}: only 'All' is supported")
    return bool(v)


# What the audit log keeps of a request (aiohttp request storage).
AUDIT_BODY: web.RequestKey[Any] = web.RequestKey("audit_body", object)
AUDIT_USERS: web.RequestKey[Any] = web.RequestKey("audit_users", object)
AUDIT_DECISION: web.RequestKey[Any] = web.RequestKey("audit_decision", object)


async def read_body(request: web.Request, limit: int) -> Any:
    """The decoded body; kept on the request for the audit log (requestObject)."""
    body = await _read_body(request, limit)
    request[AUDIT_BODY] = body
    return body


async def delete_options(request: web.Request) -> DeleteOptions:
    q = request.query
    opts = DeleteOptions(dry_run=dry_run(request))
    body: Any = None
    if request.can_read_body:
        raw = await request.read()
        if raw.strip():
            try:
                body = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise errors.bad_request(f"invalid DeleteOptions: {e}") from None
    if isinstance(body, dict):
        if body.get("gracePeriodSeconds") is not None:
            opts.grace_period_seconds = body["gracePeriodSeconds"]
        opts.propagation_policy = body.get("propagationPolicy")
        if body.get("orphanDependents") is True and not opts.propagation_policy:
            opts.propagation_policy = "Orphan"
        pre = body.get("preconditions") or {}
        if isinstance(pre, dict):
            opts.uid, opts.resource_version = pre.get("uid"), pre.get("resourceVersion")
        if body.get("dryRun"):
            opts.dry_run = True
    try:
        if q.get("gracePeriodSeconds") is not None:
            opts.grace_period_seconds = int(q["gracePeriodSeconds"])
    except ValueError:
        raise errors.bad_request("invalid gracePeriodSeconds: must be an integer") from None
    if opts.grace_period_seconds is not None and not isinstance(opts.grace_period_seconds, int):
        raise errors.bad_request("invalid gracePeriodSeconds: must be an integer")
    if q.get("propagationPolicy"):
        opts.propagation_policy = q["propagationPolicy"]
    if opts.propagation_policy not in (None, "Orphan", "Background", "Foreground"):
        raise errors.bad_request(f"invalid propagationPolicy {opts.propagation_policy!r}: want Orphan, "
                                 "Background or Foreground")
    return opts


def check_kind(body: dict[str, Any], kind: Kind) -> None:
    api_version, k = body.get("apiVersion"), body.get("kind")
    if api_version is not None and api_version != kind.api_version:
        raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                                 f"version ({kind.api_version})")
    if k is not None and k != kind.kind:
        raise errors.bad_request(f"the kind in the data ({k}) does not match the expected kind ({kind.kind}) "
                                 f"for {kind.plural}")
