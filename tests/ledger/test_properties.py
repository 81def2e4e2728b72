"""Property tests of the ledger (hypothesis).

(a) replaying the exported log into an empty store reproduces the same hashes, Merkle
    root, log and views (SQLite under hypothesis; once on each store, PostgreSQL included);
(b) an as-of view at t never changes after t;
(c) Merkle proofs verify for every size 1..N, every leaf and every old size, match an
    independent reference of RFC 9162 and published vectors, and fail when anything is
    altered;
(d) folding datoms over valid time matches a brute-force model.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import PG_BASE, require_pg
from keel.ledger import BadInput, Conflict, Ledger, NotFound, SchemaError, Signer
from keel.ledger import merkle as mk
from keel.ledger.instants import FOREVER, SINCE_ALWAYS, parse_instant

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

T0 = parse_instant("2020-01-01T00:00:00Z")
DAY = 86_400_000_000
FAR = parse_instant("2200-01-01T00:00:00Z")
#: Valid instants at which views are compared: before, inside and after the grid, and now.
INSTANTS = [T0 - DAY, T0 + DAY // 2, T0 + 3 * DAY, T0 + 7 * DAY + 5, FAR]

PSCHEMA = [
    {"attribute": "p/handle", "type": "string", "unique": "identity"},
    {"attribute": "p/name", "type": "string"},
    {"attribute": "p/age", "type": "int"},
    {"attribute": "p/score", "type": "float"},
    {"attribute": "p/ok", "type": "bool"},
    {"attribute": "p/at", "type": "instant"},
    {"attribute": "p/friend", "type": "ref", "cardinality": "many"},
    {"attribute": "p/tags", "type": "string", "cardinality": "many"},
    {"attribute": "p/meta", "type": "json"},
    {"attribute": "p/blob", "type": "bytes"},
]
ATTRS = [d["attribute"] for d in PSCHEMA]
ENTITIES = [f"e{i}" for i in range(5)]


def value_for(attr: str, seed: int) -> Any:
    if attr == "p/handle":
        return f"h{seed % 3}"
    if attr == "p/name":
        return ["ann", "bo", "", "Zoë ✓", "cy", "d" * 1500, "ann", "eve"][seed % 8]
    if attr == "p/age":
        return seed * 7 - 20
    if attr == "p/score":
        return seed / 3 - 1
    if attr == "p/ok":
        return seed % 2 == 0
    if attr == "p/at":
        return T0 + seed * DAY
    if attr == "p/friend":
        return ENTITIES[seed % len(ENTITIES)]
    if attr == "p/tags":
        return f"t{seed % 4}"
    if attr == "p/meta":
        return {"n": seed, "l": [seed, None, "ü"]}
    if attr == "p/blob":
        return bytes([seed]) * (1500 if seed == 7 else 3)
    raise AssertionError(attr)


def interval(rnd: random.Random) -> dict:
    kind = rnd.random()
    if kind < 0.5:
        return {}
    lo = rnd.randrange(0, 8)
    if kind < 0.7:
        return {"valid_from": T0 + lo * DAY}
    return {"valid_from": T0 + lo * DAY, "valid_to": T0 + rnd.randrange(lo + 1, 10) * DAY}


class Driver:
    """Commits random transactions: adds, retractions, valid-time corrections, restores,
    branches (merged, dropped or left open), checkpoints. Refused ones are skipped."""

    def __init__(self, led: Ledger, rnd: random.Random):
        self.led, self.rnd = led, rnd
        self.asserted: list[tuple[str, str, Any]] = []
        self.branch_no = 0

    def _add(self) -> dict:
        e, a = self.rnd.choice(ENTITIES), self.rnd.choice(ATTRS)
        return {"e": e, "a": a, "v": value_for(a, self.rnd.randrange(8)), **interval(self.rnd)}

    def _retract(self) -> dict | None:
        if not self.asserted:
            return None
        e, a, v = self.rnd.choice(self.asserted)
        return {"op": "retract", "e": e, "a": a, "v": v, **interval(self.rnd)}

    def _transact(self, ops: list[dict], branch: str = "main") -> bool:
        ops = [op for op in ops if op is not None]
        if not ops:
            return False
        try:
            self.led.transact(ops, reason=f"step {self.rnd.random():.3f}", branch=branch)
        except SchemaError:
            return False
        if branch == "main":
            for op in ops:
                if op.get("op", "add") == "add":
                    self.asserted.append((op["e"], op["a"], op["v"]))
        return True

    def step(self) -> None:
        rnd = self.rnd
        kind = rnd.choices(
            ["tx", "retract", "correct", "restore", "branch", "checkpoint"],
            [6, 3, 2, 1, 1, 1],
        )[0]
        head = self.led.head().id
        if kind == "tx":
            self._transact([self._add() for _ in range(rnd.randrange(1, 5))])
        elif kind == "retract":
            self._transact([self._retract(), self._retract() if rnd.random() < 0.3 else None])
        elif kind == "correct":
            e, a = rnd.choice(ENTITIES), rnd.choice(["p/name", "p/age", "p/tags"])
            lo = rnd.randrange(0, 6)
            op = {
                "e": e,
                "a": a,
                "v": value_for(a, rnd.randrange(8)),
                "valid_from": T0 + lo * DAY,
                "valid_to": T0 + (lo + rnd.randrange(1, 4)) * DAY,
            }
            self._transact([op])
        elif kind == "restore":
            with contextlib.suppress(NotFound, SchemaError, BadInput):
                self.led.restore(rnd.choice(ENTITIES), rnd.randrange(1, head + 1))
        elif kind == "branch":
            self.branch_no += 1
            name = f"b{self.branch_no}"
            try:
                self.led.create_branch(name, at=rnd.randrange(1, head + 1))
            except BadInput:  # forked at a tx of a dropped branch
                return
            for _ in range(rnd.randrange(1, 3)):
                self._transact([self._add()], branch=name)
            end = rnd.random()
            if end < 0.4:
                with contextlib.suppress(Conflict, SchemaError, BadInput):
                    self.led.merge_branch(name)
            elif end < 0.7:
                self.led.drop_branch(name)
        else:
            self.led.checkpoint()


def new_ledger(path: Path, signer: Signer) -> Ledger:
    led = Ledger.open(path, signer=signer)
    led.register_identity("operator", signer.public_key, "operator")
    led.declare(PSCHEMA)
    return led


def views(led: Ledger) -> dict:
    """Everything a reader can see, along both time axes, on every branch."""
    head = led.head().id
    out: dict = {"log": list(led.log()), "identities": led.identities()}
    out["schema"] = {k: v.to_json() for k, v in led.schema.items()}
    out["branches"] = [b.__dict__ for b in led.branches()]
    for t in sorted({1, 2, head // 2, head - 1, head} - {0}):
        for x in INSTANTS:
            view = led.view(as_of=t, valid_at=x)
            for e in ENTITIES:
                out[(t, x, e)] = view.get(e)
    for b in led.branches():
        if b.state != "dropped":
            bv = led.view(branch=b.name, valid_at=FAR)
            for e in ENTITIES:
                out[(b.name, e)] = bv.get(e)
    now = led.view(valid_at=FAR)
    for e in ENTITIES:
        out[("history", e)] = now.history(e)
        out[("refs", e)] = now.refs(e)
    for a in ATTRS:
        out[("find", a)] = now.find(a)
    return out


def replay_and_compare(src: Ledger, dst: Ledger, tmp: Path) -> None:
    buf = io.StringIO()
    count = src.export(buf)
    text = buf.getvalue()
    path = tmp / f"export-{uuid.uuid4().hex[:6]}.jsonl"
    path.write_text(text)
    assert dst.import_file(path) == count == src.head().id
    assert dst.store.tx_hashes() == src.store.tx_hashes()
    assert dst.merkle_log().root() == src.merkle_log().root()
    assert dst.store.checkpoints() == src.store.checkpoints()
    a, b = src.verify(), dst.verify()
    assert a.ok and b.ok and a.root == b.root, (a, b)
    again = io.StringIO()
    dst.export(again)
    assert again.getvalue() == text, "re-exporting the replayed ledger gives other bytes"
    assert views(dst) == views(src)


@SETTINGS
@given(rnd=st.randoms(use_true_random=False), steps=st.integers(3, 20))
def test_replaying_the_export_reproduces_hashes_root_and_views(rnd, steps):
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "a").mkdir()
        (tmp / "b").mkdir()
        src = new_ledger(tmp / "a" / "keel.db", Signer.generate("operator"))
        drv = Driver(src, rnd)
        for _ in range(steps):
            drv.step()
        dst = Ledger.open(tmp / "b" / "keel.db")
        try:
            replay_and_compare(src, dst, tmp)
        finally:
            src.close()
            dst.close()


@pytest.fixture
def fresh_pg():
    """DSNs of extra empty PostgreSQL schemas, dropped afterwards."""
    made = []

    def make() -> str:
        require_pg()
        schema = f"keel_t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        made.append(schema)
        sep = "&" if "?" in PG_BASE else "?"
        return f"{PG_BASE}{sep}options=-csearch_path%3D{schema}"

    yield make
    if made:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            for schema in made:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_replay_on_each_store_and_across_stores(ledger, store_kind, tmp_path, fresh_pg):
    """One larger random history replayed into the same kind of store and into the other."""
    ledger.declare(PSCHEMA)
    drv = Driver(ledger, random.Random(7))
    for _ in range(60):
        drv.step()
    same = fresh_pg() if store_kind == "postgres" else str(tmp_path / "same" / "keel.db")
    other = str(tmp_path / "other" / "keel.db") if store_kind == "postgres" else fresh_pg()
    for target in (same, other):
        if not target.startswith("postgresql"):
            Path(target).parent.mkdir()
        with Ledger.open(target) as dst:
            replay_and_compare(ledger, dst, tmp_path)


# ---------------------------------------------------------------------------------------
# (b) as-of views never change
# ---------------------------------------------------------------------------------------


def as_of_snapshot(led: Ledger, t: int) -> dict:
    out: dict = {}
    digest = bytes(led.store.tx_rows(t, t)[0][1]).hex()
    plain, by_hash = led.view(as_of=t), led.view(as_of=digest)
    assert by_hash.as_of == t
    for e in ENTITIES:
        out[("get", e)] = plain.get(e)
        out[("hash", e)] = by_hash.get(e)
        out[("history", e)] = plain.history(e)
        out[("refs", e)] = plain.refs(e)
        for a in ("p/name", "p/tags"):
            out[("timeline", e, a)] = plain.timeline(e, a)
        for x in INSTANTS:
            out[("at", x, e)] = led.view(as_of=t, valid_at=x).get(e)
    for a in ATTRS:
        out[("find", a)] = plain.find(a)
    out["log"] = [entry for entry in led.log() if entry["tx"] <= t]
    return out


@SETTINGS
@given(rnd=st.randoms(use_true_random=False), before=st.integers(2, 15), after=st.integers(1, 15))
def test_an_as_of_view_never_changes_afterwards(rnd, before, after):
    with tempfile.TemporaryDirectory() as d:
        led = new_ledger(Path(d) / "keel.db", Signer.generate("operator"))
        try:
            drv = Driver(led, rnd)
            for _ in range(before):
                drv.step()
            head = led.head().id
            points = sorted({2, head, rnd.randrange(1, head + 1), rnd.randrange(1, head + 1)})
            snaps = {t: as_of_snapshot(led, t) for t in points}
            for _ in range(after):
                drv.step()
            for t in points:
                assert as_of_snapshot(led, t) == snaps[t], f"the view as of tx {t} changed"
        finally:
            led.close()


def test_as_of_view_survives_cardinality_widening(ledger):
    """The schema may widen an attribute from one to many; views from before must not change.

    An as-of view folds with the schema as of its transaction, so what it showed as one
    value stays one value.
    """
    ledger.declare([{"attribute": "p/nick", "type": "string"}])
    t = ledger.transact([{"e": "e1", "a": "p/nick", "v": "bo"}]).tx
    before = ledger.view(as_of=t).get("e1")
    assert before == {"p/nick": "bo"}
    ledger.declare([{"attribute": "p/nick", "type": "string", "cardinality": "many"}])
    ledger.transact([{"e": "e1", "a": "p/nick", "v": "bobby"}])
    assert ledger.view(as_of=t).get("e1") == before
    assert sorted(ledger.view().get("e1")["p/nick"]) == ["bo", "bobby"]


# ---------------------------------------------------------------------------------------
# (c) Merkle proofs
# ---------------------------------------------------------------------------------------


def ref_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, written straight from the definition."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:])).digest()


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 2.1.3.1."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], whole: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 9162 2.1.4.1."""
    n = len(leaves)
    if m == n:
        return [] if whole else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], whole), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


