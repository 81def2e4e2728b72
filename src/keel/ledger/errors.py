"""Errors a caller can act on. Each carries one sentence for the user and an exit status."""


class KeelError(Exception):
    """A user-facing failure: the message is one clear sentence; nothing was written."""

    exit_code = 1


class BadInput(KeelError):
    """The caller's input is malformed (JSON, instant, id, value)."""

    exit_code = 2


class SchemaError(BadInput):
    """An undeclared attribute, a wrong type, or a cardinality/uniqueness violation."""


class NotFound(KeelError):
    """A named thing (entity, transaction, branch, identity) does not exist."""


class Conflict(KeelError):
    """A precondition or merge found a concurrent change; the caller may re-read and retry."""

    exit_code = 3


class Refused(KeelError):
    """A guard (governance, identity registration) refused the write."""

    exit_code = 4


class Corrupt(KeelError):
    """Stored history failed verification."""
