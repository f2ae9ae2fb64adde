"""Kubernetes Status bodies (meta/v1 Status) for every error the apiserver returns.

The reasons and messages follow k8s.io/apimachinery/pkg/api/errors so that kubectl and
client libraries print what operators expect ("pods \"x\" not found", "the object has been
modified; please apply your changes to the latest version and try again").
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, *, name: str | None = None,
                 group: str | None = None, kind: str | None = None,
                 causes: list[dict[str, str]] | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details: dict[str, Any] = {}
        if name is not None:
            self.details["name"] = name
        if group is not None:
            self.details["group"] = group
        if kind is not None:
            self.details["kind"] = kind
        if causes:
            self.details["causes"] = causes
        if retry_after is not None:
            self.details["retryAfterSeconds"] = retry_after

    def status(self) -> dict[str, Any]:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Success" if code < 300 else "Failure",
        "message": message, "reason": reason, "code": code,
    }
    if details:
        body["details"] = details
    if code < 300:
        body.pop("reason")
        body.pop("message")
    return body


def qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{qualified(plural, group)} "{name}" not found',
                    name=name, group=group, kind=plural)


def already_exists(plural: str, group: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{qualified(plural, group)} "{name}" already exists',
                    name=name, group=group, kind=plural)


def conflict(plural: str, group: str, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
                    name=name, group=group, kind=plural)


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; causes are (field, reason type, message) like field.ErrorList."""
    msgs = "; ".join(f"{f}: {m}" for f, _, m in causes)
    label = f'{kind}.{group}' if group else kind
    return ApiError(422, "Invalid", f'{label} "{name}" is invalid: {msgs}', name=name, group=group, kind=kind,
                    causes=[{"reason": t, "message": m, "field": f} for f, t, m in causes])


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(user: str, verb: str, plural: str, group: str, name: str | None, namespace: str | None,
              why: str = "") -> ApiError:
    res = f'{plural}' if not group else f"{plural}"
    msg = f'{qualified(plural, group)}{f" {chr(34)}{name}{chr(34)}" if name else ""} is forbidden: User "{user}" cannot {verb} resource "{res}" in API group "{group}"'
    msg += f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    if why:
        msg += f": {why}"
    return ApiError(403, "Forbidden", msg, name=name, group=group, kind=plural)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


# What a malformed object that slipped past validation raises inside the registry: the client's 400,
# never our 500 (verbs.py and the unit tests' fake client answer so).
MALFORMED = (TypeError, AttributeError, KeyError, ValueError, IndexError, ArithmeticError, RecursionError)
