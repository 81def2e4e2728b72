"""A new machine joins a shared ledger as a node of its own.

`keel node join DSN` makes a home on this machine that points at the shared PostgreSQL
ledger, with a key pair of its own — never a copy of the operator's private key. The key
cannot sign anything until the operator registers it, so joining is two steps: this
machine prints its public key and a fingerprint; the operator, on a node that already
belongs, runs `keel node approve NAME KEY` (a signed registration, role `node`); the new
node then starts as itself. Until then the home is there but acts as nobody.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ..errors import BadInput
from ..ledger import Ledger
from .governance import Governance
from .home import DEFAULT_CONFIG, Home, local_zone, prepare_home, write_private

_N = "keel.node/"
SCHEMA = [
    {"attribute": f"{_N}host", "type": "string", "doc": "the machine a node last started on"},
    {"attribute": f"{_N}version", "type": "string", "doc": "the keel version it started"},
    {"attribute": f"{_N}started", "type": "instant", "doc": "when its daemon last started"},
    {"attribute": f"{_N}process", "type": "string", "doc": "its daemon's host:pid (runs' holder)"},
]
NODE_ATTRS = {
    "host": f"{_N}host",
    "version": f"{_N}version",
    "started": f"{_N}started",
    "process": f"{_N}process",
}


def started_ops(identity: str, version: str, now: int, process: str) -> list[dict]:
    """What a daemon records about its node as it starts (`process` is the name its
    scheduler holds runs under)."""
    e = f"node:{identity}"
    return [
        {"op": "add", "e": e, "a": NODE_ATTRS["host"], "v": socket.gethostname()},
        {"op": "add", "e": e, "a": NODE_ATTRS["version"], "v": version},
        {"op": "add", "e": e, "a": NODE_ATTRS["started"], "v": now},
        {"op": "add", "e": e, "a": NODE_ATTRS["process"], "v": process},
    ]


@dataclass
class Joined:
    home: Home
    name: str
    public_key: str  # hex
    fingerprint: str
    registered: bool  # the operator has approved this key


def fingerprint(public_key: bytes) -> str:
    """What two people compare to know it is the same key: 4 groups of 4 hex digits."""
    digest = hashlib.sha256(public_key).hexdigest()[:16]
    return "-".join(digest[i : i + 4] for i in range(0, 16, 4))


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def join(path: Path, dsn: str, name: str) -> Joined:
    """Make (or find) the home at `path` as node `name` of the ledger at `dsn`."""
    if not dsn.startswith(("postgresql://", "postgres://")) and "dbname=" not in dsn:
        raise BadInput("a node joins a shared PostgreSQL ledger: give its DSN (postgresql://…)")
    home = Home(path)
    if home.config_path.exists():
        config = home.config()
        if config.get("db") != dsn or config.get("identity") != name:
            raise BadInput(
                f"{path} is already a keel home for another ledger or identity; join from a "
                "new KEEL_HOME"
            )
    with Ledger.open(dsn) as ledger:
        if ledger.head().id == 0:
            raise BadInput(
                "that ledger is empty: make its first home with 'keel init' (KEEL_DB set), "
                "then join other machines to it"
            )
        identities = {i["name"]: i for i in ledger.identities()}
        operator = next(ledger.tx_range(0, 1)).tx.author  # who made the ledger

    if not home.config_path.exists():
        home.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        config = {
            **DEFAULT_CONFIG,
            "operator": operator,
            "identity": name,
            "node": name,
            "db": dsn,
            "timezone": local_zone(),
            "port": free_port(),
        }
        write_private(home.config_path, tomli_w.dumps(config))
    prepare_home(home)
    with Ledger.open(dsn) as ledger:
        # The governance every node goes by is the one the operator signed in the ledger.
        Governance(home.path, lambda: operator).restore(ledger.view())
    signer = home.new_key(name)
    key_hex = signer.public_key.hex()
    found = identities.get(name)
    if found is not None and key_hex not in found.get("keys", []):
        raise BadInput(
            f"the ledger already has an identity {name!r} with another key: join under "
            "another name (--name)"
        )
    return Joined(home, name, key_hex, fingerprint(signer.public_key), found is not None)
