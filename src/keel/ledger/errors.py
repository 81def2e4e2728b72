"""The errors the ledger raises: keel's shared error classes (see `keel.errors`), which
carry their exit status, HTTP status and kind."""

from ..errors import BadInput, Conflict, Corrupt, KeelError, NotFound, Refused, SchemaError

__all__ = ["BadInput", "Conflict", "Corrupt", "KeelError", "NotFound", "Refused", "SchemaError"]
