"""Errors a caller can act on, each defined once with how every surface reports it.

A `KeelError` is a user-facing failure: its message is one clear sentence and nothing was
written. The class says how each surface shows it — the CLI's exit status, the HTTP
status, and the `kind` in the JSON body `{"error", "kind"}` (also the MCP tool error) —
so the same mistake is the same error on the command line, over HTTP and over MCP.

This module sits outside the layers: every layer raises these, and only surfaces read
the presentation attributes.
"""

from __future__ import annotations


class KeelError(Exception):
    """A user-facing failure: the message is one clear sentence; nothing was written."""

    exit_code = 1
    status = 500
    kind = "error"

    def to_json(self) -> dict:
        return {"error": str(self), "kind": self.kind}


class BadInput(KeelError):
    """The caller's input is malformed (JSON, instant, id, value, argument)."""

    exit_code = 2
    status = 400
    kind = "bad-input"


class SchemaError(BadInput):
    """An undeclared attribute, a wrong type, or a cardinality/uniqueness violation."""

    status = 422
    kind = "schema"


class NotFound(KeelError):
    """A named thing (entity, transaction, branch, identity, job) does not exist."""

    exit_code = 1
    status = 404
    kind = "not-found"


class Conflict(KeelError):
    """A precondition or merge found a concurrent change; the caller may re-read and retry."""

    exit_code = 3
    status = 409
    kind = "conflict"


class Refused(KeelError):
    """A rule refused the write: a guard (canon is the operator's), an unregistered key."""

    exit_code = 4
    status = 403
    kind = "refused"


class Forbidden(Refused):
    """The caller lacks the capability an operation needs (the door's decision)."""

    kind = "forbidden"

    def __init__(self, message: str, capability: str, operation: str):
        super().__init__(message)
        self.capability = capability
        self.operation = operation

    def to_json(self) -> dict:
        return {**super().to_json(), "capability": self.capability, "operation": self.operation}


class Unauthorized(KeelError):
    """No valid credentials: a missing or unknown token, an unregistered identity."""

    exit_code = 4
    status = 401
    kind = "unauthorized"


class Pending(KeelError):
    """Not refused, not done: the call waits for someone else's approval. `approval` is
    its id, to poll (`keel approvals show ID`); the action runs once, when approved."""

    exit_code = 5
    status = 202
    kind = "pending"

    def __init__(self, message: str, approval: str):
        super().__init__(message)
        self.approval = approval

    def to_json(self) -> dict:
        return {**super().to_json(), "approval": self.approval}


class ReadOnly(KeelError):
    """keel refuses writes until its ledger verifies again and its governance file is
    signed."""

    exit_code = 6
    status = 503
    kind = "read-only"


class Corrupt(KeelError):
    """Stored history failed verification."""

    exit_code = 1
    status = 500
    kind = "corrupt"


#: Every error class a surface may see, for documenting the error model.
ERRORS: tuple[type[KeelError], ...] = (
    BadInput,
    SchemaError,
    NotFound,
    Conflict,
    Refused,
    Forbidden,
    Unauthorized,
    Pending,
    ReadOnly,
    Corrupt,
)
