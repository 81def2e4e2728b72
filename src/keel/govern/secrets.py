"""Secrets: values keel keeps for the jobs that need them, and never shows anyone.

A secret's value is encrypted at rest (Fernet: AES-128-CBC with an HMAC-SHA256, from
`cryptography`) in `keys/_secrets.box`, under a key of its own in `keys/_secrets.key`,
both readable by the operator only. The value never enters the ledger: the ledger records
the secret's name, its version, which identities it is granted to, and each use.

A command job asks for a secret as an environment variable, `VAR = "${secret:NAME}"`;
the value reaches that child process's environment only, and only when the job's owner
is granted the secret. Everything keel stores or shows passes a `Redactor` that replaces
every secret value — raw, base64 and URL-encoded — with `[redacted:NAME]`: a placeholder
that is refused wherever it could be taken back as the value.

(Names begin with `_` so they can never be an identity's key file: identity names begin
with a letter or digit.)
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets as _random
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet, InvalidToken

from ..errors import BadInput, NotFound
from ..ledger import Ledger
from .home import stat_key

KEY_FILE = "_secrets.key"
BOX_FILE = "_secrets.box"
#: A secret's name: what jobs and grants refer to (not itself secret).
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
#: How a job's environment asks for a secret: `${secret:NAME}`.
REFERENCE = re.compile(r"\$\{secret:([^}]*)\}")
#: What a redacted value reads as.
MARKER = re.compile(r"\[redacted:[A-Za-z0-9_.-]*\]")
#: A shorter value could not be told apart from ordinary text when redacting.
MIN_LENGTH = 6
MAX_LENGTH = 65536
#: A form shorter than this is too likely to be ordinary text to be redacted on its own.
_MIN_FORM = 6

_S = "keel.secret/"
_U = "keel.secret-use/"
SCHEMA = [
    {"attribute": f"{_S}name", "type": "string", "doc": "a secret's name (never its value)"},
    {"attribute": f"{_S}version", "type": "int", "doc": "how many times it was set"},
    {"attribute": f"{_S}state", "type": "string", "doc": "set or removed"},
    {
        "attribute": f"{_S}grant",
        "type": "string",
        "cardinality": "many",
        "doc": "an identity a job of which may be given the secret",
    },
    {"attribute": f"{_U}secret", "type": "string", "doc": "the secret a run asked for"},
    {"attribute": f"{_U}identity", "type": "string", "doc": "the job's owner"},
    {"attribute": f"{_U}job", "type": "string", "doc": "the job"},
    {"attribute": f"{_U}run", "type": "string", "doc": "the run"},
    {"attribute": f"{_U}outcome", "type": "string", "doc": "given or refused"},
    {"attribute": f"{_U}reason", "type": "string", "doc": "why it was refused"},
]


def entity(name: str) -> str:
    return f"secret:{name}"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise BadInput(
            f"{name!r} is not a secret name (a letter, then letters, digits, _ . -; at most 64)"
        )
    return name


def check_value(value: str) -> str:
    """A value keel can keep and redact; never a placeholder taken back as a value."""
    if len(value) < MIN_LENGTH:
        raise BadInput(
            f"a secret must be at least {MIN_LENGTH} characters: a shorter one could not be "
            "told apart from ordinary text when keel redacts it"
        )
    if len(value) > MAX_LENGTH:
        raise BadInput(f"a secret may be at most {MAX_LENGTH} characters")
    if REFERENCE.search(value) or MARKER.search(value):
        raise BadInput(
            "that value is a placeholder (${secret:…} or [redacted:…]), not a secret's value"
        )
    if "\x00" in value:
        raise BadInput("a secret cannot contain a NUL character")
    return value


def references(env: Mapping[str, str]) -> set[str]:
    """The names of the secrets an environment asks for."""
    return {m.group(1) for v in env.values() for m in REFERENCE.finditer(v)}


def expand(env: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    """The environment with each `${secret:NAME}` replaced by its value."""
    return {k: REFERENCE.sub(lambda m: values[m.group(1)], v) for k, v in env.items()}


# -- redaction --------------------------------------------------------------------------
def forms(value: str) -> list[str]:
    """The ways a value shows up in text: as itself, URL-encoded, and base64 — in each of
    the three alignments a value can take inside a longer encoded stream (the characters
    that depend only on the value's own bytes)."""
    raw = value.encode()
    out = {value, quote(value, safe=""), quote_plus(value), quote(value)}
    for shift in range(3):
        # Character i of the encoding carries bits 6i..6i+6 of the stream; keep those
        # that fall wholly inside the value's bytes.
        start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            out.add(encode(b"\0" * shift + raw).decode()[start:end])
    return sorted((f for f in out if len(f) >= _MIN_FORM), key=len, reverse=True)


class Redactor:
    """Replaces every form of every secret value with `[redacted:NAME]`, in text, bytes and
    anything JSON-shaped that holds them."""

    def __init__(self, values: Mapping[str, str]):
        self._name: dict[str, str] = {}
        for name, value in sorted(values.items()):
            for form in forms(value):
                self._name.setdefault(form, name)
        ordered = sorted(self._name, key=len, reverse=True)
        self._text = re.compile("|".join(re.escape(f) for f in ordered))
        self._bytes = re.compile(b"|".join(re.escape(f.encode()) for f in ordered))

    def text(self, s: str) -> str:
        return self._text.sub(lambda m: f"[redacted:{self._name[m.group(0)]}]", s)

    def data(self, b: bytes) -> bytes:
        return self._bytes.sub(
            lambda m: f"[redacted:{self._name[m.group(0).decode()]}]".encode(), b
        )

    def __call__(self, value: object) -> object:
        """`value` with every secret redacted (the same object when there was none)."""
        if isinstance(value, str):
            return self.text(value) if self._text.search(value) else value
        if isinstance(value, bytes | bytearray):
            return self.data(bytes(value)) if self._bytes.search(value) else value
        if isinstance(value, list | tuple):
            items = [self(v) for v in value]
            same = all(a is b for a, b in zip(items, value, strict=True))
            return value if same else type(value)(items)
        if isinstance(value, dict):
            pairs = [(self(k), self(v)) for k, v in value.items()]
            if all(a is k and b is v for (a, b), (k, v) in zip(pairs, value.items(), strict=True)):
                return value
            return dict(pairs)
        return value

    def found(self, value: object) -> bool:
        return self(value) is not value


class RedactingStream:
    """A text stream (a daemon's stdout or stderr: its log) that redacts what it writes."""

    def __init__(self, inner: TextIO, redact: Callable[[object], object]):
        self.inner, self._redact = inner, redact

    def write(self, text: str) -> int:
        self.inner.write(str(self._redact(text)))
        return len(text)

    def __getattr__(self, name: str) -> object:  # flush, fileno, isatty, encoding, ...
        return getattr(self.inner, name)


# -- the box ---------------------------------------------------------------------------
class SecretBox:
    """The encrypted values, one file; the redactor over them, cached by the file's stat."""

    def __init__(self, keys: Path):
        self.key_path = keys / KEY_FILE
        self.path = keys / BOX_FILE
        self._lock = threading.Lock()
        self._cached: tuple[tuple, Redactor | None] | None = None

    def names(self) -> list[str]:
        return sorted(self._tokens())

    def value(self, name: str) -> str:
        token = self._tokens().get(name)
        if token is None:
            raise NotFound(f"there is no secret named {name!r} ('keel secret set {name}')")
        try:
            return self._fernet().decrypt(token.encode()).decode()
        except InvalidToken:
            raise BadInput(
                f"secret {name!r} cannot be decrypted: {self.key_path} is not the key it "
                "was stored with"
            ) from None

    def values(self) -> dict[str, str]:
        return {name: self.value(name) for name in self.names()}

    def put(self, name: str, value: str) -> None:
        with self._exclusive():
            tokens = self._tokens()
            tokens[name] = self._fernet(create=True).encrypt(value.encode()).decode()
            self._write(tokens)

    def drop(self, name: str) -> bool:
        with self._exclusive():
            tokens = self._tokens()
            if tokens.pop(name, None) is None:
                return False
            self._write(tokens)
            return True

    def redactor(self) -> Redactor | None:
        """What redacts every value now held, or None when there are none."""
        stat = self._stat()
        with self._lock:
            if self._cached is not None and self._cached[0] == stat:
                return self._cached[1]
        values = self.values() if stat else {}
        redactor = Redactor(values) if values else None
        with self._lock:
            self._cached = (stat, redactor)
        return redactor

    # -- files ----------------------------------------------------------------------------
    def _tokens(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            raise BadInput(f"{self.path} is damaged (not the JSON keel writes)") from None
        return {str(k): str(v) for k, v in data.get("secrets", {}).items()}

    def _write(self, tokens: dict[str, str]) -> None:
        """Replace the file atomically, readable by the operator only."""
        tmp = self.path.with_name(f"{BOX_FILE}.{_random.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"format": 1, "secrets": tokens}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _fernet(self, create: bool = False) -> Fernet:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise NotFound("no secret was ever set in this home") from None
            key = Fernet.generate_key()
            fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(key)
        return Fernet(key.strip())

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One writer at a time across processes (the CLI and the daemon may both set)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(f"{BOX_FILE}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _stat(self) -> tuple:
        return stat_key(self.path) or ()


# -- the ledger's record ------------------------------------------------------------------
def record(ledger: Ledger, name: str) -> dict:
    return ledger.view().get(entity(name)) or {}


def is_set(ledger: Ledger, name: str) -> bool:
    return record(ledger, name).get(f"{_S}state") == "set"


def grants(ledger: Ledger, name: str) -> list[str]:
    return sorted(record(ledger, name).get(f"{_S}grant") or [])


def set_ops(ledger: Ledger, name: str) -> list[dict]:
    """A new version of `name` (its value is in the box, never here)."""
    e = entity(name)
    version = int(record(ledger, name).get(f"{_S}version") or 0) + 1
    return [
        {"op": "add", "e": e, "a": f"{_S}name", "v": name},
        {"op": "add", "e": e, "a": f"{_S}version", "v": version},
        {"op": "add", "e": e, "a": f"{_S}state", "v": "set"},
    ]


def remove_ops(ledger: Ledger, name: str) -> list[dict]:
    e = entity(name)
    ops = [{"op": "add", "e": e, "a": f"{_S}state", "v": "removed"}]
    ops += [{"op": "retract", "e": e, "a": f"{_S}grant", "v": g} for g in grants(ledger, name)]
    return ops


def grant_ops(name: str, identity: str, granted: bool = True) -> list[dict]:
    return [
        {"op": "add" if granted else "retract", "e": entity(name), "a": f"{_S}grant", "v": identity}
    ]


def use_ops(name: str, identity: str, job: str, run: str, refused: str = "") -> list[dict]:
    e = f"secret-use:{_random.token_hex(8)}"
    ops = [
        {"op": "add", "e": e, "a": f"{_U}secret", "v": name},
        {"op": "add", "e": e, "a": f"{_U}identity", "v": identity},
        {"op": "add", "e": e, "a": f"{_U}job", "v": job},
        {"op": "add", "e": e, "a": f"{_U}run", "v": run},
        {"op": "add", "e": e, "a": f"{_U}outcome", "v": "refused" if refused else "given"},
    ]
    if refused:
        ops.append({"op": "add", "e": e, "a": f"{_U}reason", "v": refused})
    return ops


def may_use(ledger: Ledger, name: str, identity: str, operator: str) -> str:
    """Why `identity` may not be given `name` now, or "" when it may: the secret must be
    set, and granted to it (the operator, who sets secrets, holds them all)."""
    if not is_set(ledger, name):
        return f"there is no secret named {name!r}"
    if identity != operator and identity not in grants(ledger, name):
        return f"secret {name!r} is not granted to {identity!r}"
    return ""
