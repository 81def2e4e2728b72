"""The Merkle log (keel.ledger.merkle) against RFC 9162, section 2.1.

Three sources of truth:
- the published Certificate Transparency test vectors (the 8 leaves used by Go's
  transparency-dev/merkle and google/certificate-transparency: roots for sizes 1..8,
  inclusion and consistency proofs);
- a reference implementation of MTH, PATH and PROOF written recursively from the RFC's
  definitions (sections 2.1.1, 2.1.3.1, 2.1.4.1), and of the two verification algorithms
  (sections 2.1.3.2, 2.1.4.2), below, compared with keel for every size 1..70, every leaf
  index and every old size;
- negative cases: any altered proof, wrong index, wrong size or wrong root must fail.
"""

from __future__ import annotations

import hashlib

import pytest

from keel.ledger import merkle

# -- published test vectors --------------------------------------------------------------

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
# CT_ROOTS[n - 1] is the root of the tree of the first n leaves.
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
# (leaf index, tree size, audit path); the published vectors number leaves from 1.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, consistency proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
EMPTY_TREE = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


# -- a reference implementation, written from RFC 9162 section 2.1 ---------------------


def HASH(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def largest_power_of_two_below(n: int) -> int:
    """k: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def MTH(D: list[bytes]) -> bytes:
    """2.1.1: MTH({}) = HASH(); MTH({d0}) = HASH(0x00 || d0);
    MTH(D[n]) = HASH(0x01 || MTH(D[0:k]) || MTH(D[k:n]))."""
    n = len(D)
    if n == 0:
        return HASH(b"")
    if n == 1:
        return HASH(b"\x00" + D[0])
    k = largest_power_of_two_below(n)
    return HASH(b"\x01" + MTH(D[:k]) + MTH(D[k:]))


def PATH(m: int, D: list[bytes]) -> list[bytes]:
    """2.1.3.1: PATH(0, {d0}) = {}; PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) for m < k,
    PATH(m - k, D[k:n]) : MTH(D[0:k]) for m >= k."""
    n = len(D)
    if n == 1 and m == 0:
        return []
    k = largest_power_of_two_below(n)
    if m < k:
        return [*PATH(m, D[:k]), MTH(D[k:])]
    return [*PATH(m - k, D[k:]), MTH(D[:k])]


def SUBPROOF(m: int, D: list[bytes], b: bool) -> list[bytes]:
    """2.1.4.1: SUBPROOF(m, D[m], true) = {}; SUBPROOF(m, D[m], false) = {MTH(D[m])};
    for m < n: SUBPROOF(m, D[0:k], b) : MTH(D[k:n]) if m <= k,
    else SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])."""
    n = len(D)
    if m == n:
        return [] if b else [MTH(D)]
    k = largest_power_of_two_below(n)
    if m <= k:
        return [*SUBPROOF(m, D[:k], b), MTH(D[k:])]
    return [*SUBPROOF(m - k, D[k:], False), MTH(D[:k])]


def PROOF(m: int, D: list[bytes]) -> list[bytes]:
    """2.1.4.1: PROOF(m, D[n]) = SUBPROOF(m, D[n], true)."""
    return SUBPROOF(m, D, True)


def verify_inclusion_ref(
    leaf: bytes, leaf_index: int, tree_size: int, inclusion_path: list[bytes], root: bytes
) -> bool:
    """2.1.3.2, step by step. Indices are unsigned in the RFC."""
    if leaf_index < 0 or leaf_index >= tree_size:  # 1
        return False
    fn, sn = leaf_index, tree_size - 1  # 2
    r = HASH(b"\x00" + leaf)  # 3
    for p in inclusion_path:  # 4
        if sn == 0:  # 4a
            return False
        if fn & 1 or fn == sn:  # 4b
            r = HASH(b"\x01" + p + r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = HASH(b"\x01" + r + p)
        fn >>= 1  # 4c
        sn >>= 1
    return sn == 0 and r == root  # 5


def verify_consistency_ref(
    first: int, second: int, first_hash: bytes, second_hash: bytes, path: list[bytes]
) -> bool:
    """2.1.4.2, step by step; equal sizes need an empty proof and equal roots (2.1.4.1)."""
    if first == second and first > 0:
        return not path and first_hash == second_hash
    if not 0 < first < second:
        return False
    if not path:  # 1
        return False
    if first & (first - 1) == 0:  # 2
        path = [first_hash, *path]
    fn, sn = first - 1, second - 1  # 3
    while fn & 1:  # 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # 5
    for c in path[1:]:  # 6
        if sn == 0:  # 6a
            return False
        if fn & 1 or fn == sn:  # 6b
            fr = HASH(b"\x01" + c + fr)
            sr = HASH(b"\x01" + c + sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = HASH(b"\x01" + sr + c)
        fn >>= 1  # 6c
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0  # 7


# -- helpers --------------------------------------------------------------------------------

N = 70
# Leaves of varied length, the empty one included.
DATA = [b""] + [hashlib.sha256(bytes([i])).digest()[: i % 40] + bytes([i]) for i in range(1, N)]


def log_of(leaves: list[bytes]) -> merkle.MerkleLog:
    log = merkle.MerkleLog()
    for d in leaves:
        log.append(d)
    return log


BIG = log_of(DATA)
REF_ROOTS = [MTH(DATA[:n]) for n in range(N + 1)]


def flipped(proof: list[bytes], i: int, bit: int = 3) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ (1 << bit)]) + out[i][1:]
    return out


def inclusion_both(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """keel's verdict, checked to agree with the reference's."""
    ours = merkle.verify_inclusion(leaf, index, size, proof, root)
    ref = verify_inclusion_ref(leaf, index, size, proof, root)
    assert ours == ref, (index, size, len(proof))
    return ours


def consistency_both(m: int, n: int, r1: bytes, r2: bytes, proof: list[bytes]) -> bool:
    ours = merkle.verify_consistency(m, n, r1, r2, proof)
    ref = verify_consistency_ref(m, n, r1, r2, proof)
    assert ours == ref, (m, n, len(proof))
    return ours


# -- the published vectors ------------------------------------------------------------------


def test_hash_prefixes():
    assert merkle.leaf_hash(b"") == HASH(b"\x00") == CT_ROOTS[0]
    left, right = HASH(b"l"), HASH(b"r")
    assert merkle.node_hash(left, right) == HASH(b"\x01" + left + right)
    assert merkle.EMPTY_ROOT == EMPTY_TREE == MTH([])
    assert merkle.MerkleLog().root() == EMPTY_TREE
    assert merkle.root_of([]) == EMPTY_TREE


@pytest.mark.parametrize("n", range(1, 9))
def test_ct_roots(n):
    assert MTH(CT_LEAVES[:n]) == CT_ROOTS[n - 1]
    assert merkle.root_of(CT_LEAVES[:n]) == CT_ROOTS[n - 1]
    assert log_of(CT_LEAVES).root(n) == CT_ROOTS[n - 1]
    assert log_of(CT_LEAVES[:n]).root() == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size", "path"), CT_INCLUSION)
def test_ct_inclusion_proofs(index, size, path):
    expected = [bytes.fromhex(h) for h in path]
    assert PATH(index, CT_LEAVES[:size]) == expected
    log = log_of(CT_LEAVES)
    assert log.inclusion_proof(index, size) == expected
    assert log_of(CT_LEAVES[:size]).inclusion_proof(index) == expected
    root = CT_ROOTS[size - 1]
    assert inclusion_both(CT_LEAVES[index], index, size, expected, root)
    assert not inclusion_both(b"WrongLeaf", index, size, expected, root)
    assert not inclusion_both(CT_LEAVES[index], index, size, expected, EMPTY_TREE)
    assert not inclusion_both(CT_LEAVES[index], index, size, expected, SOME_HASH)
    assert not inclusion_both(CT_LEAVES[index], index, size * 2, expected, root)
    assert not inclusion_both(CT_LEAVES[index], index + 1, size, expected, root)


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_consistency_proofs(old, new, proof):
    expected = [bytes.fromhex(h) for h in proof]
    assert (PROOF(old, CT_LEAVES[:new]) if old != new else []) == expected
    log = log_of(CT_LEAVES)
    assert log.consistency_proof(old, new) == expected
    assert log_of(CT_LEAVES[:new]).consistency_proof(old) == expected
    r1, r2 = CT_ROOTS[old - 1], CT_ROOTS[new - 1]
    assert consistency_both(old, new, r1, r2, expected)
    if old != new:
        assert not consistency_both(old, new, r2, r1, expected)
        assert not consistency_both(old, new, r1, r2, [])
        assert not consistency_both(old, new, r1, SOME_HASH, expected)


# -- keel against the reference, every size 1..70 -------------------------------------------


@pytest.mark.parametrize("n", range(1, N + 1))
def test_roots_and_proofs_match_reference(n):
    leaves = DATA[:n]
    exact = log_of(leaves)
    assert exact.size == n
    assert exact.root() == BIG.root(n) == merkle.root_of(leaves) == REF_ROOTS[n] == MTH(leaves)
    for i in range(n):
        expected = PATH(i, leaves)
        assert exact.inclusion_proof(i) == expected
        assert BIG.inclusion_proof(i, n) == expected
        assert inclusion_both(leaves[i], i, n, expected, REF_ROOTS[n])
    for m in range(1, n + 1):
        expected = PROOF(m, leaves) if m != n else []
        assert exact.consistency_proof(m) == expected
        assert BIG.consistency_proof(m, n) == expected
        assert consistency_both(m, n, REF_ROOTS[m], REF_ROOTS[n], expected)


def test_growing_log_keeps_old_roots():
    log = merkle.MerkleLog()
    for n, d in enumerate(DATA, start=1):
        log.append(d)
        assert log.size == n
        assert log.root() == REF_ROOTS[n]
        assert all(log.root(m) == REF_ROOTS[m] for m in range(0, n + 1, 7))


def test_out_of_range_requests_are_refused():
    log = log_of(DATA[:5])
    for bad in (
        lambda: log.root(6),
        lambda: log.root(-1),
        lambda: log.inclusion_proof(5),
        lambda: log.inclusion_proof(-1),
        lambda: log.inclusion_proof(0, 6),
        lambda: log.inclusion_proof(3, 3),
        lambda: log.consistency_proof(0, 5),
        lambda: log.consistency_proof(4, 3),
        lambda: log.consistency_proof(2, 6),
    ):
        with pytest.raises(ValueError):
            bad()


# -- negative cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", range(1, N + 1))
def test_inclusion_fails_when_anything_is_wrong(n):
    root = REF_ROOTS[n]
    for i in range(n):
        leaf, proof = DATA[i], PATH(i, DATA[:n])
        # altered proof: each element with a bit flipped, one removed, one added
        for k in range(len(proof)):
            assert not inclusion_both(leaf, i, n, flipped(proof, k), root)
            assert not inclusion_both(leaf, i, n, proof[:k] + proof[k + 1 :], root)
        for extra in (b"", root, SOME_HASH):
            assert not inclusion_both(leaf, i, n, [*proof, extra], root)
            assert not inclusion_both(leaf, i, n, [extra, *proof], root)
        if len(proof) > 1:
            assert not inclusion_both(leaf, i, n, [proof[0], SOME_HASH, *proof[1:]], root)
            assert not inclusion_both(leaf, i, n, proof[::-1], root)
        # wrong leaf
        assert not inclusion_both(leaf + b"x", i, n, proof, root)
        if n > 1:
            assert not inclusion_both(DATA[(i + 1) % n], i, n, proof, root)
        # wrong index: every other index of this tree, and indices beyond it
        for j in [*range(n), n, n + 1, 2 * n]:
            if j != i:
                assert not inclusion_both(leaf, j, n, proof, root)
        # wrong size: every other size of the log, with that size's true root, and the
        # published probes (twice, half the size) with this root. (A size is only
        # meaningful with its own root -- a signed checkpoint binds the two -- so an
        # arbitrary size with this tree's root is not a wrong-size probe: RFC 9162's
        # algorithm rightly accepts e.g. index 0 of size 5 claimed as size 8 with root 5.)
        for size in range(i + 1, N + 1):
            if size != n:
                assert not inclusion_both(leaf, i, size, proof, REF_ROOTS[size])
        for size in (2 * n, n // 2):
            if size != n:
                assert not inclusion_both(leaf, i, size, proof, root)
        # wrong root
        for other in (EMPTY_TREE, SOME_HASH, b"", REF_ROOTS[n - 1], REF_ROOTS[min(n + 1, N)]):
            if other != root:
                assert not inclusion_both(leaf, i, n, proof, other)


@pytest.mark.parametrize("n", range(1, N + 1))
def test_consistency_fails_when_anything_is_wrong(n):
    leaves = DATA[:n]
    r2 = REF_ROOTS[n]
    # equal sizes: only an empty proof with equal roots verifies
    assert not consistency_both(n, n, r2, r2, [r2])
    assert not consistency_both(n, n, r2, SOME_HASH, [])
    for m in range(1, n):
        r1, proof = REF_ROOTS[m], PROOF(m, leaves)
        assert consistency_both(m, n, r1, r2, proof)
        # altered proof
        for k in range(len(proof)):
            assert not consistency_both(m, n, r1, r2, flipped(proof, k, 4))
            assert not consistency_both(m, n, r1, r2, proof[:k] + proof[k + 1 :])
        for extra in (b"", r1, r2, proof[0]):
            assert not consistency_both(m, n, r1, r2, [*proof, extra])
            assert not consistency_both(m, n, r1, r2, [extra, *proof])
        assert not consistency_both(m, n, r1, r2, [])
        if len(proof) > 1:
            assert not consistency_both(m, n, r1, r2, proof[::-1])
        # wrong old size: every other size with its true root, and the published probes
        # (size - 1, size + 1, size ^ 2) with this root
        for m2 in range(0, n + 1):
            if m2 != m:
                assert not consistency_both(m2, n, REF_ROOTS[m2], r2, proof)
        for m2 in (m - 1, m + 1, m ^ 2, m + n):
            if m2 != m:
                assert not consistency_both(m2, n, r1, r2, proof)
        # wrong new size: every other size with its true root, and the published probes
        # (twice, half the size) with this root
        for n2 in range(m, N + 1):
            if n2 != n:
                assert not consistency_both(m, n2, r1, REF_ROOTS[n2], proof)
        assert not consistency_both(m, 2 * n, r1, r2, proof)
        assert not consistency_both(m, n // 2, r1, r2, proof)
        # wrong roots
        assert not consistency_both(m, n, r2, r1, proof)
        for other in (EMPTY_TREE, SOME_HASH, b""):
            assert not consistency_both(m, n, other, r2, proof)
            assert not consistency_both(m, n, r1, other, proof)
        assert not consistency_both(m, n, REF_ROOTS[m - 1], r2, proof)
        assert not consistency_both(m, n, r1, REF_ROOTS[n - 1], proof)


def test_negative_index_fails():
    for n in (1, 5, 8):
        leaf, proof = DATA[n - 1], PATH(n - 1, DATA[:n])
        assert not merkle.verify_inclusion(leaf, -1, n, proof, REF_ROOTS[n])