# The Certificate Transparency reference test vectors (RFC 6962 / 9162 Merkle trees).
CT_LEAVES = [
    bytes.fromhex(x)
    for x in (
        *("", "00", "10", "2021", "3031", "40414243", "5051525354555657"),
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (1, 8): CT_INCLUSION[(0, 8)],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}


def log_of(leaves: list[bytes]) -> mk.MerkleLog:
    log = mk.MerkleLog()
    for leaf in leaves:
        log.append(leaf)
    return log


def test_merkle_matches_published_ct_vectors():
    log = log_of(CT_LEAVES)
    assert log.root(0) == mk.EMPTY_ROOT == ref_mth([])
    for n, root in enumerate(CT_ROOTS, start=1):
        assert log.root(n).hex() == root
        assert ref_mth(CT_LEAVES[:n]).hex() == root
    for (i, n), path in CT_INCLUSION.items():
        assert [p.hex() for p in log.inclusion_proof(i, n)] == path
    for (m, n), path in CT_CONSISTENCY.items():
        assert [p.hex() for p in log.consistency_proof(m, n)] == path


def test_merkle_proofs_verify_for_every_size_leaf_and_old_size():
    rnd = random.Random(9162)
    n_max = 70
    leaves = [rnd.randbytes(rnd.randrange(0, 40)) for _ in range(n_max)]
    log = log_of(leaves)
    roots = [ref_mth(leaves[:n]) for n in range(n_max + 1)]
    for n in range(1, n_max + 1):
        assert log.root(n) == roots[n]
        assert mk.root_of(leaves[:n]) == roots[n]
        for i in range(n):
            proof = log.inclusion_proof(i, n)
            assert proof == ref_path(i, leaves[:n]), (i, n)
            assert mk.verify_inclusion(leaves[i], i, n, proof, roots[n]), (i, n)
        for m in range(1, n + 1):
            proof = log.consistency_proof(m, n)
            assert proof == ref_subproof(m, leaves[:n], True), (m, n)
            assert mk.verify_consistency(m, n, roots[m], roots[n], proof), (m, n)


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


LEAVES = st.lists(st.binary(min_size=0, max_size=12), min_size=1, max_size=40, unique=True)


@settings(max_examples=300, deadline=None)
@given(leaves=LEAVES, data=st.data())
def test_altered_inclusion_proofs_fail(leaves, data):
    n = len(leaves)
    log = log_of(leaves)
    i = data.draw(st.integers(0, n - 1), label="index")
    proof = log.inclusion_proof(i, n)
    root = log.root(n)
    assert mk.verify_inclusion(leaves[i], i, n, proof, root)
    what = data.draw(
        st.sampled_from(["proof", "leaf", "index", "size", "root", "drop", "extra"]), label="what"
    )
    leaf, idx, size, path, rt = leaves[i], i, n, list(proof), root
    if what == "proof":
        if not proof:
            return
        j = data.draw(st.integers(0, len(proof) - 1))
        path[j] = _flip(path[j], data.draw(st.integers(0, 255)))
    elif what == "leaf":
        leaf = data.draw(st.binary(max_size=12).filter(lambda b: b != leaves[i]))
    elif what == "index":
        idx = data.draw(st.integers(0, n + 3).filter(lambda x: x != i))
    elif what == "size":
        # A size is only meaningful with its root: a signed tree head pairs them. The
        # proof must not verify against any other (size, root) of the same log.
        size = data.draw(st.integers(max(1, i), n + 5).filter(lambda x: x != n))
        rt = ref_mth([*leaves, *(b"pad%d" % k for k in range(5))][:size])
    elif what == "root":
        rt = _flip(root, data.draw(st.integers(0, 255)))
    elif what == "drop":
        if not proof:
            return
        del path[data.draw(st.integers(0, len(path) - 1))]
    else:
        path.insert(data.draw(st.integers(0, len(path))), hashlib.sha256(b"x").digest())
    assert not mk.verify_inclusion(leaf, idx, size, path, rt), what


@settings(max_examples=300, deadline=None)
@given(leaves=LEAVES, data=st.data())
def test_altered_consistency_proofs_fail(leaves, data):
    n = len(leaves)
    log = log_of(leaves)
    m = data.draw(st.integers(1, n), label="old size")
    proof = log.consistency_proof(m, n)
    roots = [log.root(k) for k in range(n + 1)]
    assert mk.verify_consistency(m, n, roots[m], roots[n], proof)
    what = data.draw(
        st.sampled_from(["proof", "old", "new", "old_root", "new_root", "drop", "extra"]),
        label="what",
    )
    old, new, old_root, new_root, path = m, n, roots[m], roots[n], list(proof)
    if what == "proof":
        if not proof:
            return
        j = data.draw(st.integers(0, len(proof) - 1))
        path[j] = _flip(path[j], data.draw(st.integers(0, 255)))
    elif what == "old":
        old = data.draw(st.integers(1, n).filter(lambda x: x != m))
        old_root = roots[old]
    elif what == "new":
        new = data.draw(st.integers(m, n + 5).filter(lambda x: x != n))
        new_root = ref_mth([*leaves, *(b"pad%d" % k for k in range(5))][:new])
    elif what == "old_root":
        old_root = _flip(old_root, data.draw(st.integers(0, 255)))
    elif what == "new_root":
        if m == n:
            return  # the same tree: both roots are one value
        new_root = _flip(new_root, data.draw(st.integers(0, 255)))
    elif what == "drop":
        if not proof:
            return
        del path[data.draw(st.integers(0, len(path) - 1))]
    else:
        path.insert(data.draw(st.integers(0, len(path))), hashlib.sha256(b"x").digest())
    assert not mk.verify_consistency(old, new, old_root, new_root, path), what


def test_ledger_proofs_verify_for_every_transaction(ledger):
    ledger.declare([{"attribute": "p/n", "type": "int"}])
    for i in range(20):
        ledger.transact([{"e": f"x{i % 3}", "a": "p/n", "v": i}])
    hashes = ledger.store.tx_hashes()
    n = len(hashes)
    report = ledger.verify()
    assert report.root == ref_mth(hashes).hex()
    for tx in range(1, n + 1):
        p = ledger.inclusion_proof(tx)
        assert p["leaf"] == hashes[tx - 1].hex() and p["tree_size"] == n
        path = [bytes.fromhex(h) for h in p["path"]]
        assert mk.verify_inclusion(hashes[tx - 1], tx - 1, n, path, bytes.fromhex(p["root"]))
    for old in range(1, n + 1):
        for new in range(old, n + 1):
            c = ledger.consistency_proof(old, new)
            assert c["old_root"] == ref_mth(hashes[:old]).hex()
            assert c["new_root"] == ref_mth(hashes[:new]).hex()
            path = [bytes.fromhex(h) for h in c["path"]]
            assert mk.verify_consistency(
                old, new, bytes.fromhex(c["old_root"]), bytes.fromhex(c["new_root"]), path
            )


# ---------------------------------------------------------------------------------------
# (d) fold semantics against a brute-force model
# ---------------------------------------------------------------------------------------

FOLD_SCHEMA = [
    {"attribute": "f/one", "type": "string"},
    {"attribute": "f/many", "type": "string", "cardinality": "many"},
]
GRID = [SINCE_ALWAYS, *(T0 + k * DAY for k in range(7)), FOREVER]

op_st = st.tuples(
    st.sampled_from(["f/one", "f/many"]),
    st.sampled_from(["add", "add", "retract"]),
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, len(GRID) - 2),
    st.integers(1, len(GRID) - 1),
)
txs_st = st.lists(st.lists(op_st, min_size=1, max_size=4), min_size=1, max_size=14)


