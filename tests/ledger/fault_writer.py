"""Writer processes for tests/ledger/test_faults.py (a helper, not a test module).

    python tests/fault_writer.py zygote KEYFILE NAME
        Imports keel once, then for every line `run CYCLE TARGET` on stdin forks one writer
        that opens the ledger at TARGET and commits transactions until it is killed. Each
        writer prints `start CYCLE PID` before it opens the ledger and `ack TX HASH CYCLE N`
        after each `transact` returns; the zygote prints `exit PID STATUS` once the writer is gone.
        Forking from a warm process keeps each kill cycle in milliseconds, not the
        ~200 ms a fresh interpreter needs to import keel.

    python tests/fault_writer.py counter TARGET KEYFILE NAME ENTITY N
        Prints `ready`, waits for a line on stdin, then increments ENTITY's `counter/value`
        N times by compare-and-set (retrying on Conflict), printing `ok TX` per commit and
        `done CONFLICTS` at the end.

Every line is written with a single os.write, so a kill never leaves half a line.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from keel.ledger import Conflict, Ledger, Signer
from keel.ledger.stores import postgres, sqlite  # imported here, not in each forked writer

#: The schema the fault writers use (the test declares it before starting them).
SCHEMA = [
    {"attribute": "w/cycle", "type": "int"},
    {"attribute": "w/n", "type": "int"},
    {"attribute": "w/text", "type": "string"},
    {"attribute": "w/tags", "type": "string", "cardinality": "many"},
    {"attribute": "w/big", "type": "string"},
    {"attribute": "w/prev", "type": "ref"},
    {"attribute": "counter/value", "type": "int"},
]

#: A writer gives up after this long, in case the test that should kill it died.
MAX_SECONDS = 30.0


def emit(line: str) -> None:
    os.write(1, (line + "\n").encode("utf-8"))


def save_key(signer: Signer, path: Path) -> None:
    path.write_bytes(
        signer.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def load_key(path: str, name: str) -> Signer:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    return Signer(name, key)  # type: ignore[arg-type]


def entity(cycle: int, n: int) -> str:
    return f"k{cycle}-{n}"


def big_value(cycle: int, n: int) -> str:
    """A distinct value > 1 KiB, so every third transaction writes a new blob."""
    return (f"{cycle}:{n}:" + "blob-" * 8) * (40 + n % 17)


def tx_ops(cycle: int, n: int) -> list[dict]:
    e = entity(cycle, n)
    ops = [
        {"e": e, "a": "w/cycle", "v": cycle},
        {"e": e, "a": "w/n", "v": n},
        {"e": e, "a": "w/text", "v": f"cycle {cycle} tx {n} ✓"},
        {"e": e, "a": "w/tags", "v": f"t{n % 3}"},
        {"e": e, "a": "w/tags", "v": f"u{n % 5}"},
    ]
    if n % 3 == 0:
        ops.append({"e": e, "a": "w/big", "v": big_value(cycle, n)})
    if n > 0:
        ops.append({"e": e, "a": "w/prev", "v": entity(cycle, n - 1)})
    return ops


def expected_entity(cycle: int, n: int) -> dict:
    """What `view(as_of=tx).get(entity)` must return for an acknowledged transaction."""
    out: dict = {}
    for op in tx_ops(cycle, n):
        if op["a"] == "w/tags":
            out.setdefault("w/tags", []).append(op["v"])
        else:
            out[op["a"]] = op["v"]
    out["w/tags"].sort()
    return out


def write_loop(target: str, signer: Signer, cycle: int) -> None:
    emit(f"start {cycle} {os.getpid()}")
    ledger = Ledger.open(target, signer=signer)
    deadline = time.monotonic() + MAX_SECONDS
    n = 0
    while time.monotonic() < deadline:
        result = ledger.transact(tx_ops(cycle, n), reason=f"fault writer {cycle}/{n}")
        emit(f"ack {result.tx} {result.hash} {cycle} {n}")
        n += 1


def zygote(keyfile: str, name: str) -> None:
    assert postgres and sqlite
    signer = load_key(keyfile, name)
    sys.stdout.flush()
    for line in sys.stdin:
        words = line.split(maxsplit=2)
        if not words or words[0] == "quit":
            break
        cycle, target = int(words[1]), words[2].strip()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                write_loop(target, signer, cycle)
            except BaseException as exc:
                os.write(2, f"writer {cycle} failed: {exc!r}\n".encode())
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        emit(f"exit {pid} {status}")


def counter(target: str, keyfile: str, name: str, e: str, n: int) -> None:
    ledger = Ledger.open(target, signer=load_key(keyfile, name))
    emit("ready")
    sys.stdin.readline()
    conflicts = 0
    done = 0
    while done < n:
        current = ledger.view().value(e, "counter/value")
        try:
            result = ledger.transact(
                [{"e": e, "a": "counter/value", "v": current + 1}],
                reason=f"{name} increments",
                expect=[{"e": e, "a": "counter/value", "v": current}],
            )
        except Conflict:
            conflicts += 1
            continue
        emit(f"ok {result.tx} {current + 1}")
        done += 1
    emit(f"done {conflicts}")
    ledger.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "zygote":
        zygote(*args)
    elif mode == "counter":
        counter(args[0], args[1], args[2], args[3], int(args[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
