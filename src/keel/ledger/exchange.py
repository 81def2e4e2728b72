"""Export and import the whole ledger as JSONL, re-verifying everything on the way in.

One line per transaction (with its datoms, their salts and full values) and one per
checkpoint, so replaying a file into an empty store reproduces the same hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .checks import Sequencer, branch_names, check_tx
from .encoding import checkpoint_bytes
from .errors import BadInput, Corrupt
from .history import tx_range
from .signing import verify_signature
from .stores import Store
from .stores.base import INLINE_LIMIT
from .stores.rows import CheckpointRow, DatomRow, TxRow

FORMAT = {"keel": "ledger-export", "version": 1}


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(bytes(data)).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def export_lines(store: Store, erased: dict[tuple[int, int], int]) -> Iterator[dict]:
    """The export's lines; `erased` maps each forgotten datom (tx, idx) to the
    transaction of the forgetting that names it, which its line says."""
    yield FORMAT
    names = branch_names(store)
    for record in tx_range(store):
        tx = record.tx
        datoms = []
        for d in record.datoms:
            value = d.v
            if d.big and d.v is not None:
                value = store.get_blob(bytes(d.v))
                if value is None:
                    raise Corrupt(f"transaction {tx.id}: blob {bytes(d.v).hex()} is missing")
            line = {
                "e": d.e,
                "a": d.a,
                "op": d.op,
                "type": d.vtype,
                "v": _b64(value),
                "salt": _b64(d.salt),
                "vdigest": bytes(d.vdigest).hex(),
                "valid_from": d.vf,
                "valid_to": d.vt,
            }
            if value is None and (d.tx, d.idx) in erased:
                line["forgotten"] = erased[(d.tx, d.idx)]
            datoms.append(line)
        yield {
            "tx": tx.id,
            "hash": bytes(tx.hash).hex(),
            "prev": bytes(tx.prev).hex(),
            "branch": names.get(tx.branch),
            "branch_id": tx.branch,
            "time": tx.time,
            "author": tx.author,
            "key": bytes(tx.key).hex(),
            "reason": tx.reason,
            "root": bytes(tx.root).hex(),
            "sig": bytes(tx.sig).hex(),
            "schema": tx.schema,
            "datoms": datoms,
        }
    for cp in store.checkpoints():
        yield {
            "checkpoint": {
                "size": cp.size,
                "root": cp.root.hex(),
                "time": cp.time,
                "key": cp.key.hex(),
                "sig": cp.sig.hex(),
            }
        }


def export(store: Store, out: IO[str], erased: dict[tuple[int, int], int]) -> int:
    count = 0
    for line in export_lines(store, erased):
        out.write(json.dumps(line, separators=(",", ":")) + "\n")
        count += "tx" in line
    return count


def _rows(line: dict) -> tuple[TxRow, list[DatomRow], dict[bytes, bytes]]:
    """Stored rows from one exported transaction line; big values go to `blobs`."""
    tid = line["tx"]
    tx = TxRow(
        tid,
        bytes.fromhex(line["hash"]),
        bytes.fromhex(line["prev"]),
        line["branch_id"],
        line["time"],
        line["author"],
        bytes.fromhex(line["key"]),
        line["reason"],
        bytes.fromhex(line["root"]),
        len(line["datoms"]),
        bytes.fromhex(line["sig"]),
        line["schema"],
    )
    datoms, blobs = [], {}
    for i, d in enumerate(line["datoms"]):
        value = _unb64(d["v"])
        big = 0
        if value is not None and len(value) > INLINE_LIMIT:
            digest = hashlib.sha256(value).digest()
            blobs[digest], value, big = value, digest, 1
        datoms.append(
            DatomRow(
                tid,
                i,
                line["branch_id"],
                d["e"],
                d["a"],
                value,
                d["type"],
                big,
                d["op"],
                d["valid_from"],
                d["valid_to"],
                _unb64(d["salt"]),
                bytes.fromhex(d["vdigest"]),
            )
        )
    return tx, datoms, blobs


def import_file(store: Store, path: Path) -> int:
    """Append a verified export to `store`. Transactions already present must match exactly.

    Everything is checked before anything is written, and written in one transaction.
    """
    try:
        lines = [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path} is not JSONL: {exc.msg} at line {exc.lineno}") from None
    if not lines or lines[0] != FORMAT:
        raise BadInput(f"{path} is not a keel ledger export (its first line names the format)")
    seq = Sequencer()
    names: dict[int, str] = {0: "main"}
    pending: list[tuple[TxRow, list[DatomRow], dict[bytes, bytes]]] = []
    checkpoints = []
    head = store.head()
    have = head.id if head else 0
    try:
        for line in lines[1:]:
            if "checkpoint" in line:
                checkpoints.append(line["checkpoint"])
                continue
            tx, datoms, blobs = _rows(line)
            names[line["branch_id"]] = line["branch"] or ""
            checked = check_tx(tx, datoms, line["branch"] or "", blobs.get)
            problem = seq.feed(checked, names)
            if problem:
                raise Corrupt(f"transaction {tx.id} in {path.name} fails verification: {problem}")
            if tx.id <= have:
                (stored,) = store.tx_rows(tx.id, tx.id)
                if bytes(stored.hash) != tx.hash:
                    raise Corrupt(
                        f"transaction {tx.id} in {path.name} differs from the one "
                        "already in this ledger"
                    )
                continue
            pending.append((tx, datoms, blobs))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path} has a malformed record: {exc!r}") from None
    unnamed = seq.unaccounted()
    if unnamed:
        raise Corrupt(f"transaction {unnamed[0]} in {path.name} fails verification: {unnamed[1]}")
    if seq.expected_id - 1 < have:
        raise Corrupt(
            f"{path.name} ends at transaction {seq.expected_id - 1}, "
            f"but this ledger already has {have}"
        )
    registered = seq.ever_registered
    for cp in checkpoints:
        root, key = bytes.fromhex(cp["root"]), bytes.fromhex(cp["key"])
        signed = checkpoint_bytes(cp["size"], root, cp["time"])
        if (
            cp["size"] > seq.log.size
            or seq.log.root(cp["size"]) != root
            or key not in registered
            or not verify_signature(key, bytes.fromhex(cp["sig"]), signed)
        ):
            raise Corrupt(f"the checkpoint at size {cp['size']} in {path.name} does not verify")
    with store.write():
        current = store.head()
        if (current.id if current else 0) != have:
            raise Corrupt("the ledger changed during the import; run it again")
        for tx, datoms, blobs in pending:
            store.insert(tx, datoms, blobs)
        known = {(c.size, c.root.hex()) for c in store.checkpoints()}
        for cp in checkpoints:
            if (cp["size"], cp["root"]) not in known:
                store.add_checkpoint(
                    CheckpointRow(
                        cp["size"],
                        bytes.fromhex(cp["root"]),
                        cp["time"],
                        bytes.fromhex(cp["key"]),
                        bytes.fromhex(cp["sig"]),
                    )
                )
    return len(pending)
