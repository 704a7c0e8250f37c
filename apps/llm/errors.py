"""The engine's refusal: an HTTP status, a stable code and a message, shaped by each endpoint."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GatewayError(Exception):
    status: int
    code: str
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


def invalid(message: str, param: str | None = None, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, code, message, param=param)


def unsupported(param: str, why: str = "") -> GatewayError:
    """A field we don't forward: what reaches a provider is only what we price (docs/security.md)."""
    reason = why or "CognitionOS forwards only the parameters it can price"
    return GatewayError(400, "unsupported_parameter", f"`{param}` is not supported: {reason}", param=param)
