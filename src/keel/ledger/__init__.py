"""The ledger: immutable, bitemporal, content-addressed datoms in signed, hash-chained,
Merkle-logged transactions. See docs/api.md for the Python API.
"""

from .errors import BadInput, Conflict, Corrupt, KeelError, NotFound, Refused, SchemaError
from .history import TxRecord
from .ledger import MAIN, Branch, Ledger, PendingTx, TxResult, View
from .schema import Attribute
from .signing import Signer
from .stores.rows import DatomRow, Head, TxRow
from .verify import Report

__all__ = [
    "MAIN",
    "Attribute",
    "BadInput",
    "Branch",
    "Conflict",
    "Corrupt",
    "DatomRow",
    "Head",
    "KeelError",
    "Ledger",
    "NotFound",
    "PendingTx",
    "Refused",
    "Report",
    "SchemaError",
    "Signer",
    "TxRecord",
    "TxResult",
    "TxRow",
    "View",
]