def model_value(datoms: list[tuple], attr: str, t: int) -> Any:
    """What `attr` of the entity is at valid instant t, by brute force.

    `datoms` are (attr, op, value, vf, vt) in commit order (tx, then position in tx).
    """
    covering = [d for d in datoms if d[0] == attr and d[3] <= t < d[4]]
    if attr == "f/one":
        asserts = [k for k, d in enumerate(covering) if d[1] == "add"]
        if not asserts:
            return None
        newest = asserts[-1]
        value = covering[newest][2]
        later = covering[newest + 1 :]
        if any(d[1] == "retract" and d[2] == value for d in later):
            return None
        return value
    out = set()
    for value in {d[2] for d in covering}:
        mine = [d for d in covering if d[2] == value]
        if mine[-1][1] == "add":
            out.add(value)
    return out or None


def model_refuses(committed: list[tuple], ops: list[tuple]) -> bool:
    """Whether the ledger must refuse this transaction (as the schema rules say)."""
    for k, (a, op, v, vf, vt) in enumerate(ops):
        earlier = ops[:k]
        if op == "retract":
            ever = any(d[0] == a and d[1] == "add" and d[2] == v for d in committed)
            same_tx = any(o[0] == a and o[1] == "add" and o[2] == v for o in earlier)
            if not ever and not same_tx:
                return True
        elif a == "f/one":
            for o in earlier:
                if o[0] == a and o[1] == "add" and o[2] != v and o[3] < vt and vf < o[4]:
                    return True
    return False


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(txs=txs_st, probes=st.lists(st.integers(0, 2 * len(GRID)), min_size=4, max_size=10))
def test_fold_matches_a_brute_force_model(txs, probes):
    with tempfile.TemporaryDirectory() as d:
        signer = Signer.generate("operator")
        led = Ledger.open(Path(d) / "keel.db", signer=signer)
        try:
            led.register_identity("operator", signer.public_key, "operator")
            led.declare(FOLD_SCHEMA)
            committed: list[tuple] = []
            history: list[tuple[int, int]] = []  # (tx, number of datoms committed by then)
            for tx in txs:
                ops = [(a, op, v, GRID[lo], GRID[max(hi, lo + 1)]) for a, op, v, lo, hi in tx]
                doc = [
                    {"op": op, "e": "x", "a": a, "v": v, "valid_from": vf, "valid_to": vt}
                    for a, op, v, vf, vt in ops
                ]
                refused = model_refuses(committed, ops)
                try:
                    result = led.transact(doc)
                except SchemaError:
                    assert refused, f"the ledger refused {ops} after {committed}"
                    continue
                assert not refused, f"the ledger took {ops} after {committed}"
                committed.extend(ops)
                history.append((result.tx, len(committed)))
            # probe grid points and the instants just inside/outside them
            instants = []
            for p in probes:
                base = GRID[min(p // 2, len(GRID) - 1)]
                instants.append(base if p % 2 == 0 or base == FOREVER else base + 1)
                if base > SINCE_ALWAYS:
                    instants.append(base - 1)
            for tx, upto in history:
                for t in instants:
                    view = led.view(as_of=tx, valid_at=t)
                    for a in ("f/one", "f/many"):
                        want = model_value(committed[:upto], a, t)
                        got = view.value("x", a)
                        if a == "f/many" and got is not None:
                            assert len(got) == len(set(got))
                            got = set(got)
                        assert got == want, (a, t, tx, committed[:upto])
        finally:
            led.close()
