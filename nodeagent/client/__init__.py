"""The one client every component uses to talk to the apiserver (see docs/components.md)."""

from nodeagent.client.config import ClientConfig
from nodeagent.client.errors import (
    AlreadyExists,
    ApiError,
    BadRequest,
    Conflict,
    Expired,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
)
from nodeagent.client.events import EventRecorder, now_rfc3339
from nodeagent.client.informer import Informer, key_of
from nodeagent.client.interface import ClientProtocol
from nodeagent.client.rest import Client, WatchEvent
from nodeagent.client.selectors import labels_match, parse_label_selector, selector_from_dict
from nodeagent.client.workqueue import ShutDown, WorkQueue

__all__ = [
    "AlreadyExists", "ApiError", "BadRequest", "Client", "ClientConfig", "ClientProtocol", "Conflict", "EventRecorder",
    "Expired", "Forbidden", "Informer", "Invalid", "NotFound", "ShutDown", "Unauthorized", "WatchEvent",
    "WorkQueue", "key_of", "labels_match", "now_rfc3339", "parse_label_selector", "selector_from_dict",
]
