"""The governance file on disk and its signature in the ledger, and the verdict keel acts on.

`canon/governance.toml` is text the operator edits (git-friendly). It takes effect only
once signed: `sign` records, in one transaction signed by an operator, the file's text,
its SHA-256 and an Ed25519 signature over that digest — so every accepted version stays in
the ledger's history, attributable and tamper-evident. `judge` compares the file on disk
with the newest accepted version: a missing file, one that does not parse, one changed
since it was signed, or a signature that does not verify under a registered operator key
is a *problem*, and a problem makes keel read-only (fail closed, never open) until the
operator signs the file or reverts it.

`Governance` caches a good verdict by the file's stat (size, mtime, inode), so the door
pays a `stat()` per call; a bad verdict is judged afresh each time, so a signature made by
another process is seen at once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..ledger import BadInput, Signer, View
from ..ledger.ledger import identity_entity
from ..ledger.signing import verify_signature
from .home import stat_key, write_private
from .policy import Policy

#: Where the file lives, under the home.
FILE = Path("canon") / "governance.toml"
#: The ledger entity whose history is every accepted version.
ENTITY = "governance:file"
_A = "keel.governance/"
SCHEMA = [
    {"attribute": f"{_A}text", "type": "string", "doc": "an accepted governance file"},
    {"attribute": f"{_A}digest", "type": "string", "doc": "its SHA-256, hex"},
    {"attribute": f"{_A}signature", "type": "bytes", "doc": "Ed25519 over the digest"},
    {"attribute": f"{_A}key", "type": "bytes", "doc": "the public key that signed it"},
    {"attribute": f"{_A}signer", "type": "string", "doc": "the identity that signed it"},
]
#: What a signature covers: this prefix, then the digest (so it signs nothing else).
DOMAIN = b"keel governance file v1\n"

DEFAULT = """\
# keel governance: who may do what. Edit this file, then run `keel governance sign`:
# until an edit is signed (or reverted) keel is read-only. The format is described in
# docs/governance.md. Tiers: T0 operator, T1 trusted writer, T2 read-only, T3 public only.
format = 1
# How long a request for approval waits for an answer before it expires into a denial.
approval_expiry = "7d"

# Identities registered in the ledger that this file does not name get these rules:
# clients (MCP agents, scripts) read memory and recall and write the memory surfaces
# other than canon, and nothing else.
[defaults]
tier = "T1"
pins = ["memory-client"]

[identities.{operator}]
tier = "T0"

[pins.memory-client]
capabilities = ["memory.read", "memory.write", "recall.query", "approval.own.read"]
surfaces = ["working", "entity", "observation", "source", "article", "decision",
            "episode", "capture", "daybook"]

# Calls that wait for someone else's approval before they run (the requester can never
# approve or cancel its own). An approval nobody answers expires into a denial.
[[approvals]]
capability = "cadence.command"
why = "a command runs on this machine"

[[approvals]]
capability = "schema.write"
why = "a schema change affects every reader"

[[approvals]]
capability = "ledger.forget"
why = "forgetting cannot be undone"
"""


def default_text(operator: str) -> str:
    return DEFAULT.replace("{operator}", operator)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sign_ops(text: str, signer: Signer) -> list[dict]:
    """The facts that make `text` the accepted governance file, signed by `signer`."""
    d = digest(text.encode())
    return [
        {"op": "add", "e": ENTITY, "a": f"{_A}text", "v": text},
        {"op": "add", "e": ENTITY, "a": f"{_A}digest", "v": d},
        {"op": "add", "e": ENTITY, "a": f"{_A}signature", "v": signer.sign(DOMAIN + d.encode())},
        {"op": "add", "e": ENTITY, "a": f"{_A}key", "v": signer.public_key},
        {"op": "add", "e": ENTITY, "a": f"{_A}signer", "v": signer.name},
    ]


@dataclass(frozen=True)
class Verdict:
    """What the file says (when it may be acted on) or why it may not be."""

    policy: Policy | None
    problem: str | None
    digest: str | None = None
    signer: str | None = None


def accepted(view: View) -> dict | None:
    """The newest accepted version: text, digest, signature, key and signer."""
    found = view.get(ENTITY)
    if not found or f"{_A}digest" not in found:
        return None
    return {k.removeprefix(_A): v for k, v in found.items()}


def judge(data: bytes | None, view: View, operator: str) -> Verdict:
    """The verdict on governance file bytes `data` (None: there is no file) against the
    ledger as `view` sees it."""
    if view.as_of == 0:
        return Verdict(None, None)  # an empty ledger (a home about to be restored into)
    if data is None:
        return Verdict(
            None,
            f"{FILE} is missing ('keel governance restore' writes back the signed version)",
        )
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return Verdict(None, f"{FILE} is not UTF-8 text")
    try:
        policy = Policy.parse(text, operator)
    except BadInput as exc:
        return Verdict(None, str(exc))
    signed = accepted(view)
    d = digest(data)
    if signed is None:
        return Verdict(None, f"{FILE} was never signed (run 'keel governance sign')", d)
    if signed["digest"] != d:
        return Verdict(
            None,
            f"{FILE} changed since it was signed (sign it with 'keel governance sign', or "
            "revert it: 'keel governance diff' shows what changed)",
            d,
        )
    key, who = bytes(signed["key"]), signed["signer"]
    if not verify_signature(key, bytes(signed["signature"]), DOMAIN + d.encode()):
        return Verdict(None, f"the signature on {FILE} does not verify", d)
    registered = view.get(identity_entity(who)) or {}
    if key not in registered.get("keel.identity/key", ()) or (
        registered.get("keel.identity/role") != "operator"
    ):
        return Verdict(None, f"{FILE} was signed by {who!r}, not by a registered operator", d)
    return Verdict(policy, None, d, who)


class Governance:
    """The home's governance verdict, cached by the file's stat while it is good."""

    def __init__(self, home_path: Path, operator: Callable[[], str]):
        self.path = home_path / FILE
        self._operator = operator
        self._lock = threading.Lock()
        self._good: tuple[tuple, Verdict] | None = None

    def verdict(self, view: Callable[[], View]) -> Verdict:
        stat = self._stat()
        with self._lock:
            if self._good is not None and self._good[0] == stat:
                return self._good[1]
        data = self.read()
        verdict = judge(data, view(), self._operator())
        with self._lock:
            self._good = (stat, verdict) if verdict.problem is None and stat else None
        return verdict

    def forget(self) -> None:
        """Judge afresh next time (after this process signed a new version)."""
        with self._lock:
            self._good = None

    def write_default(self, operator: str) -> str | None:
        """Write the default file if there is none; returns the default's text when that is
        what the file holds (None: the file says something else)."""
        text = default_text(operator)
        if not self.path.exists():
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            write_private(self.path, text)
        return text if self.read() == text.encode() else None

    def restore(self, view: View) -> bool:
        """Write back the newest signed version if the file is missing (after a restore
        into a new home, or a deletion); returns whether it did. The text is what an
        operator signed, so this grants nothing new."""
        signed = accepted(view)
        if signed is None or self.path.exists():
            return False
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        write_private(self.path, signed["text"])
        self.forget()
        return True

    def read(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _stat(self) -> tuple:
        return stat_key(self.path) or ()
