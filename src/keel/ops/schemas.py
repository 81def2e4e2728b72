"""The attributes keel's own subsystems use, declared once for a home.

`keel init` declares them in one transaction (and so does the first connection to a home
made by an older keel). Nothing else declares them: constructing a `Memory`, a `Recall` or
the Python facade writes nothing.
"""

from __future__ import annotations

from ..bus.subscriptions import SCHEMA as BUS
from ..cadence.canon import SCHEMA as CANON
from ..cadence.jobs import SCHEMA as JOBS
from ..cadence.runs import SCHEMA as RUNS
from ..govern.approvals import SCHEMA as APPROVALS
from ..govern.audit import SCHEMA as AUDIT
from ..govern.governance import SCHEMA as GOVERNANCE
from ..govern.join import SCHEMA as NODES
from ..govern.secrets import SCHEMA as SECRETS
from ..health.findings import SCHEMA as FINDINGS
from ..ledger import Ledger
from ..memory.model import DECLARATIONS as MEMORY

ALL = [
    *MEMORY,
    *JOBS,
    *RUNS,
    *BUS,
    *FINDINGS,
    *GOVERNANCE,
    *AUDIT,
    *APPROVALS,
    *SECRETS,
    *CANON,
    *NODES,
]


def missing(ledger: Ledger) -> bool:
    """Whether any of keel's attributes is undeclared (or declared with an older doc)."""
    schema = ledger.schema
    return any(
        d["attribute"] not in schema or schema[d["attribute"]].doc != d.get("doc", "") for d in ALL
    )


def declare(ledger: Ledger) -> bool:
    """Declare what is missing in one transaction; returns whether anything was written."""
    if ledger.signer is None or not missing(ledger):
        return False
    return ledger.declare(ALL, system=True) is not None
