"""An authorizer's answer (upstream authorizer.Decision): allow, deny, or no opinion (the next
authorizer in the chain decides)."""

from __future__ import annotations

from dataclasses import dataclass

ALLOW = "Allow"
DENY = "Deny"
NO_OPINION = "NoOpinion"


@dataclass(frozen=True)
class Decision:
    verdict: str
    reason: str = ""

    @property
    def allowed(self) -> bool:
        return self.verdict == ALLOW


def allow(reason: str = "") -> Decision:
    return Decision(ALLOW, reason)


def no_opinion(reason: str = "") -> Decision:
    return Decision(NO_OPINION, reason)
