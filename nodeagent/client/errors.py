"""API errors as exceptions, each carrying the Kubernetes Status body the server returned."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A non-2xx answer from the apiserver (or a watch ERROR event)."""

    def __init__(self, code: int, status: dict[str, Any] | None = None, *, what: str = "") -> None:
        self.code = code
        self.status = status or {}
        self.reason: str = self.status.get("reason", "")
        self.message: str = self.status.get("message", "")
        super().__init__(f"{what}: {code} {self.reason}: {self.message}".strip(": "))


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: a stale resourceVersion (reason Conflict) or, as the subclass, an existing name."""


class AlreadyExists(Conflict):
    pass


class Expired(ApiError):
    """410 Gone: the requested resourceVersion was compacted away; relist."""


class Invalid(ApiError):
    pass


_BY_CODE: dict[int, type[ApiError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Expired,
    422: Invalid,
}


def error_from_status(code: int, status: dict[str, Any] | None, what: str = "") -> ApiError:
    status = status or {}
    if code == 409 and status.get("reason") == "AlreadyExists":
        return AlreadyExists(code, status, what=what)
    return _BY_CODE.get(code, ApiError)(code, status, what=what)


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A meta/v1 Status object (used by the fake client to answer like the server)."""
    body: dict[str, Any] = {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    }
    if details:
        body["details"] = details
    return body
