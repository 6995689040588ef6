"""Typed tunnel errors; each carries the HTTP status a proxy in front of the tunnel should answer."""

from __future__ import annotations


class DialError(Exception):
    """A dial through the tunnel failed.

    `status` is the HTTP status the CONNECT egress (or the proxy subresource) answers with:
    403 the target is not something the tunnel may reach (unknown node or address, disallowed port),
    502 the node's agent could not complete it (refused, agent went away, ambiguous address),
    503 no agent is connected for the node, or it is at its connection limit,
    504 the dial timed out (on the node, or waiting for the agent).
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __repr__(self) -> str:
        return f"DialError({self.status}, {self.message!r})"
