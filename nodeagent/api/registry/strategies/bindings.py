"""Bindings: never stored. A POST to /namespaces/NS/bindings is the pods/NAME/binding subresource of
the pod the body names (upstream's BindingREST serves both); subresources.bind does the work."""

from __future__ import annotations

from nodeagent.api.registry.strategy import Strategy


class BindingStrategy(Strategy):
    posts_as_subresource = "binding"
